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
//!
//! Files: `plan.rs` (how each layer splits, and copying the parts' blocks in and out),
//! `step.rs` (one part's step), this one (the team, its epoch and its members).

mod plan;
mod step;

pub(crate) use plan::suits;

use crate::barrier::{PoisonOnPanic, Poisoned, SpinBarrier};
use crate::dataset::Dataset;
use crate::error::TrainError;
use crate::model::Autoencoder;
use crate::parallel::Threads;
use crate::phase_times::{timed, PhaseKind};
use crate::step::StepPlan;
use kernels::output::OutputStats;
use kernels::MatMut;
use plan::{cuts, split_of, LayerPlan, Split};
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError, RwLock};

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
            timed(PhaseKind::Gather, None, t, || {
                train.gather_columns(batch_order, columns.clone(), x)
            });
            // The next batch's samples are scattered over the data set: have this part's
            // columns of them on their way from memory while this step computes (each
            // part its own, which also spreads the page walks).
            let next = (start + rows).min(order.len())..(start + rows + batch).min(order.len());
            timed(PhaseKind::Prefetch, None, t, || {
                train.prefetch_columns(&order[next], columns.clone())
            });
            // `Err`: part 0 stopped the epoch, or a part panicked.
            let Ok(result) = self.step(t, shard, rows, lr) else {
                break;
            };
            *self.results[t]
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = result;
            if timed(PhaseKind::StepBarrier, None, t, || self.barrier.wait()).is_err() {
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
}

/// Part 0 stopped the epoch (or a part panicked); this part leaves its step.
#[derive(Debug)]
struct Stopped;

impl From<Poisoned> for Stopped {
    fn from(_: Poisoned) -> Self {
        Stopped
    }
}
