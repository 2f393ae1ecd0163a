//! A dense layer: `a = act(x W + b)` with `W` stored `[inputs, units]` row-major, as a
//! Keras kernel, so the forward product is `X W` with no transpose. Its two tensors
//! live in the model's [`crate::params::Parameters`]; [`Dense`] and [`DenseMut`] are
//! views of them.

use crate::config::LayerSpec;
use rand::Rng;

/// One dense layer's weights and biases, borrowed from the model.
#[derive(Clone, Copy, Debug)]
pub struct Dense<'a> {
    /// Shape and activation.
    pub spec: LayerSpec,
    /// `[inputs, units]` row-major.
    pub weight: &'a [f32],
    /// `[units]`.
    pub bias: &'a [f32],
}

impl<'a> Dense<'a> {
    /// Row-major `[inputs, units]` view of the weights for the GEMM.
    pub fn weight_view(&self) -> kernels::MatRef<'a> {
        kernels::MatRef::row_major(self.weight, self.spec.inputs, self.spec.units)
            .expect("weight length matches its spec")
    }
}

/// One dense layer's weights and biases, borrowed mutably from the model.
#[derive(Debug)]
pub struct DenseMut<'a> {
    /// Shape and activation.
    pub spec: LayerSpec,
    /// `[inputs, units]` row-major.
    pub weight: &'a mut [f32],
    /// `[units]`.
    pub bias: &'a mut [f32],
}

/// Glorot-uniform weights, `U(-l, l)` with `l = sqrt(6 / (fan_in + fan_out))`, and zero
/// biases: Keras' default initialisers, which it uses for SELU layers too. Returns
/// `(weight, bias)`.
pub fn glorot_uniform(spec: LayerSpec, rng: &mut impl Rng) -> (Vec<f32>, Vec<f32>) {
    let limit = (6.0 / (spec.inputs + spec.units) as f64).sqrt() as f32;
    let weight = (0..spec.inputs * spec.units)
        .map(|_| rng.random_range(-limit..limit))
        .collect();
    (weight, vec![0.0; spec.units])
}
