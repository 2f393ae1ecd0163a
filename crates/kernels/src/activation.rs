//! Dense-layer epilogues: `a = act(acc + bias)` in one pass, and the backward
//! `dz = da * act'(z)` computed from the stored output `a` alone.
//!
//! Every supported activation's derivative is a function of its output
//! (SELU: `lambda` where `a > 0`, else `a + lambda * alpha`; sigmoid: `a (1 - a)`;
//! ReLU: `1` where `a > 0`; linear: `1`), so a layer keeps only `a` for the backward
//! pass and the pre-activation `z` never needs a buffer.

use crate::isa::dispatch;
use crate::layout::Layout;
use crate::math::{selu_each, sigmoid_each, SELU_LAMBDA, SELU_LAMBDA_ALPHA};
use pulp::{Simd, WithSimd};

/// The element-wise nonlinearity of a dense layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Activation {
    /// Identity.
    Linear,
    /// `max(z, 0)`.
    Relu,
    /// Scaled exponential linear unit (Klambauer et al., 2017).
    Selu,
    /// Logistic sigmoid `1 / (1 + exp(-z))`.
    Sigmoid,
}

impl Activation {
    /// `act(z)` on one register.
    #[inline(always)]
    pub(crate) fn forward_simd<S: Simd>(self, simd: S, z: S::f32s) -> S::f32s {
        self.forward_each(simd, [z])[0]
    }

    /// `act(z)` on `N` registers side by side, so that their exponentials' dependency
    /// chains overlap (see `math::each`); the same bits as [`Self::forward_simd`].
    #[inline(always)]
    pub(crate) fn forward_each<S: Simd, const N: usize>(
        self,
        simd: S,
        z: [S::f32s; N],
    ) -> [S::f32s; N] {
        match self {
            Activation::Linear => z,
            Activation::Relu => {
                let mut a = z;
                for a in &mut a {
                    *a = simd.max_f32s(*a, simd.splat_f32s(0.0));
                }
                a
            }
            Activation::Selu => selu_each(simd, z),
            Activation::Sigmoid => sigmoid_each(simd, z),
        }
    }

    /// `act'(z)` expressed through the output `a = act(z)`, on one register.
    #[inline(always)]
    pub(crate) fn derivative_from_output_simd<S: Simd>(self, simd: S, a: S::f32s) -> S::f32s {
        match self {
            Activation::Linear => simd.splat_f32s(1.0),
            Activation::Relu => simd.select_f32s(
                simd.greater_than_f32s(a, simd.splat_f32s(0.0)),
                simd.splat_f32s(1.0),
                simd.splat_f32s(0.0),
            ),
            Activation::Selu => simd.select_f32s(
                simd.greater_than_f32s(a, simd.splat_f32s(0.0)),
                simd.splat_f32s(SELU_LAMBDA),
                simd.add_f32s(a, simd.splat_f32s(SELU_LAMBDA_ALPHA)),
            ),
            Activation::Sigmoid => simd.mul_f32s(a, simd.sub_f32s(simd.splat_f32s(1.0), a)),
        }
    }
}

/// Calls `body` with the activation as a compile-time constant, so the `match` inside the
/// per-register helpers disappears from the inner loops.
macro_rules! monomorphise {
    ($act:expr, |$a:ident| $body:expr) => {
        match $act {
            Activation::Linear => {
                let $a = Activation::Linear;
                $body
            }
            Activation::Relu => {
                let $a = Activation::Relu;
                $body
            }
            Activation::Selu => {
                let $a = Activation::Selu;
                $body
            }
            Activation::Sigmoid => {
                let $a = Activation::Sigmoid;
                $body
            }
        }
    };
}
pub(crate) use monomorphise;

/// Registers whose activations are computed side by side.
const SIDE_BY_SIDE: usize = 2;

struct BiasActivation<'a> {
    act: Activation,
    layout: Layout,
    data: &'a mut [f32],
    bias: &'a [f32],
}

impl WithSimd for BiasActivation<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let Self {
            act,
            layout,
            data,
            bias,
        } = self;
        monomorphise!(act, |act| {
            let (bias_head, bias_tail) = S::as_simd_f32s(bias);
            for i in 0..layout.rows {
                let row = &mut data[layout.row(i)];
                let (head, tail) = S::as_mut_simd_f32s(row);
                let mut groups = head.chunks_exact_mut(SIDE_BY_SIDE);
                let mut bias_groups = bias_head.chunks_exact(SIDE_BY_SIDE);
                for (group, b) in (&mut groups).zip(&mut bias_groups) {
                    let mut z = [simd.splat_f32s(0.0); SIDE_BY_SIDE];
                    for ((z, &v), &b) in z.iter_mut().zip(&*group).zip(b) {
                        *z = simd.add_f32s(v, b);
                    }
                    group.copy_from_slice(&act.forward_each(simd, z));
                }
                for (v, &b) in groups
                    .into_remainder()
                    .iter_mut()
                    .zip(bias_groups.remainder())
                {
                    *v = act.forward_simd(simd, simd.add_f32s(*v, b));
                }
                if !tail.is_empty() {
                    let z = simd.add_f32s(
                        simd.partial_load_f32s(tail),
                        simd.partial_load_f32s(bias_tail),
                    );
                    simd.partial_store_f32s(tail, act.forward_simd(simd, z));
                }
            }
        })
    }
}

