//! The output step, fused: from the last layer's pre-activation and the targets, in one
//! pass, the reconstruction loss summed over the batch, its gradient with respect to the
//! pre-activation, and the number of elements where the rounded prediction equals the
//! rounded target (Keras' `rounded_accuracy`, rounding half to even).
//!
//! - Binary cross-entropy fused with the sigmoid: for logit `z` and target `x`,
//!   `loss = softplus(z) - x z` (stable: `max(z, 0) + ln(1 + exp(-|z|)) - x z`),
//!   `dz = (sigmoid(z) - x) * scale`; one `exp` serves the loss, the sigmoid and the gradient.
//! - Mean squared error on a linear output `y`: `loss = (y - x)^2`, `dz = 2 (y - x) * scale`.
//!
//! `scale` is the caller's normalisation, `1 / (B * D)` for a mean over the batch.

use crate::isa::dispatch;
use crate::math::{exp_nonpositive_simd, ln_1p_unit_simd, round_half_even_simd};
use pulp::{Simd, WithSimd};

/// The reconstruction loss paired with its output nonlinearity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OutputLoss {
    /// Sigmoid output with binary cross-entropy, computed from the logits.
    SigmoidBinaryCrossEntropy,
    /// Linear output with squared error.
    LinearSquaredError,
}

/// What one output step measured.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct OutputStats {
    /// Sum of the per-element losses (not yet divided by the element count).
    pub loss_sum: f64,
    /// Elements where `round(prediction) == round(target)`.
    pub rounded_equal: u64,
}

impl std::ops::AddAssign for OutputStats {
    fn add_assign(&mut self, other: Self) {
        self.loss_sum += other.loss_sum;
        self.rounded_equal += other.rounded_equal;
    }
}

/// Binary cross-entropy from the logits `z`, given `e = exp(-|z|)`: one register's
/// loss, gradient (before scaling) and rounded-equality mask as 1.0/0.0.
#[inline(always)]
fn bce_from_exp<S: Simd>(simd: S, z: S::f32s, x: S::f32s, e: S::f32s) -> [S::f32s; 3] {
    let zero = simd.splat_f32s(0.0);
    let one = simd.splat_f32s(1.0);
    let softplus = simd.add_f32s(simd.max_f32s(z, zero), ln_1p_unit_simd(simd, e));
    let value = simd.sub_f32s(softplus, simd.mul_f32s(x, z));
    let positive = simd.div_f32s(one, simd.add_f32s(one, e));
    let s = simd.select_f32s(
        simd.greater_than_or_equal_f32s(z, zero),
        positive,
        simd.mul_f32s(e, positive),
    );
    // `exp_nonpositive_simd` turns NaN into a number: give the NaN back.
    let not_nan = simd.equal_f32s(z, z);
    let s = simd.select_f32s(not_nan, s, z);
    // s lies in [0, 1], where rounding half to even is `s > 0.5`.
    let predicted_one = simd.greater_than_f32s(s, simd.splat_f32s(0.5));
    let prediction = simd.select_f32s(predicted_one, one, zero);
    let equal = simd.equal_f32s(prediction, round_half_even_simd(simd, x));
    let counted = simd.select_f32s(not_nan, simd.select_f32s(equal, one, zero), zero);
    [value, simd.sub_f32s(s, x), counted]
}

/// `exp(-|z|)`, the one transcendental the cross-entropy's loss, sigmoid and gradient share.
#[inline(always)]
fn exp_minus_abs<S: Simd>(simd: S, z: S::f32s) -> S::f32s {
    exp_nonpositive_simd(simd, simd.neg_f32s(simd.abs_f32s(z)))
}

/// One register's loss, gradient (before scaling) and rounded-equality mask as 1.0/0.0.
#[inline(always)]
fn element<S: Simd>(simd: S, loss: OutputLoss, z: S::f32s, x: S::f32s) -> [S::f32s; 3] {
    match loss {
        OutputLoss::SigmoidBinaryCrossEntropy => bce_from_exp(simd, z, x, exp_minus_abs(simd, z)),
        OutputLoss::LinearSquaredError => {
            let d = simd.sub_f32s(z, x);
            let equal =
                simd.equal_f32s(round_half_even_simd(simd, z), round_half_even_simd(simd, x));
            [
                simd.mul_f32s(d, d),
                simd.add_f32s(d, d),
                simd.select_f32s(equal, simd.splat_f32s(1.0), simd.splat_f32s(0.0)),
            ]
        }
    }
}

struct OutputStep<'a> {
    loss: OutputLoss,
    z: &'a [f32],
    targets: &'a [f32],
    grad: Option<&'a mut [f32]>,
    scale: f32,
}

