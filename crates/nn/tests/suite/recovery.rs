//! A top-k autoencoder trained on rows built from known sparse features finds them: the
//! synthetic check of the sparse-autoencoder literature.

use nn::config::{Activation, Coding, Loss, ModelConfig, Penalty};
use nn::synthetic::{recovery, superposition, SuperpositionSpec};
use nn::{Autoencoder, Dataset, Optimizer, TrainConfig, Trainer};

/// 48 unit features in 32 dimensions, about 3 active a row: the rows every test learns.
const SPEC: SuperpositionSpec = SuperpositionSpec {
    dim: 32,
    features: 48,
    rows: 24_000,
    active: 3.0,
    noise: 0.01,
    seed: 3,
};

/// Twice the features.
const LATENTS: usize = 96;

#[test]
fn a_top_k_autoencoder_recovers_the_features_of_synthetic_rows() {
    let (spec, latents) = (SPEC, LATENTS);
    let truth = superposition(spec);
    let data = Dataset::from_f32(truth.rows.clone(), spec.dim);
    let (train, valid) = data.split_tail(2000).unwrap();
    let mut config = ModelConfig::autoencoder(
        spec.dim,
        &[(latents, Activation::Relu)],
        None,
        Penalty::None,
        Loss::Mse,
    );
    config.coding = Coding::TopK { k: 4 };
    let model = Autoencoder::new(config, 1).unwrap();
    let before = recovery(&truth.features, model.layer(1).weight, spec.dim);
    let settings = TrainConfig {
        epochs: 8,
        batch_size: 64,
        shuffle: true,
        shuffle_window_bytes: None,
        seed: 1,
        optimizer: Optimizer::adam(2e-3),
        threads: 2,
    };
    let mut trainer = Trainer::new(model, settings).unwrap();
    let history = trainer.fit(&train, Some(&valid), &mut ()).unwrap().to_vec();
    let last = history.last().unwrap();
    let decoder = trainer.model().layer(1).weight.to_vec();
    let found = recovery(&truth.features, &decoder, spec.dim);
    eprintln!(
        "fvu {:?}, l0 {:?}, dead {:?}, recovery {before:.4} before, {found:.4} after",
        last.fvu, last.l0, last.dead_latents
    );
    // Measured on an AVX-512 machine: FVU 0.068, recovery 0.43 at initialisation and
    // 0.9986 after; the bounds leave room for another instruction set's rounding.
    assert!(last.l0.unwrap() <= 4.0);
    assert!(last.fvu.unwrap() < 0.1, "{:?}", last.fvu);
    assert!(before < 0.7, "{before}");
    assert!(found > 0.95, "{found}");
}

/// Trains an SAE of `arch` on the synthetic rows; returns `(fvu, l0, dead, recovery)`.
fn train_sae(sae: nn::sae::SaeConfig, epochs: usize) -> (f64, f64, usize, f64) {
    let (spec, latents) = (SPEC, LATENTS);
    let truth = superposition(spec);
    let data = Dataset::from_f32(truth.rows.clone(), spec.dim);
    let (train, valid) = data.split_tail(2000).unwrap();
    let sample = &truth.rows[..4096 * spec.dim];
    let sae = nn::sae::SaeConfig {
        input_scale: nn::sae::input_scale(sample, spec.dim),
        ..sae
    };
    let config = ModelConfig::sae(spec.dim, latents, sae);
    let model = Autoencoder::new_sae(config, 1, sample).unwrap();
    let settings = TrainConfig {
        epochs,
        batch_size: 64,
        shuffle: true,
        shuffle_window_bytes: None,
        seed: 1,
        optimizer: Optimizer::adam(2e-4 * (16384.0f32 / latents as f32).sqrt()),
        threads: 2,
    };
    let mut trainer = Trainer::new(model, settings).unwrap();
    assert_eq!(trainer.engine(), nn::Engine::Sparse);
    let history = trainer.fit(&train, Some(&valid), &mut ()).unwrap().to_vec();
    let last = history.last().unwrap();
    let found = recovery(&truth.features, trainer.model().layer(1).weight, spec.dim);
    let result = (
        last.fvu.unwrap(),
        last.l0.unwrap(),
        last.dead_latents.unwrap(),
        found,
    );
    eprintln!("{:?}: fvu, l0, dead, recovery = {result:?}", sae.arch);
    result
}

#[test]
fn a_topk_sae_recovers_the_features_of_synthetic_rows() {
    let mut sae = nn::sae::SaeConfig::topk(4, 32);
    sae.lr_warmup_steps = 100;
    sae.dead_after_rows = 20_000;
    let (fvu, l0, _, found) = train_sae(sae, 6);
    assert!(l0 <= 4.0);
    assert!(fvu < 0.1, "{fvu}");
    assert!(found > 0.95, "{found}");
}

#[test]
fn a_relu_sae_recovers_the_features_of_synthetic_rows() {
    let mut sae = nn::sae::SaeConfig::relu(0.5, 200);
    sae.lr_warmup_steps = 100;
    let (fvu, l0, _, found) = train_sae(sae, 6);
    assert!(fvu < 0.2, "{fvu}");
    assert!(l0 < 20.0, "{l0}");
    assert!(found > 0.9, "{found}");
}

#[test]
fn a_batchtopk_sae_recovers_the_features_and_infers_with_its_threshold() {
    let mut sae = nn::sae::SaeConfig::batchtopk(4, 32);
    sae.lr_warmup_steps = 100;
    sae.dead_after_rows = 20_000;
    let (fvu, l0, _, found) = train_sae(sae, 6);
    // Inference keeps what exceeds the running threshold: about k a row, not exactly.
    assert!(l0 > 2.0 && l0 < 6.0, "{l0}");
    assert!(fvu < 0.1, "{fvu}");
    assert!(found > 0.95, "{found}");
}

#[test]
fn a_jumprelu_sae_recovers_the_features_of_synthetic_rows() {
    // Thresholds learn slowly from SAELens' 0.01 on rows of this scale (codes near 1;
    // at 0.01 the L0 stayed at 94 of 96 after 2000 steps): start them at 0.5 with a
    // kernel as wide, as `--initial-threshold` and `--bandwidth` allow.
    let mut sae = nn::sae::SaeConfig::jumprelu(1.0);
    sae.lr_warmup_steps = 100;
    sae.initial_threshold = 0.5;
    sae.bandwidth = 0.5;
    let (fvu, l0, _, found) = train_sae(sae, 6);
    // Measured: FVU 0.069, L0 2.27, recovery 0.998.
    assert!(fvu < 0.1, "{fvu}");
    assert!(l0 < 4.0, "{l0}");
    assert!(found > 0.95, "{found}");
}
