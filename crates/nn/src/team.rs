//! A training epoch of plain SGD run by a team of threads that each own a fixed shard
//! of every layer for the whole epoch, and meet only where a layer's partial sums must
//! be added: at a spinning barrier, a few times per step, rather than at a fork and a
//! join for every product.
//!
//! Layers alternate between two ways of being split over the team's `P` parts (`P` is
//! the thread count):
//! - **by inputs** (even layers: the first, 784 -> 100, and the 300 -> 100 one): part
//!   `t` owns rows `R_t` of `W` (its input units). Forward, it multiplies its columns
//!   of the input by its rows of `W` into a partial sum, and after a barrier every
//!   part adds all partials, the bias and the activation over the whole width (a
//!   replicated `32 x units` sum, cheap next to the product). Backward, with the whole
//!   `dZ` at hand, it computes its columns of `dA = dZ W^T` and updates its rows of
//!   `W`, and the whole bias (the same values in every part).
//! - **by outputs** (odd layers: 100 -> 300, and the output layer): part `t` owns
//!   columns `C_t` of `W` and of the layer's output. Forward, it multiplies the whole
//!   input (replicated by the layer before) by its columns of `W`. Backward, from its
//!   columns of `dZ`, it updates its columns of `W` and its entries of the bias, and
//!   computes a partial `dA`, which after a barrier every part adds up.
//!
//! Between an odd layer and the next one the parts match (`C_t` of the one is `R_t` of
//! the other), so no data crosses threads there. The output layer is split by outputs
//! with the same cut as the first layer's inputs, so a part reads the targets it
//! gathered itself. Each part keeps its weights in its own contiguous copy for the
//! epoch (copied back at its end), so they stay in its core's cache from step to step.
//! Per step the parts meet at one barrier per layer (after the forward product of a
//! layer split by inputs, after the backward product of one split by outputs) and once
//! at the end of the step.
//!
//! The parts and the order of every sum depend only on the thread count, so results are
//! bit-for-bit reproducible for a given count; different counts add partial sums in a
//! different grouping, and differ in the last bits.

use crate::barrier::{PoisonOnPanic, Poisoned, SpinBarrier};
use crate::dataset::Dataset;
use crate::error::TrainError;
use crate::model::Autoencoder;
use crate::parallel::Threads;
use crate::step::StepPlan;
use kernels::output::OutputStats;
use kernels::reduce::{column_sums, scaled_add};
use kernels::{gemm, Layout, MatMut, MatRef};
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError, RwLock};

/// Parts are cut at multiples of this many units: no register tile is split.
const ALIGN: usize = 8;

/// Whether a layer's parts own rows (input units) or columns (output units) of `W`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Split {
    Inputs,
    Outputs,
}

/// Even layers split by inputs, odd ones by outputs, so that each odd layer's output
/// parts are the next layer's input parts.
fn split_of(layer: usize) -> Split {
    if layer % 2 == 0 {
        Split::Inputs
    } else {
        Split::Outputs
    }
}

/// Whether [`Team`] can train `model`: an even number of layers (so the output layer
/// splits by outputs), as every autoencoder with a mirrored decoder has, and no
/// parameters but the dense layers' (the shards hold only those).
pub(crate) fn suits(model: &Autoencoder) -> bool {
    let layers = model.layer_count();
    layers >= 2 && layers % 2 == 0 && model.parameters().len() == 2 * layers
}

/// The cut points of `n` items into `parts` aligned runs: `parts + 1` increasing values
/// from 0 to `n` (runs may be empty when `n` is small). Each cut is the multiple of
/// [`ALIGN`] nearest to an even share: 300 units cut at 152 leave both parts 10
/// register tiles wide, where 144 would leave one 9 and the other 10.
fn cuts(n: usize, parts: usize) -> Vec<usize> {
    let mut at: Vec<usize> = (0..=parts)
        .map(|t| ((n * t / parts + ALIGN / 2) / ALIGN * ALIGN).min(n))
        .collect();
    at[parts] = n;
    at
}

