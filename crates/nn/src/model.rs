//! The autoencoder: its named parameters, its dense layers as views of them, and the
//! forward pass in reusable buffers. Inference over whole datasets is in
//! [`crate::inference`].

use crate::config::ModelConfig;
use crate::error::ModelError;
pub use crate::inference::Evaluation;
use crate::layer::{glorot_uniform, Dense, DenseMut};
use crate::parallel::Threads;
use crate::params::{bias_name, weight_name, Parameters, Tensor};
use crate::step::StepPlan;
use crate::trainer::TRAINING_SPLIT_ROWS;
use kernels::{GemmError, MatRef};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::ops::Range;

/// A training batch's forward product runs as two halves over the layer's input units
/// (see [`Autoencoder::forward_training`]) when the layer has at least this many inputs
/// per row of the batch.
const HALVES_FROM_INPUTS_PER_ROW: usize = 4;

/// A dense autoencoder.
#[derive(Clone, Debug, PartialEq)]
pub struct Autoencoder {
    config: ModelConfig,
    /// The step's arithmetic for `config`, derived once.
    plan: StepPlan,
    params: Parameters,
    /// Positions in `params` of each dense layer's weight and bias, found by name once.
    layer_tensors: Vec<(usize, usize)>,
}

/// One buffer per layer for a batch of up to `capacity` samples, allocated once.
#[derive(Clone, Debug)]
pub struct Activations {
    capacity: usize,
    /// Layer outputs, `capacity x units` each. The output layer holds logits when the
    /// loss is BCE (the sigmoid is fused into the loss).
    pub outputs: Vec<Vec<f32>>,
    /// A sparse autoencoder's prepared input (`s x - b_dec`); empty for other models.
    sae_input: Vec<f32>,
    /// A sparse autoencoder's per-latent thresholds, where its coding layer has them.
    sae_thresholds: Vec<f32>,
}

impl Activations {
    /// Buffers for `config`'s layers and batches of up to `capacity` samples.
    pub fn new(config: &ModelConfig, capacity: usize) -> Self {
        Self {
            capacity,
            outputs: config
                .layers
                .iter()
                .map(|l| vec![0.0; capacity * l.units])
                .collect(),
            sae_input: match config.sae {
                Some(_) => vec![0.0; capacity * config.input_width()],
                None => Vec::new(),
            },
            sae_thresholds: match config.sae {
                Some(_) => vec![0.0; config.coding_width()],
                None => Vec::new(),
            },
        }
    }

    /// The largest batch these buffers hold.
    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

impl Autoencoder {
    /// A freshly initialised model (Glorot-uniform weights from `seed`, zero biases).
    pub fn new(config: ModelConfig, seed: u64) -> Result<Self, ModelError> {
        config.validate()?;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        // Stream 0 initialises; streams from 1 shuffle epochs (see `dataset::shuffle_rng`).
        rng.set_stream(0);
        let mut tensors = Vec::new();
        for (l, &spec) in config.layers.iter().enumerate() {
            let (weight, bias) = glorot_uniform(spec, &mut rng);
            tensors.push(Tensor::new(
                weight_name(l),
                vec![spec.inputs, spec.units],
                weight,
            ));
            tensors.push(Tensor::new(bias_name(l), vec![spec.units], bias));
        }
        let params = Parameters::new(tensors).map_err(ModelError::Invalid)?;
        Self::from_parameters(config, params)
    }

