//! Sparsity penalties on a coding layer's activations `a` (`B x H`), fused with the
//! layer's activation backward.
//!
//! Every penalty follows Keras' activity-regularizer semantics: the penalty's value is
//! divided by the batch size `B` (see the design notes), so for a weight `w`:
//! - KL: `P = (w / B) * sum_j [p ln(p / q_j) + (1 - p) ln((1 - p) / (1 - q_j))]` with
//!   `q_j = mean_i a_ij` clipped to `[KL_CLIP_EPS, 1 - KL_CLIP_EPS]`, and
//!   `dP/da_ij = (w / B^2) * (-p / q_j + (1 - p) / (1 - q_j))`. Where `q_j` was clipped
//!   the penalty is constant in it, so that column's gradient is zero.
//! - L1: `P = (w / B) * sum_ij |a_ij|` and `dP/da_ij = (w / B) * sign(a_ij)`.
//! - L2: `P = (w / B) * sum_ij a_ij^2` and `dP/da_ij = (2 w / B) * a_ij`.
//! - Squared mean target: `P = (w / B) * sum_j (q_j - p)^2` with `q_j = mean_i a_ij` (not
//!   clipped), and `dP/da_ij = (w / B) * 2 (q_j - p) / B = (2 w / B^2) * (q_j - p)`.
//!
//! The backward kernels turn `da` (the gradient arriving from the decoder) into
//! `dz = (da + dP/da) * act'(z)` in the same pass.
//!
//! [`relu_l1_codes_row`] is the same step for a ReLU + L1 sparse autoencoder, whose
//! penalty weights each latent by its decoder row's norm (see `SAE.md`), fused with the
//! batch's per-latent sums and firing counts.

use crate::activation::{monomorphise, Activation};
use crate::isa::dispatch;
use crate::layout::Layout;
use crate::reduce::column_sums;
use pulp::{Simd, WithSimd};

/// Keras' `epsilon()`: the mean activation is clipped to `[eps, 1 - eps]` before the logs.
pub const KL_CLIP_EPS: f32 = 1e-7;

/// The per-column step of a penalty of the column means: from a column sum, the column's
/// term of the penalty and its gradient `dP/da_ij` (the same for every row `i`).
///
/// Implemented by structs of constants splatted once, with methods rather than closures:
/// closures are compiled without the dispatched instruction set, so the intrinsics inside
/// them would become calls.
trait ColumnStep<S: Simd> {
    fn column(&self, simd: S, sum: S::f32s) -> (S::f32s, S::f32s);
}

/// Constants of the per-column KL step.
struct KlColumn<S: Simd> {
    inv_batch: S::f32s,
    p: S::f32s,
    one_minus_p: S::f32s,
    ln_p: S::f32s,
    ln_one_minus_p: S::f32s,
    low: S::f32s,
    high: S::f32s,
    one: S::f32s,
    grad_scale: S::f32s,
}

impl<S: Simd> KlColumn<S> {
    #[inline(always)]
    fn new(simd: S, batch: f32, target: f32, weight: f32) -> Self {
        Self {
            inv_batch: simd.splat_f32s(1.0 / batch),
            p: simd.splat_f32s(target),
            one_minus_p: simd.splat_f32s(1.0 - target),
            ln_p: simd.splat_f32s(target.ln()),
            ln_one_minus_p: simd.splat_f32s((1.0 - target).ln()),
            low: simd.splat_f32s(KL_CLIP_EPS),
            high: simd.splat_f32s(1.0 - KL_CLIP_EPS),
            one: simd.splat_f32s(1.0),
            grad_scale: simd.splat_f32s(weight / (batch * batch)),
        }
    }
}

