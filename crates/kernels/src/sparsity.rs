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

use crate::activation::{monomorphise, Activation};
use crate::isa::dispatch;
use crate::layout::Layout;
use crate::reduce::column_sums;
use pulp::{Simd, WithSimd};

/// Keras' `epsilon()`: the mean activation is clipped to `[eps, 1 - eps]` before the logs.
pub const KL_CLIP_EPS: f32 = 1e-7;

/// Constants of the per-column KL step, splatted once. A method rather than a closure:
/// closures are compiled without the dispatched instruction set, so the intrinsics inside
/// them would become calls.
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

    /// From a column sum: the divergence term, and the gradient
    /// `(q - p) / (q (1 - q)) = -p/q + (1-p)/(1-q)`, zero where `q` was clipped.
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

/// Turns column sums (in `scratch`) into the per-column KL gradient, returning the penalty.
struct KlColumns<'a> {
    scratch: &'a mut [f32],
    rows: usize,
    target: f32,
    weight: f32,
    with_grad: bool,
}

impl WithSimd for KlColumns<'_> {
    type Output = f64;
    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) -> f64 {
        let Self {
            scratch,
            rows,
            target,
            weight,
            with_grad,
        } = self;
        let batch = rows as f32;
        let kl = KlColumn::new(simd, batch, target, weight);
        let (head, tail) = S::as_mut_simd_f32s(scratch);
        let mut divergence = simd.splat_f32s(0.0);
        for v in head {
            let (term, g) = kl.column(simd, *v);
            divergence = simd.add_f32s(divergence, term);
            if with_grad {
                *v = g;
            }
        }
        if !tail.is_empty() {
            let (term, g) = kl.column(simd, simd.partial_load_f32s(tail));
            // Lanes past the tail were loaded as zeros and must not count.
            let live = simd.partial_load_f32s(&[1.0f32; 64][..tail.len()]);
            divergence = simd.add_f32s(divergence, simd.mul_f32s(term, live));
            if with_grad {
                simd.partial_store_f32s(tail, g);
            }
        }
        f64::from(weight) / f64::from(batch) * f64::from(simd.reduce_sum_f32s(divergence))
    }
}

fn kl_columns(scratch: &mut [f32], rows: usize, target: f32, weight: f32, with_grad: bool) -> f64 {
    dispatch(KlColumns {
        scratch,
        rows,
        target,
        weight,
        with_grad,
    })
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

#[track_caller]
fn check_kl(layout: Layout, output: &[f32], target: f32, scratch: &[f32]) {
    layout.check(output.len(), "kl sparsity: output");
    assert_eq!(
        scratch.len(),
        layout.cols,
        "kl sparsity: scratch length != cols"
    );
    assert!(
        target > 0.0 && target < 1.0,
        "kl sparsity: target {target} outside (0, 1)"
    );
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
    check_kl(layout, output, target, scratch);
    if layout.is_empty() {
        return 0.0;
    }
    column_sums(layout, output, 1.0, 0.0, scratch);
    kl_columns(scratch, layout.rows, target, weight, false)
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
    check_kl(layout, output, target, scratch);
    layout.check(grad.len(), "kl sparsity: grad");
    if layout.is_empty() {
        return 0.0;
    }
    column_sums(layout, output, 1.0, 0.0, scratch);
    let penalty = kl_columns(scratch, layout.rows, target, weight, true);
    dispatch(AddColumnGradient {
        act,
        layout,
        output,
        grad,
        column_grad: scratch,
    });
    penalty
}

/// `scale * sign(a)` (zero at zero); a method, not a closure, for the reason given at
/// [`KlColumn`].
struct SignScaled<S: Simd> {
    zero: S::f32s,
    plus: S::f32s,
    minus: S::f32s,
}

impl<S: Simd> SignScaled<S> {
    #[inline(always)]
    fn of(&self, simd: S, a: S::f32s) -> S::f32s {
        let s = simd.select_f32s(simd.greater_than_f32s(a, self.zero), self.plus, self.zero);
        simd.select_f32s(simd.less_than_f32s(a, self.zero), self.minus, s)
    }
}

struct L1<'a> {
    act: Activation,
    layout: Layout,
    output: &'a [f32],
    grad: Option<&'a mut [f32]>,
    scale: f32,
}