/// In place, for every row: `data[i, j] = act(data[i, j] + bias[j])`.
///
/// # Panics
/// If `bias.len() != layout.cols` or `data` is too short for `layout`.
pub fn bias_activation_forward(act: Activation, layout: Layout, data: &mut [f32], bias: &[f32]) {
    layout.check(data.len(), "bias_activation_forward: data");
    assert_eq!(
        bias.len(),
        layout.cols,
        "bias_activation_forward: bias length != cols"
    );
    if layout.is_empty() {
        return;
    }
    dispatch(BiasActivation {
        act,
        layout,
        data,
        bias,
    });
}

struct Activate<'a> {
    act: Activation,
    data: &'a mut [f32],
}

impl WithSimd for Activate<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        monomorphise!(self.act, |act| {
            let (head, tail) = S::as_mut_simd_f32s(self.data);
            let mut groups = head.chunks_exact_mut(SIDE_BY_SIDE);
            for group in &mut groups {
                let mut z = [simd.splat_f32s(0.0); SIDE_BY_SIDE];
                z.copy_from_slice(group);
                group.copy_from_slice(&act.forward_each(simd, z));
            }
            for v in groups.into_remainder() {
                *v = act.forward_simd(simd, *v);
            }
            if !tail.is_empty() {
                let z = simd.partial_load_f32s(tail);
                simd.partial_store_f32s(tail, act.forward_simd(simd, z));
            }
        })
    }
}

/// In place: `data[i] = act(data[i])`.
pub fn activation_forward(act: Activation, data: &mut [f32]) {
    dispatch(Activate { act, data });
}

struct Backward<'a> {
    act: Activation,
    layout: Layout,
    output: &'a [f32],
    grad: &'a mut [f32],
}

impl WithSimd for Backward<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let Self {
            act,
            layout,
            output,
            grad,
        } = self;
        monomorphise!(act, |act| {
            for i in 0..layout.rows {
                let range = layout.row(i);
                let (a_head, a_tail) = S::as_simd_f32s(&output[range.clone()]);
                let (g_head, g_tail) = S::as_mut_simd_f32s(&mut grad[range]);
                for (g, &a) in g_head.iter_mut().zip(a_head) {
                    *g = simd.mul_f32s(*g, act.derivative_from_output_simd(simd, a));
                }
                if !g_tail.is_empty() {
                    let a = simd.partial_load_f32s(a_tail);
                    let g = simd.partial_load_f32s(g_tail);
                    simd.partial_store_f32s(
                        g_tail,
                        simd.mul_f32s(g, act.derivative_from_output_simd(simd, a)),
                    );
                }
            }
        })
    }
}

/// In place: `grad[i, j] *= act'(z[i, j])`, with the derivative computed from the
/// layer's output `output = act(z)`. Turns `dL/da` into `dL/dz`.
///
/// # Panics
/// If `output` or `grad` is too short for `layout`.
pub fn activation_backward(act: Activation, layout: Layout, output: &[f32], grad: &mut [f32]) {
    layout.check(output.len(), "activation_backward: output");
    layout.check(grad.len(), "activation_backward: grad");
    if layout.is_empty() {
        return;
    }
    dispatch(Backward {
        act,
        layout,
        output,
        grad,
    });
}

/// Scalar references for this module's kernels.
pub mod reference {
    use super::*;
    use crate::math::reference::{selu, sigmoid};

    /// `act(z)` of one value.
    pub fn forward(act: Activation, z: f32) -> f32 {
        match act {
            Activation::Linear => z,
            Activation::Relu => z.max(0.0),
            Activation::Selu => selu(z),
            Activation::Sigmoid => sigmoid(z),
        }
    }

    /// `act'(z)` from `a = act(z)`.
    pub fn derivative_from_output(act: Activation, a: f32) -> f32 {
        match act {
            Activation::Linear => 1.0,
            Activation::Relu => f32::from(a > 0.0),
            Activation::Selu if a > 0.0 => SELU_LAMBDA,
            Activation::Selu => a + SELU_LAMBDA_ALPHA,
            Activation::Sigmoid => a * (1.0 - a),
        }
    }

    /// Reference for [`super::bias_activation_forward`].
    pub fn bias_activation_forward(
        act: Activation,
        layout: Layout,
        data: &mut [f32],
        bias: &[f32],
    ) {
        if layout.is_empty() {
            return;
        }
        for i in 0..layout.rows {
            for (v, &b) in data[layout.row(i)].iter_mut().zip(bias) {
                *v = forward(act, *v + b);
            }
        }
    }

    /// Reference for [`super::activation_backward`].
    pub fn activation_backward(act: Activation, layout: Layout, output: &[f32], grad: &mut [f32]) {
        if layout.is_empty() {
            return;
        }
        for i in 0..layout.rows {
            let range = layout.row(i);
            for (g, &a) in grad[range.clone()].iter_mut().zip(&output[range]) {
                *g *= derivative_from_output(act, a);
            }
        }
    }
}
