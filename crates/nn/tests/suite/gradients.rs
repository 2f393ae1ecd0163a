//! Analytic gradients of the total loss checked against central finite differences of an
//! independent f64 implementation of the same model, over random architectures, every
//! activation, every penalty and both losses.

// Indices address the f32 gradients and the f64 parameter copy in step.
#![allow(clippy::needless_range_loop)]

use nn::config::{Activation, Coding, Loss, ModelConfig, Penalty};
use nn::layer::Dense;
use nn::params::{bias_name, weight_name};
use nn::trainer::loss_and_gradients;
use nn::Autoencoder;
use proptest::prelude::*;

use crate::common::{build, case, Case};

const SELU_LAMBDA: f64 = 1.050_700_987_355_480_5;
const SELU_ALPHA: f64 = 1.673_263_242_354_377_2;
const CLIP: f64 = 1e-7;

fn act64(act: Activation, z: f64) -> f64 {
    match act {
        Activation::Linear => z,
        Activation::Relu => z.max(0.0),
        Activation::Selu if z > 0.0 => SELU_LAMBDA * z,
        Activation::Selu => SELU_LAMBDA * SELU_ALPHA * z.exp_m1(),
        Activation::Sigmoid => 1.0 / (1.0 + (-z).exp()),
    }
}

/// Zeroes all but the `k` largest of each row of `width` values (ties to the lower index).
fn keep_top_k(a: &mut [f64], width: usize, k: usize) {
    for row in a.chunks_exact_mut(width) {
        let mut order: Vec<usize> = (0..width).collect();
        order.sort_by(|&i, &j| row[j].total_cmp(&row[i]).then(i.cmp(&j)));
        for &j in &order[k.min(width)..] {
            row[j] = 0.0;
        }
    }
}

/// The output layer's pre-activation (logits under BCE) or activation, and the coding
/// layer's activations, of the f64 model.
fn forward64(
    config: &ModelConfig,
    params: &[(Vec<f64>, Vec<f64>)],
    x: &[f64],
    rows: usize,
) -> (Vec<f64>, Vec<f64>) {
    let last = config.layers.len() - 1;
    let mut a = x.to_vec();
    let mut coding = Vec::new();
    for (l, spec) in config.layers.iter().enumerate() {
        let (w, b) = &params[l];
        let mut z = vec![0.0; rows * spec.units];
        for i in 0..rows {
            for j in 0..spec.units {
                let mut s = b[j];
                for k in 0..spec.inputs {
                    s += a[i * spec.inputs + k] * w[k * spec.units + j];
                }
                z[i * spec.units + j] = s;
            }
        }
        a = if l == last && config.loss == Loss::Bce {
            z
        } else {
            z.iter().map(|&v| act64(spec.activation, v)).collect()
        };
        if l == config.coding_layer {
            if let Coding::TopK { k } = config.coding {
                keep_top_k(&mut a, spec.units, k);
            }
            coding = a.clone();
        }
    }
    (a, coding)
}

/// The coding layer's mean activation of each unit over the batch.
fn coding_means(config: &ModelConfig, coding: &[f64], rows: usize) -> Vec<f64> {
    let h = config.coding_width();
    (0..h)
        .map(|j| (0..rows).map(|i| coding[i * h + j]).sum::<f64>() / rows as f64)
        .collect()
}

/// Total loss of the model given as f64 parameters, straight from the definitions.
fn loss64(config: &ModelConfig, params: &[(Vec<f64>, Vec<f64>)], x: &[f64], rows: usize) -> f64 {
    let (a, coding) = forward64(config, params, x, rows);
    let n = x.len() as f64;
    let recon: f64 = match config.loss {
        Loss::Bce => a
            .iter()
            .zip(x)
            .map(|(&z, &t)| z.max(0.0) + (-z.abs()).exp().ln_1p() - t * z)
            .sum::<f64>(),
        Loss::Mse => a
            .iter()
            .zip(x)
            .map(|(&y, &t)| (y - t) * (y - t))
            .sum::<f64>(),
    } / n;
    let b = rows as f64;
    let penalty = match config.penalty {
        Penalty::Kl { target, weight } => {
            let p = f64::from(target);
            let mut kl = 0.0;
            for q in coding_means(config, &coding, rows) {
                let q = q.clamp(CLIP, 1.0 - CLIP);
                kl += p * (p / q).ln() + (1.0 - p) * ((1.0 - p) / (1.0 - q)).ln();
            }
            f64::from(weight) / b * kl
        }
        Penalty::L1 { weight } => {
            f64::from(weight) / b * coding.iter().map(|v| v.abs()).sum::<f64>()
        }
        Penalty::L2 { weight } => f64::from(weight) / b * coding.iter().map(|v| v * v).sum::<f64>(),
        Penalty::Squared { target, weight } => {
            let p = f64::from(target);
            let squares: f64 = coding_means(config, &coding, rows)
                .iter()
                .map(|q| (q - p).powi(2))
                .sum();
            f64::from(weight) / b * squares
        }
        Penalty::None => 0.0,
    };
    recon + penalty
}

