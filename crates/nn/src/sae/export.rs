//! Sparse autoencoders in the layouts of the Python tools that load them: SAELens v6
//! (`cfg.json` + `sae_weights.safetensors`, loaded by `SAE.load_from_disk`) and
//! EleutherAI's sparsify (`cfg.json` + `sae.safetensors` in a directory named after the
//! hookpoint, loaded by `SparseCoder.load_from_disk`).
//!
//! The model works on scaled rows `s x`; an export takes raw rows, with `s` folded into
//! the weights. Write `W_e, b_e, W_d, b` for the model's `W_enc [d, N]`, `b_enc`,
//! `W_dec [N, d]` and `b_dec`, and `a` for 1 when it subtracts `b_dec` before encoding
//! and 0 when not. The model computes
//!
//! ```text
//! z  = (s x - a b) W_e + b_e        f = topk(relu(z)), relu(z) or z H(z - theta)
//! x^ = (f W_d + b) / s              (in the input's units)
//! ```
//!
//! SAELens computes `z' = (x - a b') W_e' + b_e'` and `x^' = f' W_d' + b'`. With
//! `W_e' = s W_e`, `b_e' = b_e`, `W_d' = W_d / s`, `b' = b / s`:
//! `z' = (x - a b/s) s W_e + b_e = (s x - a b) W_e + b_e = z`, for `a` 0 or 1 alike, so
//! `f' = f` (the same codes) and `x^' = f W_d / s + b / s = x^`. The thresholds `theta`
//! of JumpReLU and BatchTopK compare pre-activations, which folding leaves unchanged, so
//! they export as they are: JumpReLU's as `exp(log_threshold)`, computed as the model
//! computes it, and BatchTopK's running threshold (the same for every latent) as a
//! SAELens `jumprelu` SAE, which is how BatchTopK infers.
//!
//! sparsify always subtracts `b_dec`: `z' = (x - b') W_e'^T + b_e'` (its
//! `encoder.weight` is `[N, d]`). The same `W_e'`, `W_d'`, `b'` serve; when the model
//! subtracts `b_dec` (`a = 1`) `b_e' = b_e` as above, and when it does not (`a = 0`)
//! the subtraction is undone through the bias: `b_e' = b_e + b W_e`, since
//! `(x - b/s) s W_e + b_e + b W_e = s x W_e + b_e = z`. Only `topk` exports to sparsify,
//! whose only sparse activation is top-k.
//!
//! The folded values are computed in f64 and rounded once to f32.

use crate::model::Autoencoder;
use crate::params::{bias_name, weight_name};
use crate::sae::{Arch, SaeConfig};
use safetensors::tensor::{Dtype, TensorView};
use serde::Serialize;

/// The config file's name, in both layouts.
pub const CFG_FILE: &str = "cfg.json";

/// SAELens' weights file.
pub const SAELENS_WEIGHTS_FILE: &str = "sae_weights.safetensors";

/// sparsify's weights file.
pub const SPARSIFY_WEIGHTS_FILE: &str = "sae.safetensors";

/// The SAELens version whose config layout the export follows (the v6 layout, unchanged
/// through 6.18); SAELens reads configs of earlier versions through a legacy path.
pub const SAELENS_VERSION: &str = "6.0.0";

/// Why a model does not export.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The model has no SAE config.
    #[error("not a sparse autoencoder (its config has no \"sae\" entry): only SAEs export")]
    NotSae,
    /// The format has no such architecture.
    #[error("{format} only loads TopK SAEs, and this one is {arch} (--format saelens takes it)")]
    Unsupported {
        /// The format.
        format: &'static str,
        /// The model's architecture.
        arch: &'static str,
    },
}

/// One tensor of an export.
#[derive(Clone, Debug, PartialEq)]
pub struct ExportTensor {
    /// Its name in the weights file.
    pub name: &'static str,
    /// Its shape, outermost first.
    pub shape: Vec<usize>,
    /// Row-major values.
    pub values: Vec<f32>,
}

/// An SAE ready to be written: the weights file's tensors and the config file's text.
#[derive(Clone, Debug, PartialEq)]
pub struct Export {
    /// The weights file's name ([`SAELENS_WEIGHTS_FILE`] or [`SPARSIFY_WEIGHTS_FILE`]).
    pub weights_file: &'static str,
    /// The tensors, in the order written.
    pub tensors: Vec<ExportTensor>,
    /// `cfg.json`'s text (pretty-printed JSON, ending with a newline).
    pub cfg_json: String,
}