/// One layer's shape and how it is split.
#[derive(Clone, Debug)]
struct LayerPlan {
    inputs: usize,
    units: usize,
    split: Split,
    /// Cut points of the split dimension (`inputs` or `units`).
    cuts: Vec<usize>,
}

impl LayerPlan {
    fn part(&self, t: usize) -> Range<usize> {
        self.cuts[t]..self.cuts[t + 1]
    }

    /// Rows and columns of part `t`'s block of `W`.
    fn block(&self, t: usize) -> (usize, usize) {
        match self.split {
            Split::Inputs => (self.part(t).len(), self.units),
            Split::Outputs => (self.inputs, self.part(t).len()),
        }
    }

    /// Columns of the output part `t` holds: all of them when split by inputs.
    fn output_width(&self, t: usize) -> usize {
        match self.split {
            Split::Inputs => self.units,
            Split::Outputs => self.part(t).len(),
        }
    }
}

/// What one part owns: its blocks of the weights, its biases, its activations and
/// gradients, all sized for the largest batch.
struct Shard {
    /// The batch's input columns of the first layer's part (also the targets of the
    /// output layer's part, which is cut the same way).
    x: Vec<f32>,
    weights: Vec<Vec<f32>>,
    /// The whole bias of a layer split by inputs, its own columns' otherwise.
    biases: Vec<Vec<f32>>,
    /// Layer outputs: whole for a layer split by inputs, own columns otherwise.
    acts: Vec<Vec<f32>>,
    /// `dZ` of each layer, shaped as its output.
    grads: Vec<Vec<f32>>,
    scratch: Vec<f32>,
}

/// What a part reports at the end of a step.
#[derive(Clone, Copy, Default)]
struct PartResult {
    stats: OutputStats,
    penalty: f64,
}

/// The buffers and plan of a team of `parts` threads.
pub(crate) struct Team {
    parts: usize,
    layers: Vec<LayerPlan>,
    /// The step's arithmetic, as every engine runs it.
    plan: StepPlan,
    capacity: usize,
    shards: Vec<Mutex<Shard>>,
    /// Per layer and part: the partial sums the parts exchange (forward for a layer
    /// split by inputs, its `dA` for one split by outputs).
    partials: Vec<Vec<RwLock<Vec<f32>>>>,
    results: Vec<Mutex<PartResult>>,
    barrier: SpinBarrier,
    /// Set by part 0 once a step's outcome says to stop; read after the next barrier.
    stop: AtomicBool,
}

/// The steps of an epoch to train: batches of `batch` rows of `train`, in `order`.
pub(crate) struct Epoch<'a> {
    pub train: &'a Dataset,
    pub order: &'a [usize],
    pub steps: Range<usize>,
    pub batch: usize,
    /// Plain SGD's learning rate.
    pub lr: f32,
}

/// What part 0 does with each finished step: `(step, rows, stats, penalty)`; an error
/// ends the epoch after that step.
pub(crate) type StepEnd<'a> =
    dyn FnMut(usize, usize, OutputStats, f64) -> Result<(), TrainError> + Send + 'a;

impl Team {
    /// A team for `model` split over `parts` threads, for batches of up to `capacity`
    /// rows.
    pub(crate) fn new(model: &Autoencoder, parts: usize, capacity: usize) -> Self {
        let layers: Vec<LayerPlan> = model
            .layers()
            .enumerate()
            .map(|(l, layer)| {
                let split = split_of(l);
                let spec = layer.spec;
                let n = match split {
                    Split::Inputs => spec.inputs,
                    Split::Outputs => spec.units,
                };
                LayerPlan {
                    inputs: spec.inputs,
                    units: spec.units,
                    split,
                    cuts: cuts(n, parts),
                }
            })
            .collect();
        let widest = layers.iter().map(|l| l.units).max().unwrap_or(0);
        let shards = (0..parts)
            .map(|t| {
                let first = &layers[0];
                Mutex::new(Shard {
                    x: vec![0.0; capacity * first.part(t).len()],
                    weights: layers
                        .iter()
                        .map(|l| {
                            let (r, c) = l.block(t);
                            vec![0.0; r * c]
                        })
                        .collect(),
                    biases: layers
                        .iter()
                        .map(|l| vec![0.0; l.output_width(t)])
                        .collect(),
                    acts: layers
                        .iter()
                        .map(|l| vec![0.0; capacity * l.output_width(t)])
                        .collect(),
                    grads: layers
                        .iter()
                        .map(|l| vec![0.0; capacity * l.output_width(t)])
                        .collect(),
                    scratch: vec![0.0; widest.max(model.plan().scratch_len())],
                })
            })
            .collect();
        let partials = layers
            .iter()
            .enumerate()
            .map(|(l, plan)| {
                let width = match plan.split {
                    Split::Inputs => plan.units,
                    Split::Outputs if l > 0 => plan.inputs,
                    Split::Outputs => 0,
                };
                (0..parts)
                    .map(|_| RwLock::new(vec![0.0; capacity * width]))
                    .collect()
            })
            .collect();
        Self {
            parts,
            layers,
            plan: model.plan().clone(),
            capacity,
            shards,
            partials,
            results: (0..parts).map(|_| Mutex::default()).collect(),
            barrier: SpinBarrier::new(parts),
            stop: AtomicBool::new(false),
        }
    }

