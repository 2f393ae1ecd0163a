//! The sparse autoencoders of interpretability research (`shared/SAE.md`), trained on
//! rows of model activations: one encoder `z = (s x - b_dec) W_enc + b_enc`, a sparse
//! code `f` chosen from `relu(z)`, and a linear decoder `x^ = f W_dec + b_dec`, all in
//! the space of the scaled input `s x`.
//!
//! An SAE is an [`Autoencoder`] of two dense layers (`layers.0` the encoder, `d -> N`,
//! ReLU, the coding layer; `layers.1` the decoder, `N -> d`, linear) whose
//! [`ModelConfig::sae`] holds what makes it one: the architecture, the input scale
//! `s`, whether `b_dec` (the decoder's bias, `layers.1.bias`) is subtracted before the
//! encoder, and the training-only settings (AuxK, the L1 coefficient and its warm-up).
//! `W_dec` is `layers.1.weight`, `[N, d]` row-major: row `j` is latent `j`'s direction.
//!
//! Architectures (this project's choices among the trainers', see SAE.md):
//! - `topk`: the `k` largest of `relu(z)` per row; decoder rows kept at unit norm;
//!   AuxK on the dead latents.
//! - `relu`: `relu(z)`, with the penalty `lambda * sum_j f_j |W_dec,j|` (mean over rows),
//!   `lambda` warmed up linearly.
//! - `batchtopk`: in training the `k * B` largest of `relu(z)` over the whole batch; a
//!   running threshold `theta <- 0.99 theta + 0.01 min_kept` (SAELens' rule; the first
//!   batch sets it) is saved as the tensor `threshold` and used for inference, where a
//!   code is kept when it exceeds it. Unit-norm decoder and AuxK as `topk`.
//! - `jumprelu`: `f = z H(z - theta_j)` with `theta = exp(log_threshold)` a learned
//!   tensor, and the penalty `l0_coefficient * mean_b #{f_b > 0}`; decoder rows at unit
//!   norm; `theta`'s gradient
//!   is SAELens' straight-through estimate with a rectangle kernel of width
//!   `bandwidth` (see `step.rs`).
//!
//! The training step is in `step.rs` (a sparse step: only the kept latents enter the
//! decoder and the gradients); initialisation here.
//! [`export`] writes SAEs for SAELens and sparsify, with the input scale folded in.

pub mod export;
mod step;

pub use step::{
    loss_and_gradients, loss_and_gradients_by, DeadLatents, Products, SaeStep, DENSE_FROM,
};

use crate::config::{Activation, Coding, LayerSpec, Loss, ModelConfig, Penalty};
use crate::error::ModelError;
use crate::geometric_median::geometric_median;
use crate::model::Autoencoder;
use crate::params::{bias_name, weight_name, Parameters, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// Which sparse autoencoder.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Arch {
    /// ReLU with an L1 penalty weighted by the decoder rows' norms.
    #[serde(rename = "relu")]
    Relu,
    /// The `k` largest activations of each row.
    #[serde(rename = "topk")]
    TopK,
    /// The `k * B` largest activations of a batch; a threshold at inference.
    #[serde(rename = "batchtopk")]
    BatchTopK,
    /// A learned threshold per latent.
    #[serde(rename = "jumprelu")]
    JumpRelu,
}

impl Arch {
    /// The name on the command line and in configs.
    pub fn name(self) -> &'static str {
        match self {
            Self::Relu => "relu",
            Self::TopK => "topk",
            Self::BatchTopK => "batchtopk",
            Self::JumpRelu => "jumprelu",
        }
    }
}

