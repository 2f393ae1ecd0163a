//! Mini-batch training with Keras' semantics: reshuffle every epoch, keep the last
//! partial batch, report the running mean of `loss` and `rounded_accuracy` weighted by
//! batch size, and evaluate the validation set after every epoch.
//!
//! One step runs through the fused kernels in buffers allocated when the trainer is
//! built: forward (GEMM, then bias + activation), the fused output step, then from the
//! last layer down: input gradient `dA = dZ W^T` (with the old `W`), the parameter update
//! (plain SGD is fused into the weight-gradient GEMM as `W <- W - lr X^T dZ`), and the
//! previous layer's activation backward, fused with the sparsity penalty at the coding
//! layer. Plain SGD on batches of up to 1024 rows runs the same step in a team of
//! threads that each own a part of every layer for the whole epoch (`team.rs`); other
//! optimizers split each product across the threads.

use crate::dataset::Dataset;
use crate::error::TrainError;
use crate::loss::Loss;
use crate::model::{Activations, Autoencoder};
use crate::optimizer::{Optimizer, OptimizerState};
use crate::parallel::Threads;
use crate::params::Parameters;
use crate::team::{self, Epoch, Team};
use kernels::output::OutputStats;
use kernels::reduce::column_sums;
use kernels::{Layout, MatMut, MatRef};
use serde::{Deserialize, Serialize};
use std::ops::Range;
use std::time::Instant;

/// Optimizers other than plain SGD run the forward products of wide-input layers of
/// batches up to this many rows as two halves over the inputs
/// ([`Autoencoder::forward_training`]); larger batches split products by rows.
pub(crate) const TRAINING_SPLIT_ROWS: usize = 64;

/// Plain SGD on batches of up to this many rows trains as a [`Team`]: the register-tiled
/// GEMM runs their products (against layers up to [`kernels::gemm::TILED_MAX_COLUMNS`]
/// units wide), so a team step allocates nothing, and the team's partial sums grow with
/// the batch as its products do.
const TEAM_MAX_ROWS: usize = kernels::gemm::TILED_MAX_ROWS;

/// How to train.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Passes over the training set.
    pub epochs: usize,
    /// Samples per step (the last step of an epoch may have fewer).
    pub batch_size: usize,
    /// Reshuffle the training set every epoch.
    pub shuffle: bool,
    /// Seeds the shuffling (the weights are seeded when the model is built).
    pub seed: u64,
    /// The optimizer.
    pub optimizer: Optimizer,
    /// Threads the step is split across; results are reproducible for a given count.
    #[serde(default = "one_thread")]
    pub threads: usize,
}

fn one_thread() -> usize {
    1
}

impl TrainConfig {
    /// The reference run: 10 epochs of plain SGD at learning rate 1.0, batches of 32.
    pub fn reference() -> Self {
        Self {
            epochs: 10,
            batch_size: 32,
            shuffle: true,
            seed: 42,
            optimizer: Optimizer::sgd(1.0),
            threads: 1,
        }
    }

    /// Checks the settings.
    pub fn validate(&self) -> Result<(), TrainError> {
        if self.batch_size == 0 {
            return Err(TrainError::Invalid("batch size must be at least 1".into()));
        }
        if self.threads == 0 {
            return Err(TrainError::Invalid(
                "thread count must be at least 1".into(),
            ));
        }
        self.optimizer.validate().map_err(TrainError::Invalid)
    }
}

/// What one epoch measured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    /// Epoch number, from 1.
    pub epoch: usize,
    /// Training loss (reconstruction + penalty), mean over the epoch's steps weighted by batch size.
    pub loss: f64,
    /// Training rounded accuracy over the epoch.
    pub rounded_accuracy: f64,
    /// Validation loss, if a validation set was given.
    pub val_loss: Option<f64>,
    /// Validation rounded accuracy.
    pub val_rounded_accuracy: Option<f64>,
    /// Mean coding activation over the validation set.
    pub mean_coding_activation: Option<f64>,
    /// Wall time of the epoch, validation included, in seconds.
    pub seconds: f64,
}

/// Progress within an epoch, for drawing a progress bar.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepProgress {
    /// Epoch number, from 1.
    pub epoch: usize,
    /// Epochs in the run.
    pub epochs: usize,
    /// Steps done in this epoch, from 1.
    pub step: usize,
    /// Steps in this epoch.
    pub steps: usize,
    /// Running mean loss of the epoch so far.
    pub loss: f64,
    /// Running rounded accuracy of the epoch so far.
    pub rounded_accuracy: f64,
}