impl<S: Simd> ColumnStep<S> for KlColumn<S> {
    /// The divergence term, and the gradient `(q - p) / (q (1 - q)) = -p/q + (1-p)/(1-q)`,
    /// zero where `q` was clipped.
    #[inline(always)]
    fn column(&self, simd: S, sum: S::f32s) -> (S::f32s, S::f32s) {
        let q = simd.mul_f32s(sum, self.inv_batch);
        let qc = simd.min_f32s(simd.max_f32s(q, self.low), self.high);
        // 1 - qc cannot reach eps in f32 (1 - (1 - 1e-7) is 1.19e-7): clip 1 - q itself.
        let one_minus_q = simd.sub_f32s(self.one, q);
        let one_minus_qc = simd.min_f32s(simd.max_f32s(one_minus_q, self.low), self.high);
        let term = simd.add_f32s(
            simd.mul_f32s(
                self.p,
                simd.sub_f32s(self.ln_p, crate::math::ln_simd(simd, qc)),
            ),
            simd.mul_f32s(
                self.one_minus_p,
                simd.sub_f32s(
                    self.ln_one_minus_p,
                    crate::math::ln_simd(simd, one_minus_qc),
                ),
            ),
        );
        let g = simd.div_f32s(
            simd.mul_f32s(simd.sub_f32s(q, self.p), self.grad_scale),
            simd.mul_f32s(q, one_minus_q),
        );
        let inside = simd.equal_f32s(q, qc);
        (term, simd.select_f32s(inside, g, simd.splat_f32s(0.0)))
    }
}

/// Constants of the per-column squared mean-target step.
struct SquaredColumn<S: Simd> {
    inv_batch: S::f32s,
    p: S::f32s,
    grad_scale: S::f32s,
}

impl<S: Simd> SquaredColumn<S> {
    #[inline(always)]
    fn new(simd: S, batch: f32, target: f32, weight: f32) -> Self {
        Self {
            inv_batch: simd.splat_f32s(1.0 / batch),
            p: simd.splat_f32s(target),
            grad_scale: simd.splat_f32s(2.0 * weight / (batch * batch)),
        }
    }
}

impl<S: Simd> ColumnStep<S> for SquaredColumn<S> {
    /// The term `(q - p)^2`, and the gradient `(2 w / B^2) (q - p)`.
    #[inline(always)]
    fn column(&self, simd: S, sum: S::f32s) -> (S::f32s, S::f32s) {
        let q = simd.mul_f32s(sum, self.inv_batch);
        let diff = simd.sub_f32s(q, self.p);
        (
            simd.mul_f32s(diff, diff),
            simd.mul_f32s(diff, self.grad_scale),
        )
    }
}

/// The penalties of the column means `q_j`.
#[derive(Clone, Copy)]
enum MeanPenalty {
    Kl,
    Squared,
}

impl MeanPenalty {
    /// Sums the columns of `output` into `scratch` and returns the penalty; given `grad`
    /// (and the layer's activation), leaves the per-column gradient in `scratch` and turns
    /// `grad` into `dz = (grad + dP/da) * act'(z)`.
    #[track_caller]
    fn run(
        self,
        layout: Layout,
        output: &[f32],
        grad: Option<(Activation, &mut [f32])>,
        target: f32,
        weight: f32,
        scratch: &mut [f32],
    ) -> f64 {
        let grad_slice = grad.as_ref().map(|(_, grad)| &**grad);
        self.check(layout, output, grad_slice, target, scratch);
        if layout.is_empty() {
            return 0.0;
        }
        column_sums(layout, output, 1.0, 0.0, scratch);
        let value = dispatch(MeanColumns {
            penalty: self,
            scratch,
            rows: layout.rows,
            target,
            weight,
            with_grad: grad.is_some(),
        });
        if let Some((act, grad)) = grad {
            dispatch(AddColumnGradient {
                act,
                layout,
                output,
                grad,
                column_grad: scratch,
            });
        }
        value
    }

    /// Panics, naming the kernel, unless `output`, `scratch` and `grad` fit `layout` and
    /// the target suits the penalty.
    #[track_caller]
    fn check(
        self,
        layout: Layout,
        output: &[f32],
        grad: Option<&[f32]>,
        target: f32,
        scratch: &[f32],
    ) {
        let (name, output_name, grad_name) = match self {
            Self::Kl => ("kl sparsity", "kl sparsity: output", "kl sparsity: grad"),
            Self::Squared => (
                "squared sparsity",
                "squared sparsity: output",
                "squared sparsity: grad",
            ),
        };
        layout.check(output.len(), output_name);
        assert_eq!(scratch.len(), layout.cols, "{name}: scratch length != cols");
        match self {
            Self::Kl => assert!(
                target > 0.0 && target < 1.0,
                "{name}: target {target} outside (0, 1)"
            ),
            Self::Squared => assert!(target.is_finite(), "{name}: target {target} is not finite"),
        }
        if let Some(grad) = grad {
            layout.check(grad.len(), grad_name);
        }
    }
}