impl Export {
    /// The tensor called `name`.
    pub fn tensor(&self, name: &str) -> Option<&ExportTensor> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// The weights file's bytes: the tensors as little-endian F32 safetensors, without
    /// metadata (both tools read the weights alone).
    pub fn safetensors_bytes(&self) -> Vec<u8> {
        let bytes: Vec<Vec<u8>> = self
            .tensors
            .iter()
            .map(|t| t.values.iter().flat_map(|v| v.to_le_bytes()).collect())
            .collect();
        let views: Vec<(&str, TensorView<'_>)> = self
            .tensors
            .iter()
            .zip(&bytes)
            .map(|(t, b)| {
                let view =
                    TensorView::new(Dtype::F32, t.shape.clone(), b).expect("shape matches values");
                (t.name, view)
            })
            .collect();
        safetensors::serialize(views, None).expect("tensors serialise")
    }
}

/// Where the activations an SAE was trained on come from, for SAELens' `metadata`
/// (all optional: unknown ones are written as `null`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Provenance {
    /// The language model (`model_name`), e.g. `gpt2`.
    pub model_name: Option<String>,
    /// The hook the activations were read at (`hook_name`), e.g.
    /// `blocks.8.hook_resid_pre`.
    pub hook_name: Option<String>,
    /// Tokens per context (`context_size`).
    pub context_size: Option<u64>,
}

/// The model's SAE tensors, in the scaled space it works in.
struct Parts<'a> {
    sae: SaeConfig,
    d: usize,
    n: usize,
    w_enc: &'a [f32],
    b_enc: &'a [f32],
    w_dec: &'a [f32],
    b_dec: &'a [f32],
    /// Each latent's inference threshold, for the architectures that have one.
    thresholds: Option<Vec<f32>>,
}

impl<'a> Parts<'a> {
    fn of(model: &'a Autoencoder) -> Result<Self, ExportError> {
        let sae = model.config().sae.ok_or(ExportError::NotSae)?;
        let params = model.parameters();
        let get = |name: String| params.values(&name).expect("an SAE has its four tensors");
        Ok(Self {
            sae,
            d: model.input_width(),
            n: model.coding_width(),
            w_enc: get(weight_name(0)),
            b_enc: get(bias_name(0)),
            w_dec: get(weight_name(1)),
            b_dec: get(bias_name(1)),
            thresholds: sae.threshold_tensor().map(|_| {
                let mut out = vec![0.0; model.coding_width()];
                sae.thresholds(params, &mut out);
                out
            }),
        })
    }

    fn scale(&self) -> f64 {
        f64::from(self.sae.input_scale)
    }

    /// `s W_enc`, `[d, N]`.
    fn folded_encoder(&self) -> Vec<f32> {
        let s = self.scale();
        self.w_enc
            .iter()
            .map(|&w| (f64::from(w) * s) as f32)
            .collect()
    }

    /// `W_dec / s`, `[N, d]`.
    fn folded_decoder(&self) -> Vec<f32> {
        let s = self.scale();
        self.w_dec
            .iter()
            .map(|&w| (f64::from(w) / s) as f32)
            .collect()
    }

    /// `b_dec / s`, `[d]`.
    fn folded_b_dec(&self) -> Vec<f32> {
        let s = self.scale();
        self.b_dec
            .iter()
            .map(|&b| (f64::from(b) / s) as f32)
            .collect()
    }
}

fn tensor(name: &'static str, shape: Vec<usize>, values: Vec<f32>) -> ExportTensor {
    ExportTensor {
        name,
        shape,
        values,
    }
}

fn pretty(value: &impl Serialize) -> String {
    let mut text = serde_json::to_string_pretty(value).expect("config serialises");
    text.push('\n');
    text
}

/// SAELens v6's `cfg.json` (the fields of `TopKSAEConfig` and `StandardSAEConfig`, and
/// `architecture`, which `SAE.load_from_disk` dispatches on).
#[derive(Serialize)]
struct SaeLensCfg<'a> {
    architecture: &'static str,
    d_in: usize,
    d_sae: usize,
    dtype: &'static str,
    device: &'static str,
    apply_b_dec_to_input: bool,
    normalize_activations: &'static str,
    reshape_activations: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    k: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rescale_acts_by_decoder_norm: Option<bool>,
    metadata: SaeLensMetadata<'a>,
}

