//! Optimizer updates with Keras 3 semantics, element-wise over a parameter tensor.
//! The plain SGD step is [`crate::reduce::scaled_add`] or a GEMM with `beta = 1`.

use crate::isa::dispatch;
use pulp::{Simd, WithSimd};

/// Hyper-parameters of one SGD-with-momentum step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MomentumStep {
    /// Learning rate.
    pub lr: f32,
    /// Momentum coefficient.
    pub momentum: f32,
    /// Nesterov's variant.
    pub nesterov: bool,
}

struct Momentum<'a> {
    step: MomentumStep,
    grad: &'a [f32],
    velocity: &'a mut [f32],
    param: &'a mut [f32],
}

#[inline(always)]
fn momentum_lane<S: Simd>(
    simd: S,
    step: MomentumStep,
    g: S::f32s,
    v: &mut S::f32s,
    w: &mut S::f32s,
) {
    let lr = simd.splat_f32s(step.lr);
    let mu = simd.splat_f32s(step.momentum);
    let lr_g = simd.mul_f32s(lr, g);
    *v = simd.sub_f32s(simd.mul_f32s(mu, *v), lr_g);
    let delta = if step.nesterov {
        simd.sub_f32s(simd.mul_f32s(mu, *v), lr_g)
    } else {
        *v
    };
    *w = simd.add_f32s(*w, delta);
}

impl WithSimd for Momentum<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let step = self.step;
        let (g_head, g_tail) = S::as_simd_f32s(self.grad);
        let (v_head, v_tail) = S::as_mut_simd_f32s(self.velocity);
        let (w_head, w_tail) = S::as_mut_simd_f32s(self.param);
        for ((&g, v), w) in g_head.iter().zip(v_head).zip(w_head) {
            momentum_lane(simd, step, g, v, w);
        }
        if !g_tail.is_empty() {
            let g = simd.partial_load_f32s(g_tail);
            let mut v = simd.partial_load_f32s(v_tail);
            let mut w = simd.partial_load_f32s(w_tail);
            momentum_lane(simd, step, g, &mut v, &mut w);
            simd.partial_store_f32s(v_tail, v);
            simd.partial_store_f32s(w_tail, w);
        }
    }
}

/// Keras' SGD with momentum: `v = momentum v - lr g`, then `w += v`, or with Nesterov
/// `w += momentum v - lr g`.
///
/// # Panics
/// If the three slices differ in length.
pub fn momentum_update(step: MomentumStep, grad: &[f32], velocity: &mut [f32], param: &mut [f32]) {
    assert_eq!(
        grad.len(),
        velocity.len(),
        "momentum_update: velocity length"
    );
    assert_eq!(grad.len(), param.len(), "momentum_update: param length");
    dispatch(Momentum {
        step,
        grad,
        velocity,
        param,
    });
}

/// Hyper-parameters of one Adam step; `alpha` already carries the bias correction.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamStep {
    /// `lr * sqrt(1 - beta2^t) / (1 - beta1^t)` for step number `t` (from 1).
    pub alpha: f32,
    /// First-moment decay.
    pub beta1: f32,
    /// Second-moment decay.
    pub beta2: f32,
    /// Added to `sqrt(v)` in the denominator.
    pub epsilon: f32,
}

impl AdamStep {
    /// The step for iteration `t` (counting from 1) with learning rate `lr`.
    pub fn new(lr: f32, beta1: f32, beta2: f32, epsilon: f32, t: u64) -> Self {
        let t = t as f64;
        let alpha = f64::from(lr) * (1.0 - f64::from(beta2).powf(t)).sqrt()
            / (1.0 - f64::from(beta1).powf(t));
        Self {
            alpha: alpha as f32,
            beta1,
            beta2,
            epsilon,
        }
    }
}

struct Adam<'a> {
    step: AdamStep,
    grad: &'a [f32],
    m: &'a mut [f32],
    v: &'a mut [f32],
    param: &'a mut [f32],
}