/// Where an interrupted epoch stopped: enough to continue it exactly.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochPosition {
    /// The epoch, from 1.
    pub epoch: usize,
    /// Steps finished in it.
    pub steps_done: usize,
    /// Batch-size-weighted sum of the finished steps' losses.
    pub loss_sum: f64,
    /// Samples of the finished steps.
    pub seen: usize,
    /// Rounded-equal values of the finished steps.
    pub rounded_equal: u64,
    /// Wall time spent in the epoch so far.
    pub seconds: f64,
}

/// What a resumed run needs besides the weights and the optimizer's slots.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    /// The settings of the run.
    pub config: TrainConfig,
    /// Metrics of the finished epochs.
    pub history: Vec<EpochMetrics>,
    /// Where an interrupted epoch stopped, if one did.
    pub position: Option<EpochPosition>,
    /// Optimizer steps taken (Adam's `t`).
    pub optimizer_iterations: u64,
}

/// Whether training should go on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Control {
    /// Keep going.
    Continue,
    /// Stop after this step; `fit` returns [`TrainError::Interrupted`].
    Stop,
}

/// Receives progress; the defaults ignore it. Lets a front end draw without `nn`
/// knowing about terminals. Called from the training thread (a pool thread when the
/// step is split across threads), hence `Send`.
pub trait Observer: Send {
    /// An epoch starts.
    fn epoch_begin(&mut self, _epoch: usize, _epochs: usize, _steps: usize) {}
    /// A step finished.
    fn step_end(&mut self, _progress: &StepProgress) -> Control {
        Control::Continue
    }
    /// An epoch finished (validation included).
    fn epoch_end(&mut self, _metrics: &EpochMetrics) -> Control {
        Control::Continue
    }
}

/// An observer that ignores everything.
impl Observer for () {}

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
struct Workspace {
    acts: Activations,
    grads: Vec<Vec<f32>>,
    x: Vec<f32>,
    /// The second half of a forward product (see [`Autoencoder::forward_training`]).
    partial: Vec<f32>,
    scratch: Vec<f32>,
    param_grads: Gradients,
    order: Vec<usize>,
}

impl Workspace {
    fn new(model: &Autoencoder, batch: usize, collect: bool) -> Self {
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
        }
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

/// Trains an [`Autoencoder`] and keeps its optimizer state and history.
pub struct Trainer {
    model: Autoencoder,
    config: TrainConfig,
    threads: Threads,
    state: OptimizerState,
    work: Workspace,
    team: Option<Team>,
    history: Vec<EpochMetrics>,
    position: Option<EpochPosition>,
}

impl Trainer {
    /// A trainer for `model`; allocates every buffer a step needs.
    pub fn new(model: Autoencoder, config: TrainConfig) -> Result<Self, TrainError> {
        config.validate()?;
        let state = OptimizerState::new(&config.optimizer, model.parameters());
        let threads = Threads::new(config.threads)?;
        // Plain SGD on batches small enough for the register-tiled products runs as a
        // team of threads that own their parts of the weights for the whole epoch.
        let team = (config.optimizer.is_plain_sgd()
            && config.batch_size <= TEAM_MAX_ROWS
            && team::suits(&model))
        .then(|| Team::new(&model, threads.count(), config.batch_size));
        // A team keeps its step buffers in its parts; the forked step's would go unused.
        let step_rows = if team.is_some() { 0 } else { config.batch_size };
        let work = Workspace::new(&model, step_rows, !config.optimizer.is_plain_sgd());
        Ok(Self {
            model,
            config,
            threads,
            state,
            work,
            team,
            history: Vec::new(),
            position: None,
        })
    }

    /// A trainer that continues where [`Trainer::state`] and [`Trainer::optimizer_state`]
    /// were taken: same history, same position inside an interrupted epoch, same
    /// optimizer slots. Training on from here gives the same weights, bit for bit, as a
    /// run that was never interrupted (for the same data and thread count).
    pub fn restore(
        model: Autoencoder,
        state: TrainerState,
        slots: OptimizerState,
    ) -> Result<Self, TrainError> {
        let mut trainer = Self::new(model, state.config)?;
        let expected = OptimizerState::new(&state.config.optimizer, trainer.model.parameters());
        let shapes = |s: &OptimizerState| -> Vec<usize> {
            s.first.iter().chain(&s.second).map(Vec::len).collect()
        };
        if shapes(&slots) != shapes(&expected) {
            return Err(TrainError::Invalid(
                "the optimizer state does not fit the model and optimizer".into(),
            ));
        }
        if state
            .history
            .iter()
            .enumerate()
            .any(|(i, m)| m.epoch != i + 1)
            || state
                .position
                .is_some_and(|p| p.epoch != state.history.len() + 1)
        {
            return Err(TrainError::Invalid(
                "the history and the interrupted epoch do not follow each other".into(),
            ));
        }
        trainer.state = OptimizerState {
            iterations: state.optimizer_iterations,
            ..slots
        };
        trainer.history = state.history;
        trainer.position = state.position;
        Ok(trainer)
    }