#[derive(Serialize)]
struct SaeLensMetadata<'a> {
    /// 6.0.0 or later selects SAELens' v6 reading of the config.
    sae_lens_version: &'static str,
    /// Not trained by SAELens.
    sae_lens_training_version: Option<&'static str>,
    model_name: Option<&'a str>,
    hook_name: Option<&'a str>,
    context_size: Option<u64>,
    sae_training_tool: &'static str,
}

/// The model as a SAELens v6 SAE: `W_enc [d_in, d_sae]`, `b_enc [d_sae]`,
/// `W_dec [d_sae, d_in]`, `b_dec [d_in]` with the input scale folded in (module docs),
/// architecture `topk` (with `k`, and `rescale_acts_by_decoder_norm: false`: the codes are
/// the pre-activations' top `k` as they are), `standard` (ReLU) or `jumprelu` (JumpReLU,
/// and BatchTopK with its running threshold, each with a `threshold [d_sae]` tensor).
pub fn saelens(model: &Autoencoder, provenance: &Provenance) -> Result<Export, ExportError> {
    let p = Parts::of(model)?;
    let (architecture, k, rescale) = match p.sae.arch {
        Arch::TopK => ("topk", Some(p.sae.k), Some(false)),
        Arch::Relu => ("standard", None, None),
        Arch::BatchTopK | Arch::JumpRelu => ("jumprelu", None, None),
    };
    let cfg = SaeLensCfg {
        architecture,
        d_in: p.d,
        d_sae: p.n,
        dtype: "float32",
        device: "cpu",
        apply_b_dec_to_input: p.sae.apply_b_dec_to_input,
        normalize_activations: "none",
        reshape_activations: "none",
        k,
        rescale_acts_by_decoder_norm: rescale,
        metadata: SaeLensMetadata {
            sae_lens_version: SAELENS_VERSION,
            sae_lens_training_version: None,
            model_name: provenance.model_name.as_deref(),
            hook_name: provenance.hook_name.as_deref(),
            context_size: provenance.context_size,
            sae_training_tool: "sae",
        },
    };
    let mut tensors = vec![
        tensor("W_enc", vec![p.d, p.n], p.folded_encoder()),
        tensor("b_enc", vec![p.n], p.b_enc.to_vec()),
        tensor("W_dec", vec![p.n, p.d], p.folded_decoder()),
        tensor("b_dec", vec![p.d], p.folded_b_dec()),
    ];
    if let Some(thresholds) = p.thresholds {
        tensors.push(tensor("threshold", vec![p.n], thresholds));
    }
    Ok(Export {
        weights_file: SAELENS_WEIGHTS_FILE,
        tensors,
        cfg_json: pretty(&cfg),
    })
}

/// sparsify's `cfg.json`: the fields of `SparseCoderConfig`, then `d_in`, as its
/// `save_to_disk` writes them.
#[derive(Serialize)]
struct SparsifyCfg {
    activation: &'static str,
    expansion_factor: usize,
    normalize_decoder: bool,
    num_latents: usize,
    k: usize,
    multi_topk: bool,
    skip_connection: bool,
    transcode: bool,
    d_in: usize,
}