    /// Copies each part's blocks of the model's parameters into its shard.
    fn load(&mut self, model: &Autoencoder) {
        for (t, shard) in self.shards.iter_mut().enumerate() {
            let shard = shard.get_mut().unwrap_or_else(PoisonError::into_inner);
            for (l, (plan, layer)) in self.layers.iter().zip(model.layers()).enumerate() {
                let part = plan.part(t);
                match plan.split {
                    Split::Inputs => {
                        let rows = &layer.weight[part.start * plan.units..part.end * plan.units];
                        shard.weights[l].copy_from_slice(rows);
                        shard.biases[l].copy_from_slice(layer.bias);
                    }
                    Split::Outputs => {
                        let width = part.len();
                        for (i, row) in layer.weight.chunks_exact(plan.units).enumerate() {
                            shard.weights[l][i * width..(i + 1) * width]
                                .copy_from_slice(&row[part.clone()]);
                        }
                        shard.biases[l].copy_from_slice(&layer.bias[part]);
                    }
                }
            }
        }
    }

    /// Copies the shards' parameters back into the model.
    fn store(&mut self, model: &mut Autoencoder) {
        for (t, shard) in self.shards.iter_mut().enumerate() {
            let shard = shard.get_mut().unwrap_or_else(PoisonError::into_inner);
            for (l, plan) in self.layers.iter().enumerate() {
                let layer = model.layer_mut(l);
                let part = plan.part(t);
                match plan.split {
                    Split::Inputs => {
                        layer.weight[part.start * plan.units..part.end * plan.units]
                            .copy_from_slice(&shard.weights[l]);
                        // Every part holds the same whole bias.
                        if t == 0 {
                            layer.bias.copy_from_slice(&shard.biases[l]);
                        }
                    }
                    Split::Outputs => {
                        let width = part.len();
                        for (i, row) in layer.weight.chunks_exact_mut(plan.units).enumerate() {
                            row[part.clone()]
                                .copy_from_slice(&shard.weights[l][i * width..(i + 1) * width]);
                        }
                        layer.bias[part].copy_from_slice(&shard.biases[l]);
                    }
                }
            }
        }
    }

    /// Trains the steps of `epoch`, calling `step_end` on part 0 after each step. The
    /// model's weights are updated in place when this returns, whatever it returns.
    pub(crate) fn train(
        &mut self,
        threads: &Threads,
        model: &mut Autoencoder,
        epoch: &Epoch<'_>,
        step_end: &mut StepEnd<'_>,
    ) -> Result<(), TrainError> {
        assert!(
            epoch.batch <= self.capacity && threads.count() == self.parts,
            "team built for another batch size or thread count"
        );
        self.load(model);
        self.stop.store(false, Ordering::Relaxed);
        self.barrier.reset();
        let step_end = Mutex::new(step_end);
        let team = &*self;
        let outcomes = threads.broadcast(&|t| {
            let mut shard = team.shards[t]
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let _poison = PoisonOnPanic(&team.barrier);
            let mut step_end =
                (t == 0).then(|| step_end.lock().unwrap_or_else(PoisonError::into_inner));
            team.member(t, &mut shard, epoch, step_end.as_deref_mut())
        });
        self.store(model);
        outcomes.into_iter().collect()
    }