/// Turns column sums (in `scratch`) into the penalty's per-column gradient, returning the
/// penalty.
struct MeanColumns<'a> {
    penalty: MeanPenalty,
    scratch: &'a mut [f32],
    rows: usize,
    target: f32,
    weight: f32,
    with_grad: bool,
}

impl WithSimd for MeanColumns<'_> {
    type Output = f64;
    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) -> f64 {
        let Self {
            penalty,
            scratch,
            rows,
            target,
            weight,
            with_grad,
        } = self;
        let batch = rows as f32;
        let total = match penalty {
            MeanPenalty::Kl => {
                let kl = KlColumn::new(simd, batch, target, weight);
                column_terms(simd, &kl, scratch, with_grad)
            }
            MeanPenalty::Squared => {
                let squared = SquaredColumn::new(simd, batch, target, weight);
                column_terms(simd, &squared, scratch, with_grad)
            }
        };
        f64::from(weight) / f64::from(batch) * f64::from(simd.reduce_sum_f32s(total))
    }
}

/// Runs `step` on every column sum in `scratch`, replacing each by its gradient if
/// `with_grad`; returns the terms summed lane by lane.
#[inline(always)]
fn column_terms<S: Simd>(
    simd: S,
    step: &impl ColumnStep<S>,
    scratch: &mut [f32],
    with_grad: bool,
) -> S::f32s {
    let (head, tail) = S::as_mut_simd_f32s(scratch);
    let mut total = simd.splat_f32s(0.0);
    for v in head {
        let (term, g) = step.column(simd, *v);
        total = simd.add_f32s(total, term);
        if with_grad {
            *v = g;
        }
    }
    if !tail.is_empty() {
        let (term, g) = step.column(simd, simd.partial_load_f32s(tail));
        // Lanes past the tail were loaded as zeros, which still make a term (the divergence
        // from a mean of 0, or `p^2`) that must not count.
        let live = simd.partial_load_f32s(&[1.0f32; 64][..tail.len()]);
        total = simd.add_f32s(total, simd.mul_f32s(term, live));
        if with_grad {
            simd.partial_store_f32s(tail, g);
        }
    }
    total
}

struct AddColumnGradient<'a> {
    act: Activation,
    layout: Layout,
    output: &'a [f32],
    grad: &'a mut [f32],
    column_grad: &'a [f32],
}

impl WithSimd for AddColumnGradient<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let Self {
            act,
            layout,
            output,
            grad,
            column_grad,
        } = self;
        monomorphise!(act, |act| {
            let (c_head, c_tail) = S::as_simd_f32s(column_grad);
            for i in 0..layout.rows {
                let range = layout.row(i);
                let (a_head, a_tail) = S::as_simd_f32s(&output[range.clone()]);
                let (g_head, g_tail) = S::as_mut_simd_f32s(&mut grad[range]);
                for ((g, &a), &c) in g_head.iter_mut().zip(a_head).zip(c_head) {
                    let d = act.derivative_from_output_simd(simd, a);
                    *g = simd.mul_f32s(simd.add_f32s(*g, c), d);
                }
                if !g_tail.is_empty() {
                    let a = simd.partial_load_f32s(a_tail);
                    let g = simd.partial_load_f32s(g_tail);
                    let c = simd.partial_load_f32s(c_tail);
                    let d = act.derivative_from_output_simd(simd, a);
                    simd.partial_store_f32s(g_tail, simd.mul_f32s(simd.add_f32s(g, c), d));
                }
            }
        })
    }
}

/// The KL sparsity penalty of a batch of coding activations `output` (no gradient).
///
/// `scratch` (length `layout.cols`) receives the column sums. Returns 0 for an empty batch.
///
/// # Panics
/// On a shape mismatch, or a target outside `(0, 1)`.
pub fn kl_sparsity_penalty(
    layout: Layout,
    output: &[f32],
    target: f32,
    weight: f32,
    scratch: &mut [f32],
) -> f64 {
    MeanPenalty::Kl.run(layout, output, None, target, weight, scratch)
}

