//! A dense layer: `a = act(x W + b)` with `W` stored `[inputs, units]` row-major, as a
//! Keras kernel, so the forward product is `X W` with no transpose.

use crate::config::LayerSpec;
use rand::Rng;

/// Weights and biases of one dense layer.
#[derive(Clone, Debug, PartialEq)]
pub struct Dense {
    /// Shape and activation.
    pub spec: LayerSpec,
    /// `[inputs, units]` row-major.
    pub weight: Vec<f32>,
    /// `[units]`.
    pub bias: Vec<f32>,
}

impl Dense {
    /// Glorot-uniform weights, `U(-l, l)` with `l = sqrt(6 / (fan_in + fan_out))`, and
    /// zero biases: Keras' default initialisers, which it uses for SELU layers too.
    pub fn glorot_uniform(spec: LayerSpec, rng: &mut impl Rng) -> Self {
        let limit = (6.0 / (spec.inputs + spec.units) as f64).sqrt() as f32;
        let weight = (0..spec.inputs * spec.units)
            .map(|_| rng.random_range(-limit..limit))
            .collect();
        Self {
            spec,
            weight,
            bias: vec![0.0; spec.units],
        }
    }

    /// Row-major `[inputs, units]` view of the weights for the GEMM.
    pub fn weight_view(&self) -> kernels::MatRef<'_> {
        kernels::MatRef::row_major(&self.weight, self.spec.inputs, self.spec.units)
            .expect("weight length matches its spec")
    }
}