    /// Part `t`'s share of the epoch.
    fn member(
        &self,
        t: usize,
        shard: &mut Shard,
        epoch: &Epoch<'_>,
        mut step_end: Option<&mut &mut StepEnd<'_>>,
    ) -> Result<(), TrainError> {
        let Epoch {
            train,
            order,
            ref steps,
            batch,
            lr,
        } = *epoch;
        let columns = self.layers[0].part(t);
        let mut outcome = Ok(());
        for step in steps.clone() {
            let start = step * batch;
            let rows = batch.min(order.len() - start);
            let batch_order = &order[start..start + rows];
            let x = MatMut::row_major(&mut shard.x[..rows * columns.len()], rows, columns.len())
                .expect("sized");
            train.gather_columns(batch_order, columns.clone(), x);
            // The next batch's samples are scattered over the data set: have this part's
            // columns of them on their way from memory while this step computes (each
            // part its own, which also spreads the page walks).
            let next = (start + rows).min(order.len())..(start + rows + batch).min(order.len());
            train.prefetch_columns(&order[next], columns.clone());
            // `Err`: part 0 stopped the epoch, or a part panicked.
            let Ok(result) = self.step(t, shard, rows, lr) else {
                break;
            };
            *self.results[t]
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = result;
            if self.barrier.wait().is_err() {
                break;
            }
            if let Some(step_end) = step_end.as_mut() {
                let (mut stats, mut penalty) = (OutputStats::default(), 0.0);
                for part in &self.results {
                    let part = *part.lock().unwrap_or_else(PoisonError::into_inner);
                    stats += part.stats;
                    penalty += part.penalty;
                }
                if let Err(e) = step_end(step, rows, stats, penalty) {
                    outcome = Err(e);
                    self.stop.store(true, Ordering::Release);
                    // The others have gone on to the next step: they learn of the stop
                    // at its first barrier, which this part must reach too.
                    if step + 1 < steps.end {
                        let _ = self.barrier.wait();
                    }
                    break;
                }
            }
        }
        outcome
    }

