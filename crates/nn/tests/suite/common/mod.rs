//! What the property tests share: random autoencoders (2 to 5 layers, the coding layer
//! at any hidden layer, plain or top-k, every activation, both losses, every penalty), with random
//! biases and a batch of inputs.

use nn::config::{Activation, Coding, LayerSpec, Loss, ModelConfig, Penalty};
use nn::Autoencoder;
use proptest::prelude::*;

/// A model to build and a batch to run through it.
#[derive(Debug, Clone)]
pub struct Case {
    pub config: ModelConfig,
    pub seed: u64,
    pub biases: Vec<f32>,
    pub rows: usize,
    pub x: Vec<f32>,
}

fn activation() -> impl Strategy<Value = Activation> {
    proptest::sample::select(
        &[
            Activation::Linear,
            Activation::Relu,
            Activation::Selu,
            Activation::Sigmoid,
        ][..],
    )
}

fn penalty() -> impl Strategy<Value = Penalty> {
    prop_oneof![
        (0.05f32..0.5, 0.01f32..1.0).prop_map(|(target, weight)| Penalty::Kl { target, weight }),
        (1e-3f32..0.1).prop_map(|weight| Penalty::L1 { weight }),
        (1e-3f32..0.5).prop_map(|weight| Penalty::L2 { weight }),
        (0.0f32..0.5, 0.01f32..2.0)
            .prop_map(|(target, weight)| Penalty::Squared { target, weight }),
        Just(Penalty::None),
    ]
}

pub fn case() -> impl Strategy<Value = Case> {
    (
        1usize..=20,
        proptest::collection::vec((1usize..=20, activation()), 1..=4),
        prop_oneof![Just(Loss::Bce), Just(Loss::Mse)],
        activation(),
        penalty(),
        any::<u64>(),
        1usize..=9,
        any::<prop::sample::Index>(),
        proptest::option::weighted(0.25, any::<prop::sample::Index>()),
    )
        .prop_flat_map(
            |(inputs, hidden, loss, out_act, penalty, seed, rows, coding, top_k)| {
                let mut layers = Vec::new();
                let mut width = inputs;
                for &(units, activation) in &hidden {
                    layers.push(LayerSpec {
                        inputs: width,
                        units,
                        activation,
                    });
                    width = units;
                }
                let output_activation = if loss == Loss::Bce {
                    Activation::Sigmoid
                } else {
                    out_act
                };
                layers.push(LayerSpec {
                    inputs: width,
                    units: inputs,
                    activation: output_activation,
                });
                let coding_layer = coding.index(hidden.len());
                // A top-k coding layer keeps 1 to all of its ReLU units.
                let coding = match top_k {
                    Some(k) => {
                        layers[coding_layer].activation = Activation::Relu;
                        Coding::TopK {
                            k: 1 + k.index(layers[coding_layer].units),
                        }
                    }
                    None => Coding::Plain,
                };
                let config = ModelConfig {
                    coding_layer,
                    layers,
                    coding,
                    penalty,
                    loss,
                    sae: None,
                };
                let bias_count: usize = config.layers.iter().map(|l| l.units).sum();
                (
                    Just(config),
                    Just(seed),
                    proptest::collection::vec(-0.5f32..0.5, bias_count),
                    Just(rows),
                    proptest::collection::vec(0.0f32..=1.0, rows * inputs),
                )
            },
        )
        .prop_map(|(config, seed, biases, rows, x)| Case {
            config,
            seed,
            biases,
            rows,
            x,
        })
}

pub fn build(case: &Case) -> Autoencoder {
    let mut model = Autoencoder::new(case.config.clone(), case.seed).unwrap();
    let mut biases = case.biases.iter();
    for l in 0..model.layer_count() {
        for b in model.layer_mut(l).bias.iter_mut() {
            *b = *biases.next().unwrap();
        }
    }
    model
}