/// What makes a two-layer autoencoder a sparse autoencoder.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SaeConfig {
    /// The architecture.
    pub arch: Arch,
    /// Latents kept per row (`topk`).
    pub k: usize,
    /// The input is multiplied by this before anything else, so that the rows the
    /// SAE sees have `E |s x|^2 = d`; exports fold it into the weights.
    pub input_scale: f32,
    /// Subtract `b_dec` from the (scaled) input before the encoder.
    pub apply_b_dec_to_input: bool,
    /// Keep the decoder's rows at unit norm: project the parallel part out of their
    /// gradient, step, renormalise.
    pub unit_norm_decoder: bool,
    /// `relu`: the L1 coefficient `lambda`.
    pub l1_coefficient: f32,
    /// `relu`: steps over which `lambda` rises linearly from 0.
    pub l1_warmup_steps: u64,
    /// `topk`: the AuxK loss's coefficient (0 turns AuxK off).
    pub auxk_coefficient: f32,
    /// `topk`, `batchtopk`: dead latents reconstructing the residual per row (at most
    /// the dead latents there are).
    pub k_aux: usize,
    /// A latent that has not fired for this many training rows is dead.
    pub dead_after_rows: u64,
    /// Steps over which the learning rate rises linearly to its value.
    pub lr_warmup_steps: u64,
    /// `jumprelu`: the L0 penalty's coefficient.
    pub l0_coefficient: f32,
    /// `jumprelu`: the width of the rectangle kernel of the thresholds' gradient.
    pub bandwidth: f32,
    /// `jumprelu`: every latent's threshold at initialisation.
    pub initial_threshold: f32,
}

/// SAE.md's defaults: a latent is dead after 10 million rows without firing.
pub const DEAD_AFTER_ROWS: u64 = 10_000_000;

/// SAE.md's learning-rate warm-up, in steps.
pub const LR_WARMUP_STEPS: u64 = 1000;

/// SAELens' JumpReLU defaults: initial threshold, bandwidth, L0 coefficient.
pub const JUMPRELU_THRESHOLD: f32 = 0.01;
/// See [`JUMPRELU_THRESHOLD`].
pub const JUMPRELU_BANDWIDTH: f32 = 0.05;
/// See [`JUMPRELU_THRESHOLD`].
pub const JUMPRELU_L0_COEFFICIENT: f32 = 1.0;

/// BatchTopK's running threshold keeps this share of itself at each step (SAELens).
pub const THRESHOLD_DECAY: f32 = 0.99;

/// SAE.md's AuxK coefficient, `1/32`.
pub const AUXK_COEFFICIENT: f32 = 1.0 / 32.0;

impl SaeConfig {
    /// A TopK SAE keeping `k` latents, with SAE.md's defaults for a `d`-wide input.
    pub fn topk(k: usize, d: usize) -> Self {
        Self {
            arch: Arch::TopK,
            k,
            input_scale: 1.0,
            apply_b_dec_to_input: true,
            unit_norm_decoder: true,
            l1_coefficient: 0.0,
            l1_warmup_steps: 0,
            auxk_coefficient: AUXK_COEFFICIENT,
            k_aux: (d / 2).max(1),
            dead_after_rows: DEAD_AFTER_ROWS,
            lr_warmup_steps: LR_WARMUP_STEPS,
            l0_coefficient: 0.0,
            bandwidth: JUMPRELU_BANDWIDTH,
            initial_threshold: JUMPRELU_THRESHOLD,
        }
    }

    /// A BatchTopK SAE keeping `k` latents a row on average over a batch.
    pub fn batchtopk(k: usize, d: usize) -> Self {
        Self {
            arch: Arch::BatchTopK,
            ..Self::topk(k, d)
        }
    }

    /// A JumpReLU SAE with SAELens' defaults and L0 coefficient `l0`.
    pub fn jumprelu(l0: f32) -> Self {
        Self {
            arch: Arch::JumpRelu,
            apply_b_dec_to_input: true,
            // Not among SAE.md's choices for JumpReLU; on synthetic rows (tests/suite/recovery.rs)
            // free decoder rows recovered 0.65-0.73 of the features where unit rows
            // recovered 0.92-0.998.
            unit_norm_decoder: true,
            l0_coefficient: l0,
            ..Self::relu(0.0, 0)
        }
    }