    /// One step of part `t` on the `rows` samples in its shard: returns its output
    /// statistics and penalty share, or `Err` when another part asked to stop.
    fn step(
        &self,
        t: usize,
        shard: &mut Shard,
        rows: usize,
        lr: f32,
    ) -> Result<PartResult, Stopped> {
        let last = self.layers.len() - 1;
        // Forward.
        for (l, plan) in self.layers.iter().enumerate() {
            let (before, rest) = shard.acts.split_at_mut(l);
            let input: &[f32] = if l == 0 { &shard.x } else { &before[l - 1] };
            let (w_rows, w_cols) = plan.block(t);
            let weight = MatRef::row_major(&shard.weights[l], w_rows, w_cols).expect("sized");
            let input = MatRef::row_major(&input[..rows * w_rows], rows, w_rows).expect("sized");
            let out = &mut rest[0][..rows * plan.output_width(t)];
            match plan.split {
                Split::Inputs => {
                    {
                        let mut partial = self.partials[l][t]
                            .write()
                            .unwrap_or_else(PoisonError::into_inner);
                        let partial = &mut partial[..rows * plan.units];
                        let c = MatMut::row_major(partial, rows, plan.units).expect("sized");
                        gemm(1.0, input, weight, 0.0, c).expect("shapes chain");
                    }
                    self.barrier.wait()?;
                    if l == 0 && self.stop.load(Ordering::Acquire) {
                        return Err(Stopped);
                    }
                    self.sum_partials(l, rows * plan.units, out);
                }
                Split::Outputs => {
                    let c = MatMut::row_major(out, rows, w_cols).expect("sized");
                    gemm(1.0, input, weight, 0.0, c).expect("shapes chain");
                }
            }
            self.plan.forward_epilogue(l, out, rows, &shard.biases[l]);
        }

        // The output step on this part's columns.
        let output = &self.layers[last];
        let own = output.part(t).len();
        let z = &shard.acts[last][..rows * own];
        let dz = &mut shard.grads[last][..rows * own];
        let stats = self
            .plan
            .output_step(z, &shard.x[..rows * own], dz, rows, own);

        // Backward, from the last layer down.
        let mut penalty = 0.0;
        for l in (0..=last).rev() {
            let plan = &self.layers[l];
            let (w_rows, w_cols) = plan.block(t);
            let (lower, upper) = shard.grads.split_at_mut(l);
            let dz_width = plan.output_width(t);
            let dz = &upper[0][..rows * dz_width];
            let dz_view = MatRef::row_major(dz, rows, dz_width).expect("sized");
            let input: &[f32] = if l == 0 { &shard.x } else { &shard.acts[l - 1] };
            let input_t = MatRef::row_major(&input[..rows * w_rows], rows, w_rows)
                .expect("sized")
                .t();
            let weight = &mut shard.weights[l];
            match plan.split {
                Split::Outputs => {
                    if l > 0 {
                        let mut partial = self.partials[l][t]
                            .write()
                            .unwrap_or_else(PoisonError::into_inner);
                        let partial = &mut partial[..rows * plan.inputs];
                        let w = MatRef::row_major(weight, w_rows, w_cols).expect("sized");
                        let c = MatMut::row_major(partial, rows, plan.inputs).expect("sized");
                        gemm(1.0, dz_view, w.t(), 0.0, c).expect("shapes chain");
                    }
                    let w = MatMut::row_major(weight, w_rows, w_cols).expect("sized");
                    gemm(-lr, input_t, dz_view, 1.0, w).expect("shapes chain");
                    let layout = Layout::contiguous(rows, dz_width);
                    column_sums(layout, dz, -lr, 1.0, &mut shard.biases[l]);
                    if l > 0 {
                        self.barrier.wait()?;
                        let below = &self.layers[l - 1];
                        let da = &mut lower[l - 1][..rows * below.units];
                        self.sum_partials(l, rows * below.units, da);
                        // Every part holds the same whole `dZ` below; part 0 counts its
                        // penalty.
                        let value = self.plan.to_dz(
                            l - 1,
                            &shard.acts[l - 1],
                            da,
                            rows,
                            below.units,
                            &mut shard.scratch,
                        );
                        if t == 0 {
                            penalty += value;
                        }
                    }
                }
                Split::Inputs => {
                    if l > 0 {
                        // This part's columns of dA are the next layer down's own columns.
                        let own = plan.part(t).len();
                        let da = &mut lower[l - 1][..rows * own];
                        let w = MatRef::row_major(weight, w_rows, w_cols).expect("sized");
                        let c = MatMut::row_major(da, rows, own).expect("sized");
                        gemm(1.0, dz_view, w.t(), 0.0, c).expect("shapes chain");
                        penalty += self.plan.to_dz(
                            l - 1,
                            &shard.acts[l - 1],
                            da,
                            rows,
                            own,
                            &mut shard.scratch,
                        );
                    }
                    let w = MatMut::row_major(weight, w_rows, w_cols).expect("sized");
                    gemm(-lr, input_t, dz_view, 1.0, w).expect("shapes chain");
                    let layout = Layout::contiguous(rows, plan.units);
                    column_sums(layout, dz, -lr, 1.0, &mut shard.biases[l]);
                }
            }
        }
        Ok(PartResult { stats, penalty })
    }

    /// `out = sum of the parts' partial sums of layer `l``, in part order.
    fn sum_partials(&self, l: usize, len: usize, out: &mut [f32]) {
        for (s, partial) in self.partials[l].iter().enumerate() {
            let partial = partial.read().unwrap_or_else(PoisonError::into_inner);
            if s == 0 {
                out.copy_from_slice(&partial[..len]);
            } else {
                scaled_add(1.0, &partial[..len], out);
            }
        }
    }
}

/// Part 0 stopped the epoch (or a part panicked); this part leaves its step.
#[derive(Debug)]
struct Stopped;

impl From<Poisoned> for Stopped {
    fn from(_: Poisoned) -> Self {
        Stopped
    }
}