#[inline(always)]
fn adam_lane<S: Simd>(
    simd: S,
    step: AdamStep,
    g: S::f32s,
    m: &mut S::f32s,
    v: &mut S::f32s,
    w: &mut S::f32s,
) {
    let one_minus_b1 = simd.splat_f32s(1.0 - step.beta1);
    let one_minus_b2 = simd.splat_f32s(1.0 - step.beta2);
    *m = simd.mul_add_f32s(simd.sub_f32s(g, *m), one_minus_b1, *m);
    *v = simd.mul_add_f32s(simd.sub_f32s(simd.mul_f32s(g, g), *v), one_minus_b2, *v);
    let denominator = simd.add_f32s(simd.sqrt_f32s(*v), simd.splat_f32s(step.epsilon));
    let delta = simd.div_f32s(simd.mul_f32s(*m, simd.splat_f32s(step.alpha)), denominator);
    *w = simd.sub_f32s(*w, delta);
}

impl WithSimd for Adam<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let step = self.step;
        let (g_head, g_tail) = S::as_simd_f32s(self.grad);
        let (m_head, m_tail) = S::as_mut_simd_f32s(self.m);
        let (v_head, v_tail) = S::as_mut_simd_f32s(self.v);
        let (w_head, w_tail) = S::as_mut_simd_f32s(self.param);
        for (((&g, m), v), w) in g_head.iter().zip(m_head).zip(v_head).zip(w_head) {
            adam_lane(simd, step, g, m, v, w);
        }
        if !g_tail.is_empty() {
            let g = simd.partial_load_f32s(g_tail);
            let mut m = simd.partial_load_f32s(m_tail);
            let mut v = simd.partial_load_f32s(v_tail);
            let mut w = simd.partial_load_f32s(w_tail);
            adam_lane(simd, step, g, &mut m, &mut v, &mut w);
            simd.partial_store_f32s(m_tail, m);
            simd.partial_store_f32s(v_tail, v);
            simd.partial_store_f32s(w_tail, w);
        }
    }
}

/// Keras 3's Adam: `m += (g - m)(1 - beta1)`, `v += (g^2 - v)(1 - beta2)`,
/// `w -= alpha m / (sqrt(v) + epsilon)`.
///
/// # Panics
/// If the four slices differ in length.
pub fn adam_update(step: AdamStep, grad: &[f32], m: &mut [f32], v: &mut [f32], param: &mut [f32]) {
    assert_eq!(grad.len(), m.len(), "adam_update: m length");
    assert_eq!(grad.len(), v.len(), "adam_update: v length");
    assert_eq!(grad.len(), param.len(), "adam_update: param length");
    dispatch(Adam {
        step,
        grad,
        m,
        v,
        param,
    });
}

/// Scalar references for this module's kernels.
pub mod reference {
    use super::*;

    /// Reference for [`super::momentum_update`].
    pub fn momentum_update(
        step: MomentumStep,
        grad: &[f32],
        velocity: &mut [f32],
        param: &mut [f32],
    ) {
        for ((&g, v), w) in grad.iter().zip(velocity).zip(param) {
            *v = step.momentum * *v - step.lr * g;
            *w += if step.nesterov {
                step.momentum * *v - step.lr * g
            } else {
                *v
            };
        }
    }

    /// Reference for [`super::adam_update`].
    pub fn adam_update(
        step: AdamStep,
        grad: &[f32],
        m: &mut [f32],
        v: &mut [f32],
        param: &mut [f32],
    ) {
        for (((&g, m), v), w) in grad.iter().zip(m).zip(v).zip(param) {
            *m += (g - *m) * (1.0 - step.beta1);
            *v += (g * g - *v) * (1.0 - step.beta2);
            *w -= step.alpha * *m / (v.sqrt() + step.epsilon);
        }
    }
}
