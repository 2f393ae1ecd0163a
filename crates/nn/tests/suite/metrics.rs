//! The evaluation's metrics against their definitions, computed here directly from
//! `encode` and `reconstruct`.

use nn::config::{Activation, Loss, ModelConfig, Penalty};
use nn::parallel::Threads;
use nn::{Autoencoder, Dataset};

fn rows(n: usize, width: usize) -> Vec<f32> {
    // Unbounded values, with an offset per column so the mean row is not zero.
    (0..n * width)
        .map(|i| ((i * 7919 % 1013) as f32 / 101.3 - 5.0) * 0.7 + (i % width) as f32 * 0.3)
        .collect()
}

#[test]
fn fvu_l0_and_dead_latents_follow_their_definitions() {
    let width = 12;
    let config = ModelConfig::autoencoder(
        width,
        &[(9, Activation::Relu)],
        None,
        Penalty::L1 { weight: 1e-3 },
        Loss::Mse,
    );
    let model = Autoencoder::new(config, 11).unwrap();
    let n = 45;
    let data = Dataset::from_f32(rows(n, width), width);
    let x = rows(n, width);
    let codes = model.encode(&data, 8);
    let out = model.reconstruct(&data, 8);

    let mean: Vec<f64> = (0..width)
        .map(|j| (0..n).map(|i| f64::from(x[i * width + j])).sum::<f64>() / n as f64)
        .collect();
    let (mut error, mut centred) = (0.0f64, 0.0f64);
    for i in 0..n {
        for j in 0..width {
            let v = f64::from(x[i * width + j]);
            error += (f64::from(out[i * width + j]) - v).powi(2);
            centred += (v - mean[j]).powi(2);
        }
    }
    let units = model.coding_width();
    let active = codes.iter().filter(|&&a| a > 0.0).count();
    let dead = (0..units)
        .filter(|&u| (0..n).all(|i| codes[i * units + u] <= 0.0))
        .count();
    let above_half = (0..units)
        .filter(|&u| (0..n).all(|i| codes[i * units + u] <= 0.5))
        .count();

    for threads in 1..=3 {
        let e = model.evaluate_with(&Threads::new(threads).unwrap(), &data, 8);
        let what = format!("{threads} threads");
        // The squared error is the output kernel's loss sum, accumulated in f32 lanes.
        let (fvu, got_mse) = (e.fvu.unwrap(), e.mse.unwrap());
        assert!(
            (fvu - error / centred).abs() <= 1e-5 * fvu,
            "{what}: fvu {fvu}"
        );
        assert!(fvu > 0.0 && fvu.is_finite(), "{what}");
        let mse = error / (n * width) as f64;
        assert!((got_mse - mse).abs() <= 1e-5 * mse, "{what}: mse {got_mse}");
        assert_eq!(e.l0, active as f64 / n as f64, "{what}");
        assert_eq!(e.dead_latents, dead, "{what}");
        assert_eq!(e.never_above_half, above_half, "{what}");
        assert_eq!(e.samples, n);
    }
}

#[test]
fn a_bce_model_skips_the_reconstruction_statistics() {
    let config = ModelConfig::autoencoder(
        4,
        &[(3, Activation::Sigmoid)],
        None,
        Penalty::None,
        Loss::Bce,
    );
    let model = Autoencoder::new(config, 2).unwrap();
    let data = Dataset::from_f32(vec![0.25; 40], 4);
    let e = model.evaluate(&data, 3);
    assert_eq!((e.mse, e.fvu), (None, None));
    assert_eq!(e.l0, 3.0, "a sigmoid is always above 0");
}

#[test]
fn a_perfect_reconstruction_explains_all_variance_and_a_silent_code_is_all_dead() {
    // One linear layer each way, weights the identity: x^ = x exactly.
    let width = 6;
    let config = ModelConfig::autoencoder(
        width,
        &[(width, Activation::Linear)],
        None,
        Penalty::None,
        Loss::Mse,
    );
    let mut model = Autoencoder::new(config, 1).unwrap();
    for l in 0..2 {
        let layer = model.layer_mut(l);
        layer.weight.fill(0.0);
        for j in 0..width {
            layer.weight[j * width + j] = 1.0;
        }
    }
    let data = Dataset::from_f32(
        rows(20, width).iter().map(|v| v.abs() + 1.0).collect(),
        width,
    );
    let e = model.evaluate(&data, 7);
    assert_eq!(e.fvu, Some(0.0));
    assert_eq!(e.mse, Some(0.0));
    assert_eq!(e.l0, width as f64, "every code is positive");
    assert_eq!(e.dead_latents, 0);

    // Zero encoder: every code is 0, so every latent is dead and the reconstruction is
    // the decoder's bias (zero): the unexplained variance exceeds the variance.
    model.layer_mut(0).weight.fill(0.0);
    let e = model.evaluate(&data, 7);
    assert_eq!(e.l0, 0.0);
    assert_eq!(e.dead_latents, width);
    assert!(e.fvu.unwrap() > 1.0, "{:?}", e.fvu);
}