/// The model as a sparsify SAE: `encoder.weight [N, d]` (`(s W_enc)^T`), `encoder.bias
/// [N]`, `W_dec [N, d]`, `b_dec [d]`, folded as the module docs say (with `b_dec W_enc`
/// added to the bias of a model that does not subtract `b_dec`). TopK only.
///
/// `num_latents` sets the width; `expansion_factor`, which sparsify only reads when
/// `num_latents` is 0, is `N / d` rounded up. `normalize_decoder` (which makes sparsify
/// renormalise the decoder's rows when training resumes) is true only when training kept
/// the rows at unit norm and the input scale is 1: folding divides them by `s`, and
/// renormalising would undo that.
pub fn sparsify(model: &Autoencoder) -> Result<Export, ExportError> {
    let p = Parts::of(model)?;
    if p.sae.arch != Arch::TopK {
        return Err(ExportError::Unsupported {
            format: "sparsify",
            arch: p.sae.arch.name(),
        });
    }
    let (d, n) = (p.d, p.n);
    let scaled = p.folded_encoder();
    let mut encoder = vec![0.0f32; n * d];
    for i in 0..d {
        for j in 0..n {
            encoder[j * d + i] = scaled[i * n + j];
        }
    }
    let bias: Vec<f32> = if p.sae.apply_b_dec_to_input {
        p.b_enc.to_vec()
    } else {
        (0..n)
            .map(|j| {
                let shift: f64 = (0..d)
                    .map(|i| f64::from(p.b_dec[i]) * f64::from(p.w_enc[i * n + j]))
                    .sum();
                (f64::from(p.b_enc[j]) + shift) as f32
            })
            .collect()
    };
    let cfg = SparsifyCfg {
        activation: "topk",
        expansion_factor: n.div_ceil(d),
        normalize_decoder: p.sae.unit_norm_decoder && p.sae.input_scale == 1.0,
        num_latents: n,
        k: p.sae.k,
        multi_topk: false,
        skip_connection: false,
        transcode: false,
        d_in: d,
    };
    Ok(Export {
        weights_file: SPARSIFY_WEIGHTS_FILE,
        tensors: vec![
            tensor("encoder.weight", vec![n, d], encoder),
            tensor("encoder.bias", vec![n], bias),
            tensor("W_dec", vec![n, d], p.folded_decoder()),
            tensor("b_dec", vec![d], p.folded_b_dec()),
        ],
        cfg_json: pretty(&cfg),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Dataset, ModelConfig};
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// A model with an input scale, non-zero biases and `W_enc != W_dec^T`.
    fn model(sae: SaeConfig, d: usize, n: usize, rng: &mut ChaCha8Rng) -> Autoencoder {
        let sample: Vec<f32> = (0..16 * d).map(|_| rng.random_range(1.0..5.0)).collect();
        let mut model = Autoencoder::new_sae(ModelConfig::sae(d, n, sae), 3, &sample).unwrap();
        for t in model.parameters_mut().iter_mut() {
            if t.name() == weight_name(0) || t.name() == bias_name(0) {
                for v in &mut t.values {
                    *v += rng.random_range(-0.3..0.3);
                }
            } else if t.name() == "threshold" {
                for v in &mut t.values {
                    *v = rng.random_range(0.05..1.0);
                }
            } else if t.name() == "log_threshold" {
                for v in &mut t.values {
                    *v = rng.random_range(-3.0..0.0);
                }
            }
        }
        model
    }

    /// Codes of raw rows `x` through an exported encoder `[d, N]` (row `i` of input
    /// `i`), in f64: `relu((x - a b_dec) W + b)`, top `k` kept, zero where not above
    /// `theta` when given.
    #[allow(clippy::too_many_arguments)]
    fn codes(
        x: &[f32],
        d: usize,
        w: &[f32],
        b: &[f32],
        b_dec: &[f32],
        a: bool,
        k: usize,
        theta: Option<&[f32]>,
    ) -> Vec<f64> {
        let n = b.len();
        let mut out = Vec::new();
        for row in x.chunks_exact(d) {
            let mut z: Vec<f64> = (0..n)
                .map(|j| {
                    let dot: f64 = (0..d)
                        .map(|i| {
                            let v = f64::from(row[i]) - if a { f64::from(b_dec[i]) } else { 0.0 };
                            v * f64::from(w[i * n + j])
                        })
                        .sum();
                    (dot + f64::from(b[j])).max(0.0)
                })
                .collect();
            let mut order: Vec<usize> = (0..n).collect();
            order.sort_by(|&i, &j| z[j].total_cmp(&z[i]));
            for &j in &order[k..] {
                z[j] = 0.0;
            }
            if let Some(theta) = theta {
                for (v, &t) in z.iter_mut().zip(theta) {
                    if *v <= f64::from(t) {
                        *v = 0.0;
                    }
                }
            }
            out.extend(z);
        }
        out
    }

    fn assert_close(got: &[f32], want: &[f64]) {
        let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        for (g, w) in got.iter().zip(want) {
            let err = (f64::from(*g) - w).abs();
            assert!(err <= 1e-5 * (w.abs() + scale), "{g} against {w}");
        }
    }

    #[test]
    fn exports_give_the_models_codes_and_reconstructions_on_raw_rows() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let (d, n, rows) = (12, 40, 30);
        for (arch, apply) in [
            (Arch::TopK, true),
            (Arch::TopK, false),
            (Arch::Relu, false),
            (Arch::Relu, true),
            (Arch::BatchTopK, true),
            (Arch::JumpRelu, false),
            (Arch::JumpRelu, true),
        ] {
            let mut sae = match arch {
                Arch::TopK => SaeConfig::topk(5, d),
                Arch::BatchTopK => SaeConfig::batchtopk(5, d),
                Arch::Relu => SaeConfig::relu(1.0, 0),
                Arch::JumpRelu => SaeConfig::jumprelu(1.0),
            };
            sae.input_scale = 0.3;
            sae.apply_b_dec_to_input = apply;
            let model = model(sae, d, n, &mut rng);
            let x: Vec<f32> = (0..rows * d).map(|_| rng.random_range(0.0..6.0)).collect();
            let data = Dataset::from_f32(x.clone(), d);
            let want_codes = model.encode(&data, 8);
            let k = if arch == Arch::TopK { sae.k } else { n };

            let lens = saelens(&model, &Provenance::default()).unwrap();
            let t = |name| &lens.tensor(name).unwrap().values;
            let theta = lens.tensor("threshold").map(|t| t.values.as_slice());
            assert_eq!(theta.is_some(), sae.threshold_tensor().is_some());
            let got = codes(&x, d, t("W_enc"), t("b_enc"), t("b_dec"), apply, k, theta);
            let fired = got.iter().filter(|&&v| v != 0.0).count();
            assert!(
                fired > 0 && fired < got.len(),
                "{fired} of {} fire",
                got.len()
            );
            let got32: Vec<f32> = got.iter().map(|&v| v as f32).collect();
            let want64: Vec<f64> = want_codes.iter().map(|&v| f64::from(v)).collect();
            assert_close(&got32, &want64);
            // Decoding the model's codes with the export gives its reconstructions.
            let recon = model.reconstruct(&data, 8);
            let mut decoded = Vec::new();
            for f in want_codes.chunks_exact(n) {
                for i in 0..d {
                    let sum: f64 = (0..n)
                        .map(|j| f64::from(f[j]) * f64::from(t("W_dec")[j * d + i]))
                        .sum();
                    decoded.push(sum + f64::from(t("b_dec")[i]));
                }
            }
            assert_close(&recon, &decoded);

            match sparsify(&model) {
                Ok(sp) => {
                    assert_eq!(arch, Arch::TopK);
                    let t = |name| &sp.tensor(name).unwrap().values;
                    let mut w = vec![0.0; d * n];
                    for j in 0..n {
                        for i in 0..d {
                            w[i * n + j] = t("encoder.weight")[j * d + i];
                        }
                    }
                    let got = codes(&x, d, &w, t("encoder.bias"), t("b_dec"), true, k, None);
                    let got32: Vec<f32> = got.iter().map(|&v| v as f32).collect();
                    assert_close(&got32, &want64);
                    assert_eq!(t("W_dec"), lens.tensor("W_dec").unwrap().values.as_slice());
                }
                Err(e) => {
                    assert_ne!(arch, Arch::TopK);
                    assert!(e.to_string().contains("only loads TopK"), "{e}");
                }
            }
        }
    }

    #[test]
    fn configs_name_what_the_loaders_read() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut sae = SaeConfig::topk(3, 4);
        sae.input_scale = 2.0;
        let model = model(sae, 4, 8, &mut rng);
        let provenance = Provenance {
            model_name: Some("gpt2".into()),
            hook_name: Some("blocks.8.hook_resid_pre".into()),
            context_size: Some(128),
        };
        let cfg: serde_json::Value =
            serde_json::from_str(&saelens(&model, &provenance).unwrap().cfg_json).unwrap();
        assert_eq!(cfg["architecture"], "topk");
        assert_eq!(cfg["k"], 3);
        assert_eq!(cfg["rescale_acts_by_decoder_norm"], false);
        assert_eq!(cfg["metadata"]["hook_name"], "blocks.8.hook_resid_pre");
        assert_eq!(cfg["metadata"]["context_size"], 128);
        let cfg: serde_json::Value =
            serde_json::from_str(&sparsify(&model).unwrap().cfg_json).unwrap();
        assert_eq!(cfg["num_latents"], 8);
        assert_eq!(cfg["expansion_factor"], 2);
        assert_eq!(cfg["normalize_decoder"], false);
    }
}