fn params64(model: &Autoencoder) -> Vec<(Vec<f64>, Vec<f64>)> {
    let widen = |v: &[f32]| v.iter().map(|&x| f64::from(x)).collect::<Vec<f64>>();
    model
        .layers()
        .map(|l: Dense| (widen(l.weight), widen(l.bias)))
        .collect()
}

/// Checks every parameter's analytic gradient against a central difference; at a kink
/// (ReLU at 0, |a| at 0, a clip boundary) the one-sided differences disagree and the
/// parameter is not differentiable there, so it is passed over.
fn check_gradients(case: &Case) -> Result<(), TestCaseError> {
    let model = build(case);
    let (loss32, grads) = loss_and_gradients(&model, &case.x, case.rows);
    let x64: Vec<f64> = case.x.iter().map(|&v| f64::from(v)).collect();
    let mut params = params64(&model);
    // The f32 forward pass rounds the coding activations; a KL term of a column whose
    // mean is tiny magnifies that through ln q, hence the looser check of the value.
    let base = loss64(&case.config, &params, &x64, case.rows);
    prop_assert!(
        (loss32 - base).abs() <= 1e-4 * base.abs() + 1e-5,
        "loss {} vs f64 {}",
        loss32,
        base
    );

    // The KL term's derivative holds `(1 - p) / (1 - q)`; where a column's mean `q` is
    // within 1e-3 of 1 (ReLU codings can get there), f32's `1 - q` is only good to about
    // 6e-8 / |1 - q| (about 0.3% at a mean of 0.99998; the saved case with that mean
    // failed by 0.18%), more than this check allows, and no f32 implementation does
    // better. Such cases are not checked.
    if let Penalty::Kl { .. } = case.config.penalty {
        let (_, coding) = forward64(&case.config, &params, &x64, case.rows);
        let means = coding_means(&case.config, &coding, case.rows);
        prop_assume!(
            means.iter().all(|q| (1.0 - q).abs() > 1e-3),
            "a KL column's mean within 1e-3 of 1"
        );
    }

    // Small enough for the KL term's curvature at tiny mean activations; f64 keeps the
    // rounding error of the difference near 1e-10.
    let h = 1e-6;
    for l in 0..params.len() {
        for tensor in 0..2 {
            let name = if tensor == 0 {
                weight_name(l)
            } else {
                bias_name(l)
            };
            let analytic = grads.values(&name).unwrap();
            let scale = analytic
                .iter()
                .fold(0.0f64, |m, &g| m.max(f64::from(g).abs()));
            for k in 0..analytic.len() {
                let original = get(&params, l, tensor, k);
                set(&mut params, l, tensor, k, original + h);
                let plus = loss64(&case.config, &params, &x64, case.rows);
                set(&mut params, l, tensor, k, original - h);
                let minus = loss64(&case.config, &params, &x64, case.rows);
                set(&mut params, l, tensor, k, original);
                let numeric = (plus - minus) / (2.0 * h);
                let got = f64::from(analytic[k]);
                let tol = 2e-3 * numeric.abs() + 1e-3 * scale + 1e-6;
                if (got - numeric).abs() > tol {
                    let right = (plus - base) / h;
                    let left = (base - minus) / h;
                    // At a kink (ReLU at 0, |a| at 0, a clip boundary within h) the two
                    // one-sided slopes differ and the analytic gradient lies between them
                    // (one-sided differences carry an O(h) error).
                    let slack = tol + 1e-2 * numeric.abs().max(1e-3);
                    let between = got >= left.min(right) - slack && got <= left.max(right) + slack;
                    let kink = (right - left).abs() > 2.0 * tol && between;
                    prop_assert!(
                        kink,
                        "layer {} {} [{}]: analytic {:e}, numeric {:e} (one-sided {:e}, {:e})",
                        l,
                        if tensor == 0 { "weight" } else { "bias" },
                        k,
                        got,
                        numeric,
                        left,
                        right
                    );
                }
            }
        }
    }
    Ok(())
}

fn get(p: &[(Vec<f64>, Vec<f64>)], l: usize, tensor: usize, k: usize) -> f64 {
    if tensor == 0 {
        p[l].0[k]
    } else {
        p[l].1[k]
    }
}

