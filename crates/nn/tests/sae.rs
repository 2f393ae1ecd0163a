//! A sparse autoencoder's gradients (TopK with AuxK, ReLU with its decoder-weighted
//! L1) against central differences of an independent f64 model of SAE.md's definitions.

use nn::params::Parameters;
use nn::sae::{loss_and_gradients, Arch, DeadLatents, SaeConfig};
use nn::{Autoencoder, ModelConfig};
use proptest::prelude::*;

/// The f64 parameters: `W_enc [d, n]`, `b_enc [n]`, `W_dec [n, d]`, `b_dec [d]`.
type Params64 = Vec<Vec<f64>>;

/// Keeps the `k` largest positive values among `allowed` of each row (ties to the lower
/// index), zeroing the rest.
fn keep(row: &[f64], k: usize, allowed: &dyn Fn(usize) -> bool) -> Vec<f64> {
    let mut order: Vec<usize> = (0..row.len())
        .filter(|&j| allowed(j) && row[j] > 0.0)
        .collect();
    order.sort_by(|&i, &j| row[j].total_cmp(&row[i]).then(i.cmp(&j)));
    let mut out = vec![0.0; row.len()];
    for &j in order.iter().take(k) {
        out[j] = row[j];
    }
    out
}

struct Model64<'a> {
    sae: SaeConfig,
    d: usize,
    n: usize,
    dead: &'a [bool],
    step: u64,
}

impl Model64<'_> {
    /// `(reconstructions, post-ReLU activations, codes)` of the rows `x`.
    fn forward(&self, p: &Params64, x: &[f64]) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
        let (d, n) = (self.d, self.n);
        let rows = x.len() / d;
        let (mut recon, mut acts, mut codes) = (vec![], vec![], vec![]);
        for b in 0..rows {
            let t: Vec<f64> = (0..d)
                .map(|i| x[b * d + i] * f64::from(self.sae.input_scale))
                .collect();
            let input: Vec<f64> = (0..d)
                .map(|i| {
                    if self.sae.apply_b_dec_to_input {
                        t[i] - p[3][i]
                    } else {
                        t[i]
                    }
                })
                .collect();
            let a: Vec<f64> = (0..n)
                .map(|j| {
                    (p[1][j] + (0..d).map(|i| input[i] * p[0][i * n + j]).sum::<f64>()).max(0.0)
                })
                .collect();
            let f = match self.sae.arch {
                Arch::TopK => keep(&a, self.sae.k, &|_| true),
                Arch::Relu => a.clone(),
            };
            for i in 0..d {
                recon.push(p[3][i] + (0..n).map(|j| f[j] * p[2][j * d + i]).sum::<f64>());
            }
            acts.extend(a);
            codes.extend(f);
        }
        (recon, acts, codes)
    }

    /// The loss, with AuxK's residual `residual` held fixed (its gradient stops there).
    fn loss(&self, p: &Params64, x: &[f64], residual: &[f64]) -> f64 {
        let (d, n) = (self.d, self.n);
        let rows = x.len() / d;
        let s = f64::from(self.sae.input_scale);
        let (recon, acts, codes) = self.forward(p, x);
        let mut loss = (0..rows * d)
            .map(|e| (recon[e] - s * x[e]).powi(2))
            .sum::<f64>()
            / rows as f64;
        if self.sae.arch == Arch::Relu {
            let warm = if self.sae.l1_warmup_steps == 0 {
                1.0
            } else {
                (self.step as f64 / self.sae.l1_warmup_steps as f64).min(1.0)
            };
            let lambda = f64::from(self.sae.l1_coefficient) * warm / rows as f64;
            for j in 0..n {
                let norm = (0..d).map(|i| p[2][j * d + i].powi(2)).sum::<f64>().sqrt();
                loss += lambda * norm * (0..rows).map(|b| codes[b * n + j]).sum::<f64>();
            }
        }
        if self.sae.arch == Arch::TopK
            && self.sae.auxk_coefficient > 0.0
            && self.dead.iter().any(|&x| x)
        {
            let mut mean = vec![0.0; d];
            for b in 0..rows {
                for i in 0..d {
                    mean[i] += residual[b * d + i] / rows as f64;
                }
            }
            let variance: f64 = (0..rows * d)
                .map(|e| (residual[e] - mean[e % d]).powi(2))
                .sum();
            let mut numerator = 0.0;
            for b in 0..rows {
                let aux = keep(&acts[b * n..(b + 1) * n], self.sae.k_aux, &|j| self.dead[j]);
                for i in 0..d {
                    let e: f64 = (0..n).map(|j| aux[j] * p[2][j * d + i]).sum();
                    numerator += (e - residual[b * d + i]).powi(2);
                }
            }
            if variance > 0.0 {
                loss += f64::from(self.sae.auxk_coefficient) * numerator / variance;
            }
        }
        loss
    }
}