/// The fused KL step: computes the penalty, and turns `grad` from `dL/da` into
/// `dz = (dL/da + dP/da) * act'(z)` using the layer output `output = act(z)`.
///
/// `scratch` (length `layout.cols`) ends holding the per-column penalty gradient.
/// Returns the penalty value (already scaled by `weight / B`).
///
/// # Panics
/// On a shape mismatch, or a target outside `(0, 1)`.
pub fn kl_sparsity_backward(
    act: Activation,
    layout: Layout,
    output: &[f32],
    grad: &mut [f32],
    target: f32,
    weight: f32,
    scratch: &mut [f32],
) -> f64 {
    MeanPenalty::Kl.run(layout, output, Some((act, grad)), target, weight, scratch)
}

/// The squared mean-target penalty `(weight / B) * sum_j (q_j - target)^2` of a batch of
/// coding activations `output`, `q_j` the mean of column `j` (no gradient).
///
/// `scratch` (length `layout.cols`) receives the column sums. Returns 0 for an empty batch.
///
/// # Panics
/// On a shape mismatch, or a target that is not finite.
pub fn squared_sparsity_penalty(
    layout: Layout,
    output: &[f32],
    target: f32,
    weight: f32,
    scratch: &mut [f32],
) -> f64 {
    MeanPenalty::Squared.run(layout, output, None, target, weight, scratch)
}

/// The fused squared mean-target step: computes the penalty, and turns `grad` from
/// `dL/da` into `dz = (dL/da + (2 weight / B^2) (q_j - target)) * act'(z)` using the
/// layer output `output = act(z)`.
///
/// `scratch` (length `layout.cols`) ends holding the per-column penalty gradient.
/// Returns the penalty value (already scaled by `weight / B`).
///
/// # Panics
/// On a shape mismatch, or a target that is not finite.
pub fn squared_sparsity_backward(
    act: Activation,
    layout: Layout,
    output: &[f32],
    grad: &mut [f32],
    target: f32,
    weight: f32,
    scratch: &mut [f32],
) -> f64 {
    MeanPenalty::Squared.run(layout, output, Some((act, grad)), target, weight, scratch)
}

/// The per-element step of an element-wise penalty, on one register of activations `a`;
/// implemented by structs of constants splatted once, for the reason given at
/// [`ColumnStep`].
trait ElementStep<S: Simd> {
    /// The terms of `a`, to start a row's sum.
    fn terms(&self, simd: S, a: S::f32s) -> S::f32s;
    /// `sum` plus the terms of `a`.
    fn add_terms(&self, simd: S, sum: S::f32s, a: S::f32s) -> S::f32s;
    /// `da + dP/da`.
    fn add_gradient(&self, simd: S, da: S::f32s, a: S::f32s) -> S::f32s;
}

/// The L1 step: terms `|a|`, gradient `scale * sign(a)` (zero at zero).
struct L1Element<S: Simd> {
    zero: S::f32s,
    plus: S::f32s,
    minus: S::f32s,
}

impl<S: Simd> ElementStep<S> for L1Element<S> {
    #[inline(always)]
    fn terms(&self, simd: S, a: S::f32s) -> S::f32s {
        simd.abs_f32s(a)
    }

    #[inline(always)]
    fn add_terms(&self, simd: S, sum: S::f32s, a: S::f32s) -> S::f32s {
        simd.add_f32s(sum, simd.abs_f32s(a))
    }

    #[inline(always)]
    fn add_gradient(&self, simd: S, da: S::f32s, a: S::f32s) -> S::f32s {
        let s = simd.select_f32s(simd.greater_than_f32s(a, self.zero), self.plus, self.zero);
        let sign_scaled = simd.select_f32s(simd.less_than_f32s(a, self.zero), self.minus, s);
        simd.add_f32s(da, sign_scaled)
    }
}

/// The L2 step: terms `a^2` (fused into the sum), gradient `2 scale a` (fused into the
/// addition).
struct L2Element<S: Simd> {
    grad_scale: S::f32s,
}

impl<S: Simd> ElementStep<S> for L2Element<S> {
    #[inline(always)]
    fn terms(&self, simd: S, a: S::f32s) -> S::f32s {
        simd.mul_f32s(a, a)
    }