impl WithSimd for L1<'_> {
    type Output = f64;
    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) -> f64 {
        let Self {
            act,
            layout,
            output,
            mut grad,
            scale,
        } = self;
        let zero = simd.splat_f32s(0.0);
        let plus = simd.splat_f32s(scale);
        let minus = simd.splat_f32s(-scale);
        let sign_scaled = SignScaled { zero, plus, minus };
        let mut total = 0.0f64;
        monomorphise!(act, |act| {
            for i in 0..layout.rows {
                let range = layout.row(i);
                let (a_head, a_tail) = S::as_simd_f32s(&output[range.clone()]);
                let mut acc = simd.abs_f32s(simd.partial_load_f32s(a_tail));
                for &a in a_head {
                    acc = simd.add_f32s(acc, simd.abs_f32s(a));
                }
                total += f64::from(simd.reduce_sum_f32s(acc));
                if let Some(grad) = grad.as_deref_mut() {
                    let (g_head, g_tail) = S::as_mut_simd_f32s(&mut grad[range]);
                    for (g, &a) in g_head.iter_mut().zip(a_head) {
                        let d = act.derivative_from_output_simd(simd, a);
                        *g = simd.mul_f32s(simd.add_f32s(*g, sign_scaled.of(simd, a)), d);
                    }
                    if !g_tail.is_empty() {
                        let a = simd.partial_load_f32s(a_tail);
                        let g = simd.partial_load_f32s(g_tail);
                        let d = act.derivative_from_output_simd(simd, a);
                        let dz = simd.mul_f32s(simd.add_f32s(g, sign_scaled.of(simd, a)), d);
                        simd.partial_store_f32s(g_tail, dz);
                    }
                }
            }
        });
        f64::from(scale) * total
    }
}

/// The L1 activity penalty `(weight / B) * sum |a|` of a batch (no gradient).
///
/// # Panics
/// If `output` is too short for `layout`.
pub fn l1_sparsity_penalty(layout: Layout, output: &[f32], weight: f32) -> f64 {
    layout.check(output.len(), "l1 sparsity: output");
    if layout.is_empty() {
        return 0.0;
    }
    dispatch(L1 {
        act: Activation::Linear,
        layout,
        output,
        grad: None,
        scale: weight / layout.rows as f32,
    })
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
    layout.check(output.len(), "l1 sparsity: output");
    layout.check(grad.len(), "l1 sparsity: grad");
    if layout.is_empty() {
        return 0.0;
    }
    dispatch(L1 {
        act,
        layout,
        output,
        grad: Some(grad),
        scale: weight / layout.rows as f32,
    })
}

struct L2<'a> {
    act: Activation,
    layout: Layout,
    output: &'a [f32],
    grad: Option<&'a mut [f32]>,
    scale: f32,
}

impl WithSimd for L2<'_> {
    type Output = f64;
    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) -> f64 {
        let Self {
            act,
            layout,
            output,
            mut grad,
            scale,
        } = self;
        // `2 w / B`: doubling is exact, so this is `scale`'s rounding alone.
        let grad_scale = simd.splat_f32s(2.0 * scale);
        let mut total = 0.0f64;
        monomorphise!(act, |act| {
            for i in 0..layout.rows {
                let range = layout.row(i);
                let (a_head, a_tail) = S::as_simd_f32s(&output[range.clone()]);
                // Lanes past the tail load as zeros and add nothing.
                let t = simd.partial_load_f32s(a_tail);
                let mut acc = simd.mul_f32s(t, t);
                for &a in a_head {
                    acc = simd.mul_add_f32s(a, a, acc);
                }
                total += f64::from(simd.reduce_sum_f32s(acc));
                if let Some(grad) = grad.as_deref_mut() {
                    let (g_head, g_tail) = S::as_mut_simd_f32s(&mut grad[range]);
                    for (g, &a) in g_head.iter_mut().zip(a_head) {
                        let d = act.derivative_from_output_simd(simd, a);
                        *g = simd.mul_f32s(simd.mul_add_f32s(grad_scale, a, *g), d);
                    }
                    if !g_tail.is_empty() {
                        let a = simd.partial_load_f32s(a_tail);
                        let g = simd.partial_load_f32s(g_tail);
                        let d = act.derivative_from_output_simd(simd, a);
                        let dz = simd.mul_f32s(simd.mul_add_f32s(grad_scale, a, g), d);
                        simd.partial_store_f32s(g_tail, dz);
                    }
                }
            }
        });
        f64::from(scale) * total
    }
}