#[derive(Debug, Clone)]
struct Case {
    sae: SaeConfig,
    d: usize,
    n: usize,
    rows: usize,
    params: Vec<f32>,
    x: Vec<f32>,
    dead: Vec<bool>,
    step: u64,
}

fn case() -> impl Strategy<Value = Case> {
    (
        1usize..=6,
        2usize..=8,
        1usize..=6,
        any::<bool>(),
        any::<bool>(),
        0.5f32..2.0,
    )
        .prop_flat_map(|(d, n, rows, topk, pre_bias, scale)| {
            let count = 2 * d * n + n + d;
            (
                Just((d, n, rows, topk, pre_bias, scale)),
                1..=n,
                1..=n,
                proptest::collection::vec(-1.0f32..1.0, count),
                proptest::collection::vec(-2.0f32..2.0, rows * d),
                proptest::collection::vec(any::<bool>(), n),
                (0.0f32..2.0, 0u64..4, 0u64..6),
            )
        })
        .prop_map(
            |(
                (d, n, rows, topk, pre_bias, scale),
                k,
                k_aux,
                params,
                x,
                dead,
                (lambda, warmup, step),
            )| {
                let mut sae = if topk {
                    SaeConfig::topk(k, d)
                } else {
                    SaeConfig::relu(lambda, warmup)
                };
                sae.k_aux = k_aux;
                sae.auxk_coefficient = if topk { 0.5 } else { 0.0 };
                sae.input_scale = scale;
                sae.apply_b_dec_to_input = pre_bias;
                sae.dead_after_rows = 1;
                Case {
                    sae,
                    d,
                    n,
                    rows,
                    params,
                    x,
                    dead,
                    step,
                }
            },
        )
}

fn model(case: &Case) -> Autoencoder {
    let config = ModelConfig::sae(case.d, case.n, case.sae);
    let mut model = Autoencoder::new_sae(config, 1, &[]).unwrap();
    let mut values = case.params.iter();
    for t in model.parameters_mut().iter_mut() {
        for v in &mut t.values {
            *v = *values.next().unwrap();
        }
    }
    model
}

fn check(case: &Case) -> Result<(), TestCaseError> {
    let model = model(case);
    let dead = DeadLatents {
        rows_since_fired: case.dead.iter().map(|&d| u64::from(d)).collect(),
    };
    let (loss32, grads): (f64, Parameters) =
        loss_and_gradients(&model, &case.x, case.rows, &dead, case.step);
    let mut p: Params64 = model
        .parameters()
        .iter()
        .map(|t| t.values.iter().map(|&v| f64::from(v)).collect())
        .collect();
    let x: Vec<f64> = case.x.iter().map(|&v| f64::from(v)).collect();
    let reference = Model64 {
        sae: case.sae,
        d: case.d,
        n: case.n,
        dead: &case.dead,
        step: case.step,
    };
    let s = f64::from(case.sae.input_scale);
    let residual: Vec<f64> = {
        let (recon, _, _) = reference.forward(&p, &x);
        (0..x.len()).map(|e| s * x[e] - recon[e]).collect()
    };
    let base = reference.loss(&p, &x, &residual);
    prop_assert!(
        (loss32 - base).abs() <= 1e-4 * base.abs() + 1e-4,
        "loss {} vs f64 {}",
        loss32,
        base
    );
    let h = 1e-6;
    for (t, grad) in grads.iter().enumerate() {
        let scale = grad
            .values
            .iter()
            .fold(0.0f64, |m, &g| m.max(f64::from(g).abs()));
        for k in 0..grad.values.len() {
            let original = p[t][k];
            p[t][k] = original + h;
            let plus = reference.loss(&p, &x, &residual);
            p[t][k] = original - h;
            let minus = reference.loss(&p, &x, &residual);
            p[t][k] = original;
            let numeric = (plus - minus) / (2.0 * h);
            let got = f64::from(grad.values[k]);
            let tol = 2e-3 * numeric.abs() + 1e-3 * scale + 1e-5;
            if (got - numeric).abs() > tol {
                // A kink (ReLU at 0, a change of the kept set) within h: the analytic
                // gradient lies between the one-sided slopes.
                let (right, left) = ((plus - base) / h, (base - minus) / h);
                let slack = tol + 1e-2 * numeric.abs().max(1e-3);
                let between = got >= left.min(right) - slack && got <= left.max(right) + slack;
                prop_assert!(
                    (right - left).abs() > 2.0 * tol && between,
                    "{} [{}]: analytic {:e}, numeric {:e} (one-sided {:e}, {:e})",
                    grad.name(),
                    k,
                    got,
                    numeric,
                    left,
                    right
                );
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn sae_gradients_match_finite_differences(case in case()) {
        check(&case)?;
    }
}