    #[inline(always)]
    fn add_terms(&self, simd: S, sum: S::f32s, a: S::f32s) -> S::f32s {
        simd.mul_add_f32s(a, a, sum)
    }

    #[inline(always)]
    fn add_gradient(&self, simd: S, da: S::f32s, a: S::f32s) -> S::f32s {
        simd.mul_add_f32s(self.grad_scale, a, da)
    }
}

/// The element-wise penalties.
#[derive(Clone, Copy)]
enum ElementPenalty {
    L1,
    L2,
}

impl ElementPenalty {
    /// Returns the penalty of `output`; given `grad` (and the layer's activation), turns
    /// `grad` into `dz = (grad + dP/da) * act'(z)`.
    #[track_caller]
    fn run(
        self,
        layout: Layout,
        output: &[f32],
        grad: Option<(Activation, &mut [f32])>,
        weight: f32,
    ) -> f64 {
        let (output_name, grad_name) = match self {
            Self::L1 => ("l1 sparsity: output", "l1 sparsity: grad"),
            Self::L2 => ("l2 sparsity: output", "l2 sparsity: grad"),
        };
        layout.check(output.len(), output_name);
        if let Some((_, grad)) = &grad {
            layout.check(grad.len(), grad_name);
        }
        if layout.is_empty() {
            return 0.0;
        }
        let (act, grad) = match grad {
            Some((act, grad)) => (act, Some(grad)),
            None => (Activation::Linear, None),
        };
        dispatch(ElementWise {
            penalty: self,
            act,
            layout,
            output,
            grad,
            scale: weight / layout.rows as f32,
        })
    }
}

struct ElementWise<'a> {
    penalty: ElementPenalty,
    act: Activation,
    layout: Layout,
    output: &'a [f32],
    grad: Option<&'a mut [f32]>,
    scale: f32,
}

impl WithSimd for ElementWise<'_> {
    type Output = f64;
    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) -> f64 {
        let Self {
            penalty,
            act,
            layout,
            output,
            grad,
            scale,
        } = self;
        let total = match penalty {
            ElementPenalty::L1 => {
                let zero = simd.splat_f32s(0.0);
                let plus = simd.splat_f32s(scale);
                let minus = simd.splat_f32s(-scale);
                let l1 = L1Element { zero, plus, minus };
                element_rows(simd, &l1, act, layout, output, grad)
            }
            ElementPenalty::L2 => {
                // `2 w / B`: doubling is exact, so this is `scale`'s rounding alone.
                let grad_scale = simd.splat_f32s(2.0 * scale);
                element_rows(simd, &L2Element { grad_scale }, act, layout, output, grad)
            }
        };
        f64::from(scale) * total
    }
}

/// Sums `step`'s terms over `output`, each row in f32 and the rows in f64; given `grad`,
/// turns it into `dz = (grad + dP/da) * act'(z)`.
#[inline(always)]
fn element_rows<S: Simd>(
    simd: S,
    step: &impl ElementStep<S>,
    act: Activation,
    layout: Layout,
    output: &[f32],
    mut grad: Option<&mut [f32]>,
) -> f64 {
    let mut total = 0.0f64;
    monomorphise!(act, |act| {
        for i in 0..layout.rows {
            let range = layout.row(i);
            let (a_head, a_tail) = S::as_simd_f32s(&output[range.clone()]);
            // Lanes past the tail load as zeros and add nothing.
            let mut acc = step.terms(simd, simd.partial_load_f32s(a_tail));
            for &a in a_head {
                acc = step.add_terms(simd, acc, a);
            }
            total += f64::from(simd.reduce_sum_f32s(acc));
            if let Some(grad) = grad.as_deref_mut() {
                let (g_head, g_tail) = S::as_mut_simd_f32s(&mut grad[range]);
                for (g, &a) in g_head.iter_mut().zip(a_head) {
                    let d = act.derivative_from_output_simd(simd, a);
                    *g = simd.mul_f32s(step.add_gradient(simd, *g, a), d);
                }
                if !g_tail.is_empty() {
                    let a = simd.partial_load_f32s(a_tail);
                    let g = simd.partial_load_f32s(g_tail);
                    let d = act.derivative_from_output_simd(simd, a);
                    let dz = simd.mul_f32s(step.add_gradient(simd, g, a), d);
                    simd.partial_store_f32s(g_tail, dz);
                }
            }
        }
    });
    total
}

