//! The forked step: one training step whose products are each split across the
//! threads (by rows, by columns, or by halves of a layer's inputs) and joined again,
//! for every configuration the team does not run: other optimizers than plain SGD,
//! batches over 1024 rows, models with an odd number of layers or with parameters
//! beyond their dense layers. It is also the reference step: `loss_and_gradients`
//! runs it on one thread to give the gradients the property tests check.

use crate::dataset::Dataset;
use crate::model::{Activations, Autoencoder};
use crate::optimizer::{Optimizer, OptimizerState};
use crate::parallel::Threads;
use crate::params::Parameters;
use kernels::output::OutputStats;
use kernels::reduce::column_sums;
use kernels::{Layout, MatMut, MatRef};
use std::ops::Range;

/// Optimizers other than plain SGD run the forward products of wide-input layers of
/// batches up to this many rows as two halves over the inputs
/// ([`Autoencoder::forward_training`]); larger batches split products by rows.
pub(crate) const TRAINING_SPLIT_ROWS: usize = 64;

/// The loss's gradient with respect to every parameter, under the parameters' names
/// and shapes.
pub type Gradients = Parameters;

/// Where a backward pass sends each layer's parameter gradient.
enum Update<'a> {
    /// Apply `W <- W - lr dW`, `b <- b - lr db` inside the GEMM and column sum.
    FusedSgd(f32),
    /// Store `dW`, `db`.
    Collect(&'a mut Gradients),
}

/// Buffers of one training step, sized for the largest batch (none when a team trains:
/// then only `order` is used).
pub(super) struct Workspace {
    acts: Activations,
    grads: Vec<Vec<f32>>,
    x: Vec<f32>,
    /// The second half of a forward product (see [`Autoencoder::forward_training`]).
    partial: Vec<f32>,
    scratch: Vec<f32>,
    param_grads: Gradients,
    /// The epoch's order of the samples.
    pub(super) order: Vec<usize>,
    /// How that order reads the file.
    pub(super) plan: crate::dataset::ReadPlan,
}

impl Workspace {
    pub(super) fn new(model: &Autoencoder, batch: usize, collect: bool) -> Self {
        let config = model.config();
        let widest = config.layers.iter().map(|l| l.units).max().unwrap_or(0);
        Self {
            acts: Activations::new(config, batch),
            grads: config
                .layers
                .iter()
                .map(|l| vec![0.0; batch * l.units])
                .collect(),
            x: vec![0.0; batch * model.input_width()],
            partial: vec![0.0; batch.min(TRAINING_SPLIT_ROWS) * widest],
            scratch: vec![0.0; model.plan().scratch_len()],
            param_grads: if collect {
                model.parameters().zeros_like()
            } else {
                Parameters::default()
            },
            order: Vec::new(),
            plan: crate::dataset::ReadPlan::default(),
        }
    }

    /// Trains one step on the samples at positions `batch` of `self.order`, and has
    /// those at positions `next` (the next step's) on their way into cache.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn step(
        &mut self,
        threads: &Threads,
        model: &mut Autoencoder,
        train: &Dataset,
        batch: Range<usize>,
        next: Range<usize>,
        optimizer: &Optimizer,
        state: &mut OptimizerState,
    ) -> (OutputStats, f64) {
        let width = model.input_width();
        let (start, rows) = (batch.start, batch.len());
        let work = self;
        // Each thread converts the input columns its half of the first layer reads.
        let order = &work.order[start..start + rows];
        let x = MatMut::row_major(&mut work.x[..rows * width], rows, width).expect("sized");
        threads.column_runs(x, &|columns, part| {
            train.gather_columns(order, columns, part)
        });
        train.prefetch(&work.order[next]);
        model.forward_training(threads, &work.x, rows, &mut work.acts, &mut work.partial);
        let plain_sgd = optimizer.is_plain_sgd();
        let update = if plain_sgd {
            Update::FusedSgd(optimizer.learning_rate())
        } else {
            Update::Collect(&mut work.param_grads)
        };
        let (stats, penalty) = backward(
            threads,
            model,
            Batch { x: &work.x, rows },
            &work.acts,
            &mut work.grads,
            &mut work.scratch,
            update,
        );
        if !plain_sgd {
            state.advance();
            let params = model.parameters_mut().iter_mut();
            for (slot, (param, grad)) in params.zip(work.param_grads.iter()).enumerate() {
                state.apply(optimizer, slot, &grad.values, &mut param.values);
            }
        }
        (stats, penalty)
    }
}