    /// The name of the model's threshold tensor, for the architectures that have one.
    pub fn threshold_tensor(&self) -> Option<&'static str> {
        match self.arch {
            Arch::BatchTopK => Some("threshold"),
            Arch::JumpRelu => Some("log_threshold"),
            Arch::Relu | Arch::TopK => None,
        }
    }

    /// Each latent's inference threshold from `params` into `out` (untouched for the
    /// architectures without one).
    pub(crate) fn thresholds(&self, params: &Parameters, out: &mut [f32]) {
        match self.arch {
            Arch::BatchTopK => {
                out.copy_from_slice(params.values("threshold").expect("a threshold"))
            }
            Arch::JumpRelu => {
                let logs = params.values("log_threshold").expect("a log threshold");
                for (t, &l) in out.iter_mut().zip(logs) {
                    *t = l.exp();
                }
            }
            Arch::Relu | Arch::TopK => {}
        }
    }

    /// A ReLU SAE with L1 coefficient `lambda`, warmed up over `warmup` steps (SAE.md:
    /// `dictionary_learning`'s April-2024 trainer, no `b_dec` subtraction).
    pub fn relu(lambda: f32, warmup: u64) -> Self {
        Self {
            arch: Arch::Relu,
            k: 0,
            input_scale: 1.0,
            apply_b_dec_to_input: false,
            unit_norm_decoder: false,
            l1_coefficient: lambda,
            l1_warmup_steps: warmup,
            auxk_coefficient: 0.0,
            k_aux: 0,
            dead_after_rows: DEAD_AFTER_ROWS,
            lr_warmup_steps: LR_WARMUP_STEPS,
            l0_coefficient: 0.0,
            bandwidth: JUMPRELU_BANDWIDTH,
            initial_threshold: JUMPRELU_THRESHOLD,
        }
    }

    /// The coding layer that inference applies.
    pub fn coding(&self) -> Coding {
        match self.arch {
            Arch::TopK => Coding::TopK { k: self.k },
            Arch::Relu => Coding::Plain,
            Arch::BatchTopK | Arch::JumpRelu => Coding::Threshold,
        }
    }

    /// Checks the settings against the number of latents and the input width.
    pub fn validate(&self, latents: usize, d: usize) -> Result<(), String> {
        if latents == 0 {
            return Err("an SAE needs at least one latent".into());
        }
        if !(self.input_scale > 0.0 && self.input_scale.is_finite()) {
            return Err(format!("input scale {} must be positive", self.input_scale));
        }
        match self.arch {
            Arch::TopK | Arch::BatchTopK => {
                if self.k == 0 || self.k > latents {
                    return Err(format!(
                        "k {} must lie between 1 and the {latents} latents",
                        self.k
                    ));
                }
                if !(self.auxk_coefficient >= 0.0 && self.auxk_coefficient.is_finite()) {
                    return Err(format!(
                        "AuxK coefficient {} must be finite and non-negative",
                        self.auxk_coefficient
                    ));
                }
                // AuxK takes at most the dead latents there are, so any k_aux from 1 up
                // is well defined (SAE.md's d_in/2 may exceed a narrow SAE's latents).
                if self.auxk_coefficient > 0.0 && self.k_aux == 0 {
                    return Err("k_aux must be at least 1".into());
                }
            }
            Arch::Relu => {
                if !(self.l1_coefficient >= 0.0 && self.l1_coefficient.is_finite()) {
                    return Err(format!(
                        "L1 coefficient {} must be finite and non-negative",
                        self.l1_coefficient
                    ));
                }
            }
            Arch::JumpRelu => {
                let positive = |v: f32| v > 0.0 && v.is_finite();
                if !(self.l0_coefficient >= 0.0 && self.l0_coefficient.is_finite()) {
                    return Err(format!(
                        "L0 coefficient {} must be finite and non-negative",
                        self.l0_coefficient
                    ));
                }
                if !positive(self.bandwidth) || !positive(self.initial_threshold) {
                    return Err(format!(
                        "bandwidth {} and initial threshold {} must be positive",
                        self.bandwidth, self.initial_threshold
                    ));
                }
            }
        }
        let _ = d;
        Ok(())
    }
}

impl ModelConfig {
    /// A sparse autoencoder of `latents` latents on rows of `d` values.
    pub fn sae(d: usize, latents: usize, sae: SaeConfig) -> Self {
        Self {
            layers: vec![
                LayerSpec {
                    inputs: d,
                    units: latents,
                    activation: Activation::Relu,
                },
                LayerSpec {
                    inputs: latents,
                    units: d,
                    activation: Activation::Linear,
                },
            ],
            coding_layer: 0,
            coding: sae.coding(),
            penalty: Penalty::None,
            loss: Loss::Mse,
            sae: Some(sae),
        }
    }