    /// Changes the number of epochs of the run (to train a resumed run for longer).
    pub fn set_epochs(&mut self, epochs: usize) -> Result<(), TrainError> {
        if epochs < self.history.len().max(1) {
            return Err(TrainError::Invalid(format!(
                "{epochs} epochs: the run has already finished {}",
                self.history.len()
            )));
        }
        self.config.epochs = epochs;
        Ok(())
    }

    /// Everything but the weights and optimizer slots needed to resume this run.
    pub fn state(&self) -> TrainerState {
        TrainerState {
            config: self.config,
            history: self.history.clone(),
            position: self.position,
            optimizer_iterations: self.state.iterations,
        }
    }

    /// The model as trained so far.
    pub fn model(&self) -> &Autoencoder {
        &self.model
    }

    /// Gives up the trainer, keeping the model.
    pub fn into_model(self) -> Autoencoder {
        self.model
    }

    /// The settings.
    pub fn config(&self) -> &TrainConfig {
        &self.config
    }

    /// Metrics of every completed epoch.
    pub fn history(&self) -> &[EpochMetrics] {
        &self.history
    }

    /// The optimizer's slots and step count.
    pub fn optimizer_state(&self) -> &OptimizerState {
        &self.state
    }

    /// Trains for the configured number of epochs (continuing after those already in
    /// the history), evaluating `valid` after each.
    pub fn fit(
        &mut self,
        train: &Dataset,
        valid: Option<&Dataset>,
        observer: &mut dyn Observer,
    ) -> Result<&[EpochMetrics], TrainError> {
        while self.history.len() < self.config.epochs {
            if self.fit_epoch(train, valid, observer)? == Control::Stop {
                return Err(TrainError::Interrupted);
            }
        }
        Ok(&self.history)
    }

    /// Trains one more epoch and records its metrics in the history; returns what the
    /// observer said at the epoch's end.
    pub fn fit_epoch(
        &mut self,
        train: &Dataset,
        valid: Option<&Dataset>,
        observer: &mut dyn Observer,
    ) -> Result<Control, TrainError> {
        let width = self.model.input_width();
        for data in std::iter::once(train).chain(valid) {
            if data.features() != width {
                return Err(TrainError::FeatureMismatch {
                    expected: width,
                    found: data.features(),
                });
            }
        }
        if train.is_empty() {
            return Err(TrainError::EmptyDataset);
        }
        // The whole epoch runs on a pool thread, so each split starts without a hand-off.
        let threads = self.threads.clone();
        let metrics = threads.install(|| self.train_epoch(train, valid, observer))?;
        let control = observer.epoch_end(&metrics);
        self.history.push(metrics);
        Ok(control)
    }

    /// One epoch over `train`, then an evaluation of `valid`.
    fn train_epoch(
        &mut self,
        train: &Dataset,
        valid: Option<&Dataset>,
        observer: &mut dyn Observer,
    ) -> Result<EpochMetrics, TrainError> {
        let started = Instant::now();
        let epoch = self.history.len() + 1;
        let batch = self.config.batch_size;
        let width = self.model.input_width();
        let steps = train.len().div_ceil(batch);
        if self.config.shuffle {
            train.shuffled_order(self.config.seed, epoch as u64, &mut self.work.order);
        } else {
            train.sequential_order(&mut self.work.order);
        }
        observer.epoch_begin(epoch, self.config.epochs, steps);

        // An epoch interrupted before continues from its next step, with its sums.
        let resumed = self.position.take().filter(|p| p.epoch == epoch);
        let first_step = resumed.map_or(0, |p| p.steps_done);
        let mut tally = EpochTally {
            epoch,
            epochs: self.config.epochs,
            steps,
            width,
            lr: self.config.optimizer.learning_rate(),
            loss_sum: resumed.map_or(0.0, |p| p.loss_sum),
            seen: resumed.map_or(0, |p| p.seen),
            equal: resumed.map_or(0, |p| p.rounded_equal),
            started,
            earlier_seconds: resumed.map_or(0.0, |p| p.seconds),
            observer,
            stopped_at: None,
        };
        let outcome = match self.team.as_mut() {
            Some(team) => {
                let epoch_steps = Epoch {
                    train,
                    order: &self.work.order,
                    steps: first_step..steps,
                    batch,
                    lr: tally.lr,
                };
                let mut step_end = |step: usize, rows: usize, stats: OutputStats, penalty: f64| {
                    tally.step_end(step, rows, stats, penalty)
                };
                team.train(&self.threads, &mut self.model, &epoch_steps, &mut step_end)
            }
            None => self.train_steps(train, first_step..steps, &mut tally),
        };
        self.position = tally.stopped_at.take();
        outcome?;

        let evaluation = valid.map(|v| self.model.evaluate_with(&self.threads, v, batch));
        Ok(EpochMetrics {
            epoch,
            loss: tally.loss_sum / tally.seen as f64,
            rounded_accuracy: tally.equal as f64 / (tally.seen * width) as f64,
            val_loss: evaluation.map(|e| e.loss),
            val_rounded_accuracy: evaluation.map(|e| e.rounded_accuracy),
            mean_coding_activation: evaluation.map(|e| e.mean_coding_activation),
            seconds: tally.seconds(),
        })
    }