/// A batch of `rows` samples `x`, row after row.
#[derive(Clone, Copy)]
struct Batch<'a> {
    x: &'a [f32],
    rows: usize,
}

/// The backward pass of one batch already run forward into `acts`; returns the output
/// statistics and the penalty value.
fn backward(
    threads: &Threads,
    model: &mut Autoencoder,
    Batch { x, rows }: Batch<'_>,
    acts: &Activations,
    grads: &mut [Vec<f32>],
    scratch: &mut [f32],
    mut update: Update<'_>,
) -> (OutputStats, f64) {
    let width = model.input_width();
    let last = model.layer_count() - 1;
    let plan = model.plan();
    let out = &acts.outputs[last][..rows * width];
    let stats = threads.output_step(
        out,
        &x[..rows * width],
        &mut grads[last][..rows * width],
        width,
        &|z, targets, dz| plan.output_step(z, targets, dz, rows, width),
    );

    let mut penalty = 0.0;
    for l in (0..=last).rev() {
        let plan = model.plan();
        let spec = model.config().layers[l];
        let (lower, upper) = grads.split_at_mut(l);
        let dz = &upper[0][..rows * spec.units];
        let dz_view = MatRef::row_major(dz, rows, spec.units).expect("sized");
        let input: &[f32] = if l == 0 {
            &x[..rows * spec.inputs]
        } else {
            &acts.outputs[l - 1][..rows * spec.inputs]
        };
        let input_t = MatRef::row_major(input, rows, spec.inputs)
            .expect("sized")
            .t();

        let dz_layout = Layout::contiguous(rows, spec.units);
        // Where the layer below turns its input gradient into dZ row by row, each thread
        // does so with the rows of dA it has just computed; otherwise after the product.
        let below_by_rows = l > 0 && !plan.to_dz_needs_whole_batch(l - 1);
        if l > 0 {
            // dA of the layer below, with this layer's weights before their update,
            // split by batch rows (or columns).
            let a = &acts.outputs[l - 1][..rows * spec.inputs];
            let inputs = spec.inputs;
            let to_dz = |da: &mut [f32], first: usize, count: usize| {
                if below_by_rows {
                    let a = &a[first * inputs..(first + count) * inputs];
                    plan.to_dz(l - 1, a, da, count, inputs, &mut []);
                }
            };
            threads
                .product_then(
                    dz,
                    model.layer(l).weight_view().t(),
                    &mut lower[l - 1][..rows * inputs],
                    rows,
                    &to_dz,
                )
                .expect("shapes chain");
        }
        match &mut update {
            Update::FusedSgd(lr) => {
                let layer = model.layer_mut(l);
                let w = MatMut::row_major(layer.weight, spec.inputs, spec.units).expect("sized");
                threads
                    .gemm(-*lr, input_t, dz_view, 1.0, w)
                    .expect("shapes chain");
                column_sums(dz_layout, dz, -*lr, 1.0, layer.bias);
            }
            Update::Collect(g) => {
                let (weight, bias) = model.layer_tensor_positions(l);
                let (dw, db) = g.pair_mut(weight, bias);
                let w = MatMut::row_major(dw, spec.inputs, spec.units).expect("sized");
                threads
                    .gemm(1.0, input_t, dz_view, 0.0, w)
                    .expect("shapes chain");
                column_sums(dz_layout, dz, 1.0, 0.0, db);
            }
        }

        if l > 0 && !below_by_rows {
            let a = &acts.outputs[l - 1][..rows * spec.inputs];
            let da = &mut lower[l - 1][..rows * spec.inputs];
            penalty += model.plan().to_dz(l - 1, a, da, rows, spec.inputs, scratch);
        }
    }
    (stats, penalty)
}

/// The total loss (mean reconstruction loss + penalty) of `rows` samples `x` and its
/// gradient with respect to every parameter, leaving the model unchanged.
pub fn loss_and_gradients(model: &Autoencoder, x: &[f32], rows: usize) -> (f64, Gradients) {
    let mut work = Workspace::new(model, rows.max(1), true);
    let mut scratch_model = model.clone();
    scratch_model.forward(x, rows, &mut work.acts);
    let (stats, penalty) = backward(
        &Threads::sequential(),
        &mut scratch_model,
        Batch { x, rows },
        &work.acts,
        &mut work.grads,
        &mut work.scratch,
        Update::Collect(&mut work.param_grads),
    );
    let loss = model.plan().batch_loss(&stats, penalty, rows);
    (loss, work.param_grads)
}