    /// A model of `config` holding `params`: exactly the tensors
    /// [`ModelConfig::parameter_specs`] names, with those shapes, in any order.
    pub fn from_parameters(config: ModelConfig, params: Parameters) -> Result<Self, ModelError> {
        config.validate()?;
        let specs = config.parameter_specs();
        for (name, shape) in &specs {
            let tensor = params
                .get(name)
                .ok_or_else(|| ModelError::Invalid(format!("the model has no tensor {name}")))?;
            if tensor.shape() != shape.as_slice() {
                return Err(ModelError::Invalid(format!(
                    "tensor {name} has shape {:?} but the config says {shape:?}",
                    tensor.shape()
                )));
            }
        }
        if let Some(extra) = params
            .iter()
            .find(|t| !specs.iter().any(|(name, _)| name == t.name()))
        {
            return Err(ModelError::Invalid(format!(
                "tensor {} is not a parameter of this architecture",
                extra.name()
            )));
        }
        let layer_tensors = (0..config.layers.len())
            .map(|l| {
                let at = |name: String| params.position(&name).expect("checked above");
                (at(weight_name(l)), at(bias_name(l)))
            })
            .collect();
        let plan = StepPlan::new(&config);
        Ok(Self {
            config,
            plan,
            params,
            layer_tensors,
        })
    }

    /// The architecture.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// Every parameter, named, in order.
    pub fn parameters(&self) -> &Parameters {
        &self.params
    }

    /// Every parameter, values mutable (for optimizers). Shapes must not change.
    pub fn parameters_mut(&mut self) -> &mut Parameters {
        &mut self.params
    }

    /// The number of dense layers.
    pub fn layer_count(&self) -> usize {
        self.layer_tensors.len()
    }

    /// Dense layer `l`, from the input.
    ///
    /// # Panics
    /// If there is no layer `l`.
    pub fn layer(&self, l: usize) -> Dense<'_> {
        let (weight, bias) = self.layer_tensors[l];
        Dense {
            spec: self.config.layers[l],
            weight: &self.params.at(weight).values,
            bias: &self.params.at(bias).values,
        }
    }

    /// The dense layers, from the input.
    pub fn layers(&self) -> impl ExactSizeIterator<Item = Dense<'_>> + '_ {
        (0..self.layer_count()).map(|l| self.layer(l))
    }