    /// Checks that a config with [`ModelConfig::sae`] set has the SAE's shape.
    pub(crate) fn validate_sae(&self, sae: &SaeConfig) -> Result<(), String> {
        let (d, latents) = (self.input_width(), self.coding_width());
        if *self != Self::sae(d, latents, *sae) {
            return Err(format!(
                "an SAE is {d} -> {latents} relu -> {d} linear, MSE, no penalty, coding {:?}",
                sae.coding()
            ));
        }
        sae.validate(latents, d)
    }
}

/// The factor that brings rows to `E |s x|^2 = d`: `sqrt(d / mean |x|^2)` over `rows`
/// (`n x d`); 1 when they are all zero.
pub fn input_scale(rows: &[f32], d: usize) -> f32 {
    let n = rows.len() / d.max(1);
    let squares: f64 = rows.iter().map(|&v| f64::from(v).powi(2)).sum();
    if n == 0 || squares <= 0.0 {
        return 1.0;
    }
    (d as f64 / (squares / n as f64)).sqrt() as f32
}

impl Autoencoder {
    /// A freshly initialised SAE (SAE.md): decoder rows Gaussian at unit norm (norm 0.1
    /// for `relu`), `W_enc = W_dec^T`, `b_enc = 0`, `b_dec` the geometric median of
    /// `sample` (rows of raw inputs, scaled by the config's input scale first; zeros
    /// without a sample).
    pub fn new_sae(config: ModelConfig, seed: u64, sample: &[f32]) -> Result<Self, ModelError> {
        let sae = config
            .sae
            .ok_or_else(|| ModelError::Invalid("not an SAE config".into()))?;
        config.validate()?;
        let (d, latents) = (config.input_width(), config.coding_width());
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(0);
        let row_norm = if sae.unit_norm_decoder { 1.0 } else { 0.1 };
        let mut decoder = vec![0.0f32; latents * d];
        for row in decoder.chunks_exact_mut(d) {
            let values: Vec<f64> = (0..d).map(|_| standard_normal(&mut rng)).collect();
            let norm = values.iter().map(|v| v * v).sum::<f64>().sqrt().max(1e-30);
            for (out, v) in row.iter_mut().zip(values) {
                *out = (row_norm * v / norm) as f32;
            }
        }
        let mut encoder = vec![0.0f32; d * latents];
        for (j, row) in decoder.chunks_exact(d).enumerate() {
            for (i, &v) in row.iter().enumerate() {
                encoder[i * latents + j] = v;
            }
        }
        let scaled: Vec<f32> = sample.iter().map(|&v| v * sae.input_scale).collect();
        let b_dec = geometric_median(&scaled, d).unwrap_or_else(|| vec![0.0; d]);
        let mut tensors = vec![
            Tensor::new(weight_name(0), vec![d, latents], encoder),
            Tensor::new(bias_name(0), vec![latents], vec![0.0; latents]),
            Tensor::new(weight_name(1), vec![latents, d], decoder),
            Tensor::new(bias_name(1), vec![d], b_dec),
        ];
        if let Some(name) = sae.threshold_tensor() {
            // BatchTopK's running threshold starts unset (the first batch sets it);
            // JumpReLU's log-threshold at SAELens' initial threshold.
            let value = match sae.arch {
                Arch::JumpRelu => sae.initial_threshold.ln(),
                _ => 0.0,
            };
            tensors.push(Tensor::new(name, vec![latents], vec![value; latents]));
        }
        let params = Parameters::new(tensors).map_err(ModelError::Invalid)?;
        Self::from_parameters(config, params)
    }
}

/// A standard normal sample (Box-Muller).
fn standard_normal(rng: &mut impl Rng) -> f64 {
    let u: f64 = 1.0 - rng.random::<f64>();
    let v: f64 = rng.random::<f64>();
    (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
}