impl WithSimd for OutputStep<'_> {
    type Output = OutputStats;
    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) -> OutputStats {
        // f32 partial sums over short blocks, added in f64: exact counts, accurate loss.
        const BLOCK: usize = 1024;
        // Registers per pass of the cross-entropy's two loops.
        const CHUNK: usize = 64;
        let Self {
            loss,
            z,
            targets,
            mut grad,
            scale,
        } = self;
        let scale_v = simd.splat_f32s(scale);
        let mut stats = OutputStats::default();
        for (block_index, (z_block, x_block)) in
            z.chunks(BLOCK).zip(targets.chunks(BLOCK)).enumerate()
        {
            let (z_head, z_tail) = S::as_simd_f32s(z_block);
            let (x_head, x_tail) = S::as_simd_f32s(x_block);
            let mut loss_acc = simd.splat_f32s(0.0);
            let mut equal_acc = simd.splat_f32s(0.0);
            let start = block_index * BLOCK;
            let mut grad_block = grad
                .as_deref_mut()
                .map(|g| S::as_mut_simd_f32s(&mut g[start..start + z_block.len()]));
            macro_rules! each {
                ($grad_head:expr) => {
                    match loss {
                        OutputLoss::SigmoidBinaryCrossEntropy => {
                            // The exponentials of a chunk first, then the rest: each
                            // loop's dependency chain is short enough for the core to
                            // overlap many iterations; one loop doing both ran at half
                            // the speed.
                            let mut exps = [simd.splat_f32s(0.0); CHUNK];
                            for (chunk, (z_chunk, x_chunk)) in
                                z_head.chunks(CHUNK).zip(x_head.chunks(CHUNK)).enumerate()
                            {
                                for (e, &zv) in exps.iter_mut().zip(z_chunk) {
                                    *e = exp_minus_abs(simd, zv);
                                }
                                for (k, ((&zv, &xv), &e)) in
                                    z_chunk.iter().zip(x_chunk).zip(&exps).enumerate()
                                {
                                    let [v, d, eq] = bce_from_exp(simd, zv, xv, e);
                                    loss_acc = simd.add_f32s(loss_acc, v);
                                    equal_acc = simd.add_f32s(equal_acc, eq);
                                    if let Some(g) = $grad_head {
                                        g[chunk * CHUNK + k] = simd.mul_f32s(d, scale_v);
                                    }
                                }
                            }
                        }
                        OutputLoss::LinearSquaredError => {
                            for (k, (&zv, &xv)) in z_head.iter().zip(x_head).enumerate() {
                                let [v, d, e] =
                                    element(simd, OutputLoss::LinearSquaredError, zv, xv);
                                loss_acc = simd.add_f32s(loss_acc, v);
                                equal_acc = simd.add_f32s(equal_acc, e);
                                if let Some(g) = $grad_head {
                                    g[k] = simd.mul_f32s(d, scale_v);
                                }
                            }
                        }
                    }
                };
            }
            match grad_block.as_mut() {
                Some((g_head, _)) => each!(Some(&mut **g_head)),
                None => each!(None::<&mut [S::f32s]>),
            }
            if !z_tail.is_empty() {
                let zv = simd.partial_load_f32s(z_tail);
                let xv = simd.partial_load_f32s(x_tail);
                let [v, d, e] = element(simd, loss, zv, xv);
                // Lanes past the tail were loaded as zeros and must not count.
                let live = simd.partial_load_f32s(&[1.0f32; 64][..z_tail.len()]);
                loss_acc = simd.add_f32s(loss_acc, simd.mul_f32s(v, live));
                equal_acc = simd.add_f32s(equal_acc, simd.mul_f32s(e, live));
                if let Some((_, g_tail)) = grad_block.as_mut() {
                    simd.partial_store_f32s(g_tail, simd.mul_f32s(d, scale_v));
                }
            }
            stats.loss_sum += f64::from(simd.reduce_sum_f32s(loss_acc));
            stats.rounded_equal += simd.reduce_sum_f32s(equal_acc) as u64;
        }
        stats
    }
}

/// The fused output step: returns the summed loss and rounded-equal count, and writes
/// `grad[i] = dloss_i/dz_i * scale`.
///
/// # Panics
/// If `z`, `targets` and `grad` differ in length.
pub fn output_backward(
    loss: OutputLoss,
    z: &[f32],
    targets: &[f32],
    grad: &mut [f32],
    scale: f32,
) -> OutputStats {
    assert_eq!(
        z.len(),
        targets.len(),
        "output_backward: z and targets differ in length"
    );
    assert_eq!(
        z.len(),
        grad.len(),
        "output_backward: z and grad differ in length"
    );
    dispatch(OutputStep {
        loss,
        z,
        targets,
        grad: Some(grad),
        scale,
    })
}

/// The summed loss and rounded-equal count, without a gradient (for evaluation).
///
/// # Panics
/// If `z` and `targets` differ in length.
pub fn output_stats(loss: OutputLoss, z: &[f32], targets: &[f32]) -> OutputStats {
    assert_eq!(
        z.len(),
        targets.len(),
        "output_stats: z and targets differ in length"
    );
    dispatch(OutputStep {
        loss,
        z,
        targets,
        grad: None,
        scale: 0.0,
    })
}

/// Scalar references for this module's kernels, in f64.
pub mod reference {
    use super::*;

    fn round_half_even(v: f64) -> f64 {
        let r = v.round();
        if (v - v.trunc()).abs() == 0.5 {
            2.0 * (v / 2.0).round()
        } else {
            r
        }
    }

    /// Reference for [`super::output_backward`]; with `grad = None`, for [`super::output_stats`].
    pub fn output_backward(
        loss: OutputLoss,
        z: &[f32],
        targets: &[f32],
        mut grad: Option<&mut [f32]>,
        scale: f32,
    ) -> OutputStats {
        let mut stats = OutputStats::default();
        for (i, (&z, &x)) in z.iter().zip(targets).enumerate() {
            let (z, x) = (f64::from(z), f64::from(x));
            let (value, diff, prediction) = match loss {
                OutputLoss::SigmoidBinaryCrossEntropy => {
                    let softplus = z.max(0.0) + (-z.abs()).exp().ln_1p();
                    let s = 1.0 / (1.0 + (-z).exp());
                    (softplus - x * z, s - x, s)
                }
                OutputLoss::LinearSquaredError => ((z - x) * (z - x), 2.0 * (z - x), z),
            };
            stats.loss_sum += value;
            // Compare as f32, as the kernel does: the prediction is an f32 there.
            let prediction = f64::from(prediction as f32);
            stats.rounded_equal += u64::from(round_half_even(prediction) == round_half_even(x));
            if let Some(g) = grad.as_deref_mut() {
                g[i] = (diff * f64::from(scale)) as f32;
            }
        }
        stats
    }
}