    /// Dense layer `l`, mutable.
    ///
    /// # Panics
    /// If there is no layer `l`.
    pub fn layer_mut(&mut self, l: usize) -> DenseMut<'_> {
        let (weight, bias) = self.layer_tensors[l];
        let (weight, bias) = self.params.pair_mut(weight, bias);
        DenseMut {
            spec: self.config.layers[l],
            weight,
            bias,
        }
    }

    /// Where layer `l`'s weight and bias stand in [`Autoencoder::parameters`].
    pub(crate) fn layer_tensor_positions(&self, l: usize) -> (usize, usize) {
        self.layer_tensors[l]
    }

    /// Input width.
    pub fn input_width(&self) -> usize {
        self.config.input_width()
    }

    /// Coding width.
    pub fn coding_width(&self) -> usize {
        self.config.coding_width()
    }

    /// The arithmetic of a training step of this architecture.
    pub(crate) fn plan(&self) -> &StepPlan {
        &self.plan
    }

    /// Runs layers `range` on `rows` samples of `input` (`rows x layers[range.start].inputs`),
    /// writing each layer's output into `acts`.
    ///
    /// # Panics
    /// If `rows` exceeds the buffers' capacity or `input` is too short.
    pub fn forward_range(
        &self,
        range: Range<usize>,
        input: &[f32],
        rows: usize,
        acts: &mut Activations,
    ) {
        self.forward_range_with(&Threads::sequential(), range, input, rows, acts);
    }

    /// [`Autoencoder::forward_range`] with the products split across `threads`.
    pub fn forward_range_with(
        &self,
        threads: &Threads,
        range: Range<usize>,
        input: &[f32],
        rows: usize,
        acts: &mut Activations,
    ) {
        self.forward_layers(range, input, rows, acts, |prev, weight, out, epilogue| {
            threads.product_then(prev, weight, out, rows, epilogue)
        });
    }

    /// The forward pass of a training batch: up to [`TRAINING_SPLIT_ROWS`] rows, the
    /// products of layers with many inputs as two halves over them
    /// ([`Threads::product_by_input_halves`], `partial` holding the second), so that
    /// each thread reads only the weights it updates; larger batches as
    /// [`Autoencoder::forward_with`]. The split depends on the shapes only, never on the
    /// thread count.
    ///
    /// # Panics
    /// If `partial` is shorter than `rows` times the widest layer.
    pub(crate) fn forward_training(
        &self,
        threads: &Threads,
        input: &[f32],
        rows: usize,
        acts: &mut Activations,
        partial: &mut [f32],
    ) {
        if rows > TRAINING_SPLIT_ROWS {
            return self.forward_with(threads, input, rows, acts);
        }
        self.forward_layers(
            0..self.layer_count(),
            input,
            rows,
            acts,
            |prev, weight, out, epilogue| {
                // Halves trade the weights each thread would read from the other's cache
                // (a quarter to a half of them) for the partial sums (`rows x units`): a
                // gain where a layer has many more inputs than the batch has rows.
                if weight.rows() >= HALVES_FROM_INPUTS_PER_ROW * rows {
                    threads.product_by_input_halves(prev, weight, out, partial, rows, epilogue)
                } else {
                    threads.product_then(prev, weight, out, rows, epilogue)
                }
            },
        );
    }

    /// Runs layers `range`, each through `product(input, weights, output, epilogue)`,
    /// which must compute `output = input weights` and apply `epilogue` (bias and
    /// activation) to its rows.
    fn forward_layers(
        &self,
        range: Range<usize>,
        input: &[f32],
        rows: usize,
        acts: &mut Activations,
        mut product: impl FnMut(
            &[f32],
            MatRef<'_>,
            &mut [f32],
            &(dyn Fn(&mut [f32], usize, usize) + Sync),
        ) -> Result<(), GemmError>,
    ) {
        assert!(
            rows <= acts.capacity,
            "batch of {rows} exceeds buffers of {}",
            acts.capacity
        );
        if let Some(sae) = &self.config.sae {
            sae.thresholds(&self.params, &mut acts.sae_thresholds);
        }
        for l in range.clone() {
            let layer = self.layer(l);
            let spec = layer.spec;
            let (before, rest) = acts.outputs.split_at_mut(l);
            let prev: &[f32] = if l == range.start {
                let input = &input[..rows * spec.inputs];
                match &self.config.sae {
                    Some(sae) if l == 0 => {
                        // An SAE encodes the scaled row, less b_dec where it says so.
                        let prepared = &mut acts.sae_input[..input.len()];
                        let b_dec = self.layer(1).bias;
                        for ((p, &v), &b) in
                            prepared.iter_mut().zip(input).zip(b_dec.iter().cycle())
                        {
                            *p = v * sae.input_scale;
                            if sae.apply_b_dec_to_input {
                                *p -= b;
                            }
                        }
                        prepared
                    }
                    _ => input,
                }
            } else {
                &before[l - 1][..rows * spec.inputs]
            };
            let out = &mut rest[0][..rows * spec.units];
            let bias = layer.bias;
            let plan = &self.plan;
            let thresholds = &acts.sae_thresholds;
            let epilogue = |part: &mut [f32], _first: usize, part_rows: usize| {
                plan.forward_epilogue_with(l, part, part_rows, bias, thresholds);
            };
            product(prev, layer.weight_view(), out, &epilogue).expect("shapes chain");
        }
    }

    /// The full forward pass of `rows` samples.
    pub fn forward(&self, input: &[f32], rows: usize, acts: &mut Activations) {
        self.forward_range(0..self.layer_count(), input, rows, acts);
    }

    /// [`Autoencoder::forward`] with the products split across `threads`.
    pub fn forward_with(
        &self,
        threads: &Threads,
        input: &[f32],
        rows: usize,
        acts: &mut Activations,
    ) {
        self.forward_range_with(threads, 0..self.layer_count(), input, rows, acts);
    }
}