/// The L1 activity penalty `(weight / B) * sum |a|` of a batch (no gradient).
///
/// # Panics
/// If `output` is too short for `layout`.
pub fn l1_sparsity_penalty(layout: Layout, output: &[f32], weight: f32) -> f64 {
    ElementPenalty::L1.run(layout, output, None, weight)
}

/// The fused L1 step: returns the penalty and turns `grad` from `dL/da` into
/// `dz = (dL/da + (weight / B) sign(a)) * act'(z)` using `output = act(z)`.
///
/// # Panics
/// If `output` or `grad` is too short for `layout`.
pub fn l1_sparsity_backward(
    act: Activation,
    layout: Layout,
    output: &[f32],
    grad: &mut [f32],
    weight: f32,
) -> f64 {
    ElementPenalty::L1.run(layout, output, Some((act, grad)), weight)
}

/// The L2 activity penalty `(weight / B) * sum a^2` of a batch (no gradient).
///
/// Each row's squares are summed in f32 (then the rows in f64), so an activation past
/// about `1.8e19` in magnitude makes the penalty infinite.
///
/// # Panics
/// If `output` is too short for `layout`.
pub fn l2_sparsity_penalty(layout: Layout, output: &[f32], weight: f32) -> f64 {
    ElementPenalty::L2.run(layout, output, None, weight)
}

/// The fused L2 step: returns the penalty and turns `grad` from `dL/da` into
/// `dz = (dL/da + (2 weight / B) a) * act'(z)` using `output = act(z)`.
///
/// # Panics
/// If `output` or `grad` is too short for `layout`.
pub fn l2_sparsity_backward(
    act: Activation,
    layout: Layout,
    output: &[f32],
    grad: &mut [f32],
    weight: f32,
) -> f64 {
    ElementPenalty::L2.run(layout, output, Some((act, grad)), weight)
}

struct ReluL1CodesRow<'a> {
    codes: &'a [f32],
    grad: &'a mut [f32],
    norms: &'a [f32],
    lambda: f32,
    sums: &'a mut [f32],
    counts: &'a mut [u32],
    bias_grad: &'a mut [f32],
}

impl WithSimd for ReluL1CodesRow<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let Self {
            codes,
            grad,
            norms,
            lambda,
            sums,
            counts,
            bias_grad,
        } = self;
        let (zero, lambda) = (simd.splat_f32s(0.0), simd.splat_f32s(lambda));
        let (one_count, no_count) = (simd.splat_u32s(1), simd.splat_u32s(0));
        let step = |f: S::f32s,
                    g: S::f32s,
                    norm: S::f32s,
                    sum: &mut S::f32s,
                    count: &mut S::u32s,
                    bias: &mut S::f32s| {
            let fired = simd.greater_than_f32s(f, zero);
            *sum = simd.add_f32s(*sum, f);
            *count = simd.add_u32s(*count, simd.select_u32s(fired, one_count, no_count));
            // `g + lambda * norm` rounded twice, as the scalar loop does.
            let g = simd.select_f32s(fired, simd.add_f32s(g, simd.mul_f32s(lambda, norm)), zero);
            *bias = simd.add_f32s(*bias, g);
            g
        };
        let (codes_head, codes_tail) = S::as_simd_f32s(codes);
        let (grad_head, grad_tail) = S::as_mut_simd_f32s(grad);
        let (norms_head, norms_tail) = S::as_simd_f32s(norms);
        let (sums_head, sums_tail) = S::as_mut_simd_f32s(sums);
        let (counts_head, counts_tail) = S::as_mut_simd_u32s(counts);
        let (bias_head, bias_tail) = S::as_mut_simd_f32s(bias_grad);
        for (((f, g), norm), ((sum, count), bias)) in codes_head
            .iter()
            .zip(grad_head.iter_mut())
            .zip(norms_head)
            .zip(
                sums_head
                    .iter_mut()
                    .zip(counts_head.iter_mut())
                    .zip(bias_head.iter_mut()),
            )
        {
            *g = step(*f, *g, *norm, sum, count, bias);
        }
        if !codes_tail.is_empty() {
            let mut sum = simd.partial_load_f32s(sums_tail);
            let mut count = simd.partial_load_u32s(counts_tail);
            let mut bias = simd.partial_load_f32s(bias_tail);
            let g = step(
                simd.partial_load_f32s(codes_tail),
                simd.partial_load_f32s(grad_tail),
                simd.partial_load_f32s(norms_tail),
                &mut sum,
                &mut count,
                &mut bias,
            );
            simd.partial_store_f32s(grad_tail, g);
            simd.partial_store_f32s(sums_tail, sum);
            simd.partial_store_u32s(counts_tail, count);
            simd.partial_store_f32s(bias_tail, bias);
        }
    }
}