    /// Steps `steps` of the epoch in `self.work.order`, each product split across the
    /// threads (the step of other optimizers than plain SGD, and of larger batches).
    fn train_steps(
        &mut self,
        train: &Dataset,
        steps: Range<usize>,
        tally: &mut EpochTally<'_>,
    ) -> Result<(), TrainError> {
        let batch = self.config.batch_size;
        let width = self.model.input_width();
        for step in steps {
            let start = step * batch;
            let rows = batch.min(train.len() - start);
            let work = &mut self.work;
            // Each thread converts the input columns its half of the first layer reads.
            let order = &work.order[start..start + rows];
            let x = MatMut::row_major(&mut work.x[..rows * width], rows, width).expect("sized");
            self.threads.column_runs(x, &|columns, part| {
                train.gather_columns(order, columns, part)
            });
            // The next batch's samples are scattered over the data set: have them on
            // their way from memory while this step computes.
            let next = (start + rows).min(train.len())..(start + rows + batch).min(train.len());
            train.prefetch(&work.order[next]);
            self.model.forward_training(
                &self.threads,
                &work.x,
                rows,
                &mut work.acts,
                &mut work.partial,
            );
            let plain_sgd = self.config.optimizer.is_plain_sgd();
            let update = if plain_sgd {
                Update::FusedSgd(self.config.optimizer.learning_rate())
            } else {
                Update::Collect(&mut work.param_grads)
            };
            let (stats, penalty) = backward(
                &self.threads,
                &mut self.model,
                Batch { x: &work.x, rows },
                &work.acts,
                &mut work.grads,
                &mut work.scratch,
                update,
            );
            if !plain_sgd {
                self.state.advance();
                let params = self.model.parameters_mut().iter_mut();
                for (slot, (param, grad)) in params.zip(work.param_grads.iter()).enumerate() {
                    self.state.apply(
                        &self.config.optimizer,
                        slot,
                        &grad.values,
                        &mut param.values,
                    );
                }
            }
            tally.step_end(step, rows, stats, penalty)?;
        }
        Ok(())
    }
}

/// An epoch's running sums, and what follows each step: the divergence check and the
/// observer.
struct EpochTally<'a> {
    epoch: usize,
    epochs: usize,
    steps: usize,
    width: usize,
    lr: f32,
    loss_sum: f64,
    seen: usize,
    equal: u64,
    started: Instant,
    earlier_seconds: f64,
    observer: &'a mut dyn Observer,
    /// Where the epoch stopped, if the observer stopped it.
    stopped_at: Option<EpochPosition>,
}

impl EpochTally<'_> {
    fn seconds(&self) -> f64 {
        self.earlier_seconds + self.started.elapsed().as_secs_f64()
    }

    /// Adds step `step` (from 0) of `rows` samples; an error ends the epoch after it.
    fn step_end(
        &mut self,
        step: usize,
        rows: usize,
        stats: OutputStats,
        penalty: f64,
    ) -> Result<(), TrainError> {
        let batch_loss = Loss::batch_mean(&stats, rows, self.width) + penalty;
        if !batch_loss.is_finite() {
            return Err(TrainError::Diverged {
                epoch: self.epoch,
                step: step + 1,
                loss: batch_loss,
                lr: self.lr,
            });
        }
        self.loss_sum += batch_loss * rows as f64;
        self.seen += rows;
        self.equal += stats.rounded_equal;
        let progress = StepProgress {
            epoch: self.epoch,
            epochs: self.epochs,
            step: step + 1,
            steps: self.steps,
            loss: self.loss_sum / self.seen as f64,
            rounded_accuracy: self.equal as f64 / (self.seen * self.width) as f64,
        };
        if self.observer.step_end(&progress) == Control::Stop {
            self.stopped_at = Some(EpochPosition {
                epoch: self.epoch,
                steps_done: step + 1,
                loss_sum: self.loss_sum,
                seen: self.seen,
                rounded_equal: self.equal,
                seconds: self.seconds(),
            });
            return Err(TrainError::Interrupted);
        }
        Ok(())
    }
}