/// The L2 activity penalty `(weight / B) * sum a^2` of a batch (no gradient).
///
/// Each row's squares are summed in f32 (then the rows in f64), so an activation past
/// about `1.8e19` in magnitude makes the penalty infinite.
///
/// # Panics
/// If `output` is too short for `layout`.
pub fn l2_sparsity_penalty(layout: Layout, output: &[f32], weight: f32) -> f64 {
    layout.check(output.len(), "l2 sparsity: output");
    if layout.is_empty() {
        return 0.0;
    }
    dispatch(L2 {
        act: Activation::Linear,
        layout,
        output,
        grad: None,
        scale: weight / layout.rows as f32,
    })
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
    layout.check(output.len(), "l2 sparsity: output");
    layout.check(grad.len(), "l2 sparsity: grad");
    if layout.is_empty() {
        return 0.0;
    }
    dispatch(L2 {
        act,
        layout,
        output,
        grad: Some(grad),
        scale: weight / layout.rows as f32,
    })
}

/// Constants of the per-column squared mean-target step, splatted once; a method, not a
/// closure, for the reason given at [`KlColumn`].
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

    /// From a column sum: the term `(q - p)^2`, and the gradient `(2 w / B^2) (q - p)`.
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

/// Turns column sums (in `scratch`) into the per-column squared mean-target gradient,
/// returning the penalty.
struct SquaredColumns<'a> {
    scratch: &'a mut [f32],
    rows: usize,
    target: f32,
    weight: f32,
    with_grad: bool,
}

impl WithSimd for SquaredColumns<'_> {
    type Output = f64;
    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) -> f64 {
        let Self {
            scratch,
            rows,
            target,
            weight,
            with_grad,
        } = self;
        let batch = rows as f32;
        let squared = SquaredColumn::new(simd, batch, target, weight);
        let (head, tail) = S::as_mut_simd_f32s(scratch);
        let mut total = simd.splat_f32s(0.0);
        for v in head {
            let (term, g) = squared.column(simd, *v);
            total = simd.add_f32s(total, term);
            if with_grad {
                *v = g;
            }
        }
        if !tail.is_empty() {
            let (term, g) = squared.column(simd, simd.partial_load_f32s(tail));
            // Lanes past the tail were loaded as zeros (a term of `p^2`) and must not count.
            let live = simd.partial_load_f32s(&[1.0f32; 64][..tail.len()]);
            total = simd.add_f32s(total, simd.mul_f32s(term, live));
            if with_grad {
                simd.partial_store_f32s(tail, g);
            }
        }
        f64::from(weight) / f64::from(batch) * f64::from(simd.reduce_sum_f32s(total))
    }
}

fn squared_columns(
    scratch: &mut [f32],
    rows: usize,
    target: f32,
    weight: f32,
    with_grad: bool,
) -> f64 {
    dispatch(SquaredColumns {
        scratch,
        rows,
        target,
        weight,
        with_grad,
    })
}

#[track_caller]
fn check_squared(layout: Layout, output: &[f32], target: f32, scratch: &[f32]) {
    layout.check(output.len(), "squared sparsity: output");
    assert_eq!(
        scratch.len(),
        layout.cols,
        "squared sparsity: scratch length != cols"
    );
    assert!(
        target.is_finite(),
        "squared sparsity: target {target} is not finite"
    );
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
    check_squared(layout, output, target, scratch);
    if layout.is_empty() {
        return 0.0;
    }
    column_sums(layout, output, 1.0, 0.0, scratch);
    squared_columns(scratch, layout.rows, target, weight, false)
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
    check_squared(layout, output, target, scratch);
    layout.check(grad.len(), "squared sparsity: grad");
    if layout.is_empty() {
        return 0.0;
    }
    column_sums(layout, output, 1.0, 0.0, scratch);
    let penalty = squared_columns(scratch, layout.rows, target, weight, true);
    dispatch(AddColumnGradient {
        act,
        layout,
        output,
        grad,
        column_grad: scratch,
    });
    penalty
}

/// Scalar references for this module's kernels, in f64 where it matters.
pub mod reference {
    use super::*;
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