/// One row of a ReLU + L1 sparse autoencoder's backward pass over its codes, for a run
/// of latents: `codes` (`f = relu(z + b_enc)`), `grad` (`dout W_dec^T` in, the
/// pre-activations' gradient out), the latents' decoder-row norms and the L1 weight
/// `lambda`. Per latent `j`:
///
/// - `sums[j] += f_j` and `counts[j] += 1` where `f_j > 0` (the batch's activations and
///   firings, a row at a time);
/// - `grad_j <- grad_j + lambda * norms[j]` where `f_j > 0`, else `0` (the ReLU's mask);
/// - `bias_grad[j] += grad_j` (the encoder bias's gradient, after the mask).
///
/// Element-wise in every lane, so every instruction set gives the scalar loop's bits, and
/// a caller that adds the rows in order gets the same sums however it splits the latents.
///
/// # Panics
/// If the slices differ in length.
pub fn relu_l1_codes_row(
    codes: &[f32],
    grad: &mut [f32],
    norms: &[f32],
    lambda: f32,
    sums: &mut [f32],
    counts: &mut [u32],
    bias_grad: &mut [f32],
) {
    let width = codes.len();
    assert!(
        [
            grad.len(),
            norms.len(),
            sums.len(),
            counts.len(),
            bias_grad.len()
        ]
        .iter()
        .all(|&len| len == width),
        "relu_l1_codes_row: slices differ in length"
    );
    dispatch(ReluL1CodesRow {
        codes,
        grad,
        norms,
        lambda,
        sums,
        counts,
        bias_grad,
    });
}

/// Scalar references for this module's kernels, in f64 where it matters.
pub mod reference {
    use super::*;

    /// Reference for [`super::relu_l1_codes_row`].
    pub fn relu_l1_codes_row(
        codes: &[f32],
        grad: &mut [f32],
        norms: &[f32],
        lambda: f32,
        sums: &mut [f32],
        counts: &mut [u32],
        bias_grad: &mut [f32],
    ) {
        for j in 0..codes.len() {
            let f = codes[j];
            sums[j] += f;
            if f > 0.0 {
                counts[j] += 1;
                grad[j] += lambda * norms[j];
            } else {
                grad[j] = 0.0;
            }
            bias_grad[j] += grad[j];
        }
    }
    use crate::activation::reference::derivative_from_output;

    fn column_means(layout: Layout, output: &[f32]) -> Vec<f64> {
        (0..layout.cols)
            .map(|j| {
                (0..layout.rows)
                    .map(|i| f64::from(output[i * layout.row_stride + j]))
                    .sum::<f64>()
                    / layout.rows as f64
            })
            .collect()
    }

    /// Reference for [`super::kl_sparsity_backward`] (allocates; for tests only).
    pub fn kl_sparsity_backward(
        act: Activation,
        layout: Layout,
        output: &[f32],
        grad: &mut [f32],
        target: f32,
        weight: f32,
    ) -> f64 {
        if layout.is_empty() {
            return 0.0;
        }
        let b = layout.rows as f64;
        let (p, w, eps) = (f64::from(target), f64::from(weight), f64::from(KL_CLIP_EPS));
        let mut penalty = 0.0;
        let mut column_grad = Vec::with_capacity(layout.cols);
        for q in column_means(layout, output) {
            let qc = q.clamp(eps, 1.0 - eps);
            penalty += p * (p / qc).ln() + (1.0 - p) * ((1.0 - p) / (1.0 - qc)).ln();
            let g = if q == qc {
                -p / q + (1.0 - p) / (1.0 - q)
            } else {
                0.0
            };
            column_grad.push(w / (b * b) * g);
        }
        add_column_gradient(act, layout, output, grad, &column_grad);
        w / b * penalty
    }