fn set(p: &mut [(Vec<f64>, Vec<f64>)], l: usize, tensor: usize, k: usize, v: f64) {
    if tensor == 0 {
        p[l].0[k] = v
    } else {
        p[l].1[k] = v
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn analytic_gradients_match_finite_differences(case in case()) {
        check_gradients(&case)?;
    }
}

/// The reference model's shape at a small batch, checked parameter by parameter on a
/// sample of weights (the full check above covers small random models).
#[test]
fn reference_architecture_gradients_match_on_a_sample() {
    let config = ModelConfig::autoencoder(
        30,
        &[(10, Activation::Selu), (20, Activation::Sigmoid)],
        None,
        Penalty::Kl {
            target: 0.1,
            weight: 0.05,
        },
        Loss::Bce,
    );
    let case = Case {
        biases: (0..90)
            .map(|i| ((i * 37) % 17) as f32 / 40.0 - 0.2)
            .collect(),
        x: (0..4 * 30).map(|i| ((i * 53) % 29) as f32 / 28.0).collect(),
        rows: 4,
        seed: 7,
        config,
    };
    check_gradients(&case).unwrap();
}

/// The KL penalty alone: dP/da from the fused kernel (linear activation, zero incoming
/// gradient) against a central difference of the f64 penalty, with a tight tolerance.
fn kl64(a: &[f64], rows: usize, cols: usize, target: f64, weight: f64) -> f64 {
    let mut kl = 0.0;
    for j in 0..cols {
        let q = (0..rows).map(|i| a[i * cols + j]).sum::<f64>() / rows as f64;
        let q = q.clamp(CLIP, 1.0 - CLIP);
        kl += target * (target / q).ln() + (1.0 - target) * ((1.0 - target) / (1.0 - q)).ln();
    }
    weight / rows as f64 * kl
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn kl_penalty_gradient_matches_finite_differences(
        rows in 1usize..=12,
        cols in 1usize..=40,
        seed in proptest::collection::vec(0.02f32..0.98, 12 * 40),
        target in 0.02f32..0.5,
        weight in 0.01f32..2.0,
    ) {
        let a: Vec<f32> = seed[..rows * cols].to_vec();
        let mut grad = vec![0.0f32; a.len()];
        let mut scratch = vec![0.0f32; cols];
        let layout = kernels::Layout::contiguous(rows, cols);
        let value = kernels::sparsity::kl_sparsity_backward(
            Activation::Linear, layout, &a, &mut grad, target, weight, &mut scratch);
        let mut a64: Vec<f64> = a.iter().map(|&v| f64::from(v)).collect();
        let (p, w) = (f64::from(target), f64::from(weight));
        let exact = kl64(&a64, rows, cols, p, w);
        // Summed in f32: a few ulps of each column's logarithms (ln q stays above -17).
        let f32_sum = 8.0 * f64::from(f32::EPSILON) * 17.0 * cols as f64 * w / rows as f64;
        prop_assert!((value - exact).abs() <= 1e-5 * exact.abs() + f32_sum, "value {} vs {}", value, exact);
        let h = 1e-6;
        for k in 0..a.len() {
            let original = a64[k];
            a64[k] = original + h;
            let plus = kl64(&a64, rows, cols, p, w);
            a64[k] = original - h;
            let minus = kl64(&a64, rows, cols, p, w);
            a64[k] = original;
            let numeric = (plus - minus) / (2.0 * h);
            let got = f64::from(grad[k]);
            // The kernel sums columns in f32: q_j carries an error of about rows * eps,
            // which moves the gradient by |dg/dq| times that.
            let j = k % cols;
            let b = rows as f64;
            let q = ((0..rows).map(|i| a64[i * cols + j]).sum::<f64>() / b).clamp(CLIP, 1.0 - CLIP);
            let dg_dq = w / (b * b) * (p / (q * q) + (1.0 - p) / ((1.0 - q) * (1.0 - q)));
            let from_sum = dg_dq * q * b * 2.0 * f64::from(f32::EPSILON);
            prop_assert!((got - numeric).abs() <= 1e-4 * numeric.abs() + from_sum + 1e-12,
                "element {}: kernel {:e}, numeric {:e}", k, got, numeric);
        }
    }

    #[test]
    fn fused_output_step_gradient_matches_finite_differences(
        pairs in proptest::collection::vec((-30.0f32..30.0, 0.0f32..=1.0), 1..300),
        mse in any::<bool>(),
    ) {
        let z: Vec<f32> = pairs.iter().map(|p| p.0).collect();
        let x: Vec<f32> = pairs.iter().map(|p| p.1).collect();
        let n = z.len();
        let loss = if mse { kernels::OutputLoss::LinearSquaredError } else { kernels::OutputLoss::SigmoidBinaryCrossEntropy };
        let mut grad = vec![0.0f32; n];
        let scale = 1.0 / n as f32;
        let stats = kernels::output::output_backward(loss, &z, &x, &mut grad, scale);
        let element = |z: f64, x: f64| if mse { (z - x) * (z - x) } else { z.max(0.0) + (-z.abs()).exp().ln_1p() - x * z };
        let exact: f64 = z.iter().zip(&x).map(|(&z, &x)| element(f64::from(z), f64::from(x))).sum();
        prop_assert!((stats.loss_sum - exact).abs() <= 1e-5 * exact + 1e-5, "loss {} vs {}", stats.loss_sum, exact);
        let h = 1e-5;
        for k in 0..n {
            let (zk, xk) = (f64::from(z[k]), f64::from(x[k]));
            let numeric = (element(zk + h, xk) - element(zk - h, xk)) / (2.0 * h) / n as f64;
            let got = f64::from(grad[k]);
            prop_assert!((got - numeric).abs() <= 1e-6 * numeric.abs() + 2e-7 / n as f64,
                "element {} (z={}, x={}): kernel {:e}, numeric {:e}", k, z[k], x[k], got, numeric);
        }
    }
}
