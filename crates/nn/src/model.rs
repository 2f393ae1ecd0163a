//! The autoencoder: its layers, the forward pass in reusable buffers, and inference over
//! batches and whole datasets (encode, decode, reconstruct, evaluate).

use crate::config::ModelConfig;
use crate::dataset::Dataset;
use crate::error::ModelError;
use crate::layer::{glorot_uniform, Dense, DenseMut};
use crate::parallel::Threads;
use crate::params::{bias_name, weight_name, Parameters, Tensor};
use crate::step::StepPlan;
use crate::trainer::TRAINING_SPLIT_ROWS;
use kernels::activation::activation_forward;
use kernels::output::{output_stats, OutputStats};
use kernels::{GemmError, Layout, MatRef};
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
        }
    }

    /// The largest batch these buffers hold.
    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

/// Loss and accuracy of a model over a dataset, as Keras' `evaluate` reports them.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Evaluation {
    /// Reconstruction loss plus penalty, per batch, averaged weighted by batch size.
    pub loss: f64,
    /// Fraction of values where the rounded reconstruction equals the rounded input.
    pub rounded_accuracy: f64,
    /// Mean activation of the coding layer over all samples and units.
    pub mean_coding_activation: f64,
    /// Samples evaluated.
    pub samples: usize,
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
        for l in range.clone() {
            let layer = self.layer(l);
            let spec = layer.spec;
            let (before, rest) = acts.outputs.split_at_mut(l);
            let prev: &[f32] = if l == range.start {
                &input[..rows * spec.inputs]
            } else {
                &before[l - 1][..rows * spec.inputs]
            };
            let out = &mut rest[0][..rows * spec.units];
            let bias = layer.bias;
            let plan = &self.plan;
            let epilogue = |part: &mut [f32], _first: usize, part_rows: usize| {
                plan.forward_epilogue(l, part, part_rows, bias);
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

    /// Penalty of the coding activations of a batch (value only).
    pub(crate) fn penalty_value(&self, coding: &[f32], rows: usize, scratch: &mut [f32]) -> f64 {
        let layout = Layout::contiguous(rows, self.coding_width());
        self.config.penalty.value(layout, coding, scratch)
    }

    /// Loss statistics of one batch already run through [`Autoencoder::forward`]:
    /// `(output stats, penalty)`.
    pub(crate) fn batch_loss(
        &self,
        targets: &[f32],
        rows: usize,
        acts: &Activations,
        scratch: &mut [f32],
    ) -> (OutputStats, f64) {
        let width = self.input_width();
        let out = &acts.outputs[self.layer_count() - 1][..rows * width];
        // Under MSE the stored output is already activated, whatever the activation.
        let stats = output_stats(self.config.loss.kernel(), out, &targets[..rows * width]);
        let coding = &acts.outputs[self.config.coding_layer][..rows * self.coding_width()];
        (stats, self.penalty_value(coding, rows, scratch))
    }

    /// Loss, rounded accuracy and mean coding activation over `data`, in batches of
    /// `batch_size` (the last may be smaller), as Keras' `evaluate` computes them.
    pub fn evaluate(&self, data: &Dataset, batch_size: usize) -> Evaluation {
        self.evaluate_with(&Threads::sequential(), data, batch_size)
    }

    /// [`Autoencoder::evaluate`] with the batches shared out across `threads`: each takes a
    /// contiguous run of whole batches, so the batches are the same for any thread count.
    pub fn evaluate_with(
        &self,
        threads: &Threads,
        data: &Dataset,
        batch_size: usize,
    ) -> Evaluation {
        let batch_size = batch_size.max(1);
        let work = |range: Range<usize>| self.evaluate_range(data, range, batch_size);
        let (loss_sum, equal, coding_sum) =
            threads.split_range(data.len(), batch_size, &work, &|a, b| {
                (a.0 + b.0, a.1 + b.1, a.2 + b.2)
            });
        let n = data.len();
        if n == 0 {
            return Evaluation::default();
        }
        let width = self.input_width();
        Evaluation {
            loss: loss_sum / n as f64,
            rounded_accuracy: equal as f64 / (n * width) as f64,
            mean_coding_activation: coding_sum / (n * self.coding_width()) as f64,
            samples: n,
        }
    }

    /// `(loss sum, rounded-equal pixels, coding activation sum)` over the samples in
    /// `range`, in batches of `batch_size` from its start.
    fn evaluate_range(
        &self,
        data: &Dataset,
        range: Range<usize>,
        batch_size: usize,
    ) -> (f64, u64, f64) {
        let width = self.input_width();
        let mut acts = Activations::new(&self.config, batch_size);
        let mut x = vec![0.0; batch_size * width];
        let mut scratch = vec![0.0; self.plan.scratch_len()];
        let (mut loss_sum, mut equal, mut coding_sum) = (0.0f64, 0u64, 0.0f64);
        for start in range.clone().step_by(batch_size) {
            let rows = batch_size.min(range.end - start);
            data.gather_range(start..start + rows, &mut x[..rows * width]);
            self.forward(&x, rows, &mut acts);
            let (stats, penalty) = self.batch_loss(&x, rows, &acts, &mut scratch);
            loss_sum += self.plan.batch_loss(&stats, penalty, rows) * rows as f64;
            equal += stats.rounded_equal;
            coding_sum += kernels::reduce::sum(
                &acts.outputs[self.config.coding_layer][..rows * self.coding_width()],
            );
        }
        (loss_sum, equal, coding_sum)
    }

    /// The coding-layer activations of every sample of `data`, `len x coding_width`.
    pub fn encode(&self, data: &Dataset, batch_size: usize) -> Vec<f32> {
        self.encode_with(&Threads::sequential(), data, batch_size)
    }

    /// [`Autoencoder::encode`] with the batches shared out across `threads`.
    pub fn encode_with(&self, threads: &Threads, data: &Dataset, batch_size: usize) -> Vec<f32> {
        let coding = self.config.coding_layer;
        self.map_batches(
            threads,
            data,
            batch_size,
            0..coding + 1,
            self.coding_width(),
        )
    }

    /// Reconstructions of every sample of `data` (after the output activation),
    /// `len x input_width`.
    pub fn reconstruct(&self, data: &Dataset, batch_size: usize) -> Vec<f32> {
        self.reconstruct_with(&Threads::sequential(), data, batch_size)
    }

    /// [`Autoencoder::reconstruct`] with the batches shared out across `threads`.
    pub fn reconstruct_with(
        &self,
        threads: &Threads,
        data: &Dataset,
        batch_size: usize,
    ) -> Vec<f32> {
        let layers = 0..self.layer_count();
        let mut out = self.map_batches(threads, data, batch_size, layers, self.input_width());
        self.finish_output(&mut out);
        out
    }

    /// Applies the output activation that the forward buffers leave out under BCE (the
    /// sigmoid is fused into the loss there), turning stored logits into reconstructions.
    fn finish_output(&self, out: &mut [f32]) {
        let last = self.layer_count() - 1;
        let activation = self.config.layers[last].activation;
        if self.plan.layer(last).stored != activation {
            activation_forward(activation, out);
        }
    }

    /// Reconstructions from coding activations (`rows x coding_width`), `rows x input_width`.
    ///
    /// # Panics
    /// If `codings.len()` is not a multiple of the coding width.
    pub fn decode(&self, codings: &[f32]) -> Vec<f32> {
        let width = self.coding_width();
        assert_eq!(codings.len() % width, 0, "decode: ragged codings");
        let data = Dataset::from_f32(codings.to_vec(), width);
        let layers = self.config.coding_layer + 1..self.layer_count();
        let threads = Threads::sequential();
        let mut out = self.map_batches(&threads, &data, 256, layers, self.input_width());
        self.finish_output(&mut out);
        out
    }

    fn map_batches(
        &self,
        threads: &Threads,
        data: &Dataset,
        batch_size: usize,
        layers: Range<usize>,
        out_width: usize,
    ) -> Vec<f32> {
        let batch_size = batch_size.max(1);
        let work = |range: Range<usize>| {
            let in_width = data.features();
            let last = layers.end - 1;
            let mut acts = Activations::new(&self.config, batch_size);
            let mut x = vec![0.0; batch_size * in_width];
            let mut out = Vec::with_capacity(range.len() * out_width);
            for start in range.clone().step_by(batch_size) {
                let rows = batch_size.min(range.end - start);
                data.gather_range(start..start + rows, &mut x[..rows * in_width]);
                self.forward_range(layers.clone(), &x, rows, &mut acts);
                out.extend_from_slice(&acts.outputs[last][..rows * out_width]);
            }
            out
        };
        threads.split_range(data.len(), batch_size, &work, &|mut a, b| {
            a.extend_from_slice(&b);
            a
        })
    }
}