    /// `grad[i, j] = (grad[i, j] + column_grad[j]) * act'(z[i, j])`, in f64.
    fn add_column_gradient(
        act: Activation,
        layout: Layout,
        output: &[f32],
        grad: &mut [f32],
        column_grad: &[f64],
    ) {
        for i in 0..layout.rows {
            for (j, &g) in column_grad.iter().enumerate() {
                let k = i * layout.row_stride + j;
                let d = f64::from(derivative_from_output(act, output[k]));
                grad[k] = ((f64::from(grad[k]) + g) * d) as f32;
            }
        }
    }

    /// Reference for [`super::l1_sparsity_backward`].
    pub fn l1_sparsity_backward(
        act: Activation,
        layout: Layout,
        output: &[f32],
        grad: &mut [f32],
        weight: f32,
    ) -> f64 {
        if layout.is_empty() {
            return 0.0;
        }
        let scale = f64::from(weight) / layout.rows as f64;
        let mut total = 0.0;
        for i in 0..layout.rows {
            for k in layout.row(i) {
                let a = output[k];
                total += f64::from(a.abs());
                let sign = if a > 0.0 {
                    1.0
                } else if a < 0.0 {
                    -1.0
                } else {
                    0.0
                };
                let d = f64::from(derivative_from_output(act, a));
                grad[k] = ((f64::from(grad[k]) + scale * sign) * d) as f32;
            }
        }
        scale * total
    }

    /// Reference for [`super::l2_sparsity_penalty`].
    pub fn l2_sparsity_penalty(layout: Layout, output: &[f32], weight: f32) -> f64 {
        if layout.is_empty() {
            return 0.0;
        }
        let total: f64 = (0..layout.rows)
            .flat_map(|i| layout.row(i))
            .map(|k| f64::from(output[k]) * f64::from(output[k]))
            .sum();
        f64::from(weight) / layout.rows as f64 * total
    }

    /// Reference for [`super::l2_sparsity_backward`].
    pub fn l2_sparsity_backward(
        act: Activation,
        layout: Layout,
        output: &[f32],
        grad: &mut [f32],
        weight: f32,
    ) -> f64 {
        if layout.is_empty() {
            return 0.0;
        }
        let scale = f64::from(weight) / layout.rows as f64;
        for i in 0..layout.rows {
            for k in layout.row(i) {
                let a = f64::from(output[k]);
                let d = f64::from(derivative_from_output(act, output[k]));
                grad[k] = ((f64::from(grad[k]) + 2.0 * scale * a) * d) as f32;
            }
        }
        l2_sparsity_penalty(layout, output, weight)
    }

    /// Reference for [`super::squared_sparsity_penalty`] (allocates; for tests only).
    pub fn squared_sparsity_penalty(
        layout: Layout,
        output: &[f32],
        target: f32,
        weight: f32,
    ) -> f64 {
        if layout.is_empty() {
            return 0.0;
        }
        let p = f64::from(target);
        let total: f64 = column_means(layout, output)
            .into_iter()
            .map(|q| (q - p) * (q - p))
            .sum();
        f64::from(weight) / layout.rows as f64 * total
    }

    /// Reference for [`super::squared_sparsity_backward`] (allocates; for tests only).
    pub fn squared_sparsity_backward(
        act: Activation,
        layout: Layout,
        output: &[f32],
        grad: &mut [f32],
        target: f32,
        weight: f32,
    ) -> f64 {
        if layout.is_empty() {
            return 0.0;
        }
        let b = layout.rows as f64;
        let (p, w) = (f64::from(target), f64::from(weight));
        let column_grad: Vec<f64> = column_means(layout, output)
            .into_iter()
            .map(|q| 2.0 * w / (b * b) * (q - p))
            .collect();
        add_column_gradient(act, layout, output, grad, &column_grad);
        squared_sparsity_penalty(layout, output, target, weight)
    }
}
