//! Mini-batch training with Keras' semantics: reshuffle every epoch, keep the last
//! partial batch, report the running mean of `loss` and `rounded_accuracy` weighted by
//! batch size, and evaluate the validation set after every epoch.
//!
//! One step runs through the fused kernels in buffers allocated when the trainer is
//! built: forward (GEMM, then bias + activation), the fused output step, then from the
//! last layer down: input gradient `dA = dZ W^T` (with the old `W`), the parameter update
//! (plain SGD is fused into the weight-gradient GEMM as `W <- W - lr X^T dZ`), and the
//! previous layer's activation backward, fused with the sparsity penalty at the coding
//! layer. The step's arithmetic is written once (`step`); two engines schedule it:
//! - the team (`team`): plain SGD on batches of up to 1024 rows, for models with an
//!   even number of dense layers and no other parameters: threads that each own a part
//!   of every layer for the whole epoch, meeting at barriers;
//! - the forked step ([`forked`](self)'s `Workspace::step`): everything else, each
//!   product split across the threads and joined.
//!
//! Files: `types.rs` (settings, metrics, observer), `forked.rs` (the forked step and
//! the reference gradients), this one (the trainer and its epoch loop).

mod forked;
mod types;

pub(crate) use forked::TRAINING_SPLIT_ROWS;
pub use forked::{loss_and_gradients, Gradients};
pub use types::{
    Control, EpochMetrics, EpochPosition, Observer, StepProgress, TrainConfig, TrainerState,
};

use crate::dataset::{Dataset, ReadPlan};
use crate::error::TrainError;
use crate::loss::Loss;
use crate::model::Autoencoder;
use crate::optimizer::OptimizerState;
use crate::parallel::Threads;
use crate::sae::{DeadLatents, SaeStep};
use crate::source::Residency;
use crate::team::{self, Epoch, Team};
use forked::Workspace;
use kernels::output::OutputStats;
use std::ops::Range;
use std::time::Instant;

/// Plain SGD on batches of up to this many rows trains as a [`Team`]: the register-tiled
/// GEMM runs their products (against layers up to [`kernels::gemm::TILED_MAX_COLUMNS`]
/// units wide), so a team step allocates nothing, and the team's partial sums grow with
/// the batch as its products do.
const TEAM_MAX_ROWS: usize = kernels::gemm::TILED_MAX_ROWS;

/// Whether the team runs `model` with `config`: plain SGD on batches small enough for
/// the register-tiled products, and a model the team's split suits.
fn team_runs(model: &Autoencoder, config: &TrainConfig) -> bool {
    config.optimizer.is_plain_sgd() && config.batch_size <= TEAM_MAX_ROWS && team::suits(model)
}

/// Which engine schedules a step's arithmetic (`step`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    /// Threads that each own a part of every layer for the whole epoch and meet at
    /// barriers: plain SGD on batches of up to 1024 rows, models with an even number
    /// of dense layers and no other parameters.
    Team,
    /// Each product split across the threads and joined: any model but a sparse
    /// autoencoder, any optimizer.
    Forked,
    /// A sparse autoencoder's step ([`crate::sae`]): the encoder's product split across
    /// the threads, then only the kept latents; the one engine for those models.
    Sparse,
}

/// The sparse engine's state: its buffers, the dead latents' counts, the batch.
struct SparseEngine {
    step: SaeStep,
    dead: DeadLatents,
    batch: Vec<f32>,
}

/// Trains an [`Autoencoder`] and keeps its optimizer state and history.
pub struct Trainer {
    model: Autoencoder,
    config: TrainConfig,
    threads: Threads,
    state: OptimizerState,
    work: Workspace,
    team: Option<Team>,
    sparse: Option<SparseEngine>,
    history: Vec<EpochMetrics>,
    position: Option<EpochPosition>,
}

impl Trainer {
    /// A trainer for `model` on the engine that runs it fastest (the team where it can,
    /// the forked step otherwise); allocates every buffer a step needs.
    pub fn new(model: Autoencoder, config: TrainConfig) -> Result<Self, TrainError> {
        let engine = if model.config().sae.is_some() {
            Engine::Sparse
        } else if team_runs(&model, &config) {
            Engine::Team
        } else {
            Engine::Forked
        };
        Self::with_engine(model, config, engine)
    }

    /// A trainer for `model` on `engine`; `Err` if the team is asked for a model or
    /// settings it does not run (see the module doc).
    pub fn with_engine(
        model: Autoencoder,
        config: TrainConfig,
        engine: Engine,
    ) -> Result<Self, TrainError> {
        config.validate()?;
        if engine == Engine::Team && !team_runs(&model, &config) {
            return Err(TrainError::Invalid(format!(
                "the team trains plain SGD on batches of up to {TEAM_MAX_ROWS} rows, of models \
                 with an even number of dense layers and no other parameters; this is not one"
            )));
        }
        let sae = model.config().sae.is_some();
        if sae != (engine == Engine::Sparse) {
            return Err(TrainError::Invalid(
                "sparse autoencoders train on the sparse engine, and only they do".into(),
            ));
        }
        let state = OptimizerState::new(&config.optimizer, model.parameters());
        let threads = Threads::new(config.threads)?;
        let team =
            (engine == Engine::Team).then(|| Team::new(&model, threads.count(), config.batch_size));
        let sparse = sae.then(|| SparseEngine {
            step: SaeStep::new(&model, config.batch_size),
            dead: DeadLatents::new(model.coding_width()),
            batch: Vec::new(),
        });
        // The team and the sparse engine keep their own step buffers; the forked step's
        // would go unused.
        let step_rows = if engine == Engine::Forked {
            config.batch_size
        } else {
            0
        };
        let work = Workspace::new(
            &model,
            step_rows,
            engine == Engine::Forked && !config.optimizer.is_plain_sgd(),
        );
        Ok(Self {
            model,
            config,
            threads,
            state,
            work,
            team,
            sparse,
            history: Vec::new(),
            position: None,
        })
    }

    /// The engine that runs the steps.
    pub fn engine(&self) -> Engine {
        if self.team.is_some() {
            Engine::Team
        } else if self.sparse.is_some() {
            Engine::Sparse
        } else {
            Engine::Forked
        }
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
        if let (Some(sparse), Some(dead)) = (trainer.sparse.as_mut(), state.dead_latents) {
            if dead.rows_since_fired.len() != trainer.model.coding_width() {
                return Err(TrainError::Invalid(
                    "the dead latents' counts do not fit the model".into(),
                ));
            }
            sparse.dead = dead;
        }
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
            dead_latents: self.sparse.as_ref().map(|s| s.dead.clone()),
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
        let (order, plan) = (&mut self.work.order, &mut self.work.plan);
        match (self.config.shuffle, self.config.shuffle_window_bytes) {
            (true, None) => train.shuffled_order(self.config.seed, epoch as u64, order),
            (true, Some(window)) => {
                train.window_shuffled_order(self.config.seed, epoch as u64, window, order, plan)
            }
            (false, None) => train.sequential_order(order),
            (false, Some(window)) => train.window_sequential_order(window, order, plan),
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
        let plan = std::mem::take(&mut self.work.plan);
        let mut readahead = Readahead::new(train, &plan, batch);
        readahead.before_step(first_step);
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
                    readahead.before_step(step + 1);
                    tally.step_end(step, rows, stats, penalty)
                };
                team.train(&self.threads, &mut self.model, &epoch_steps, &mut step_end)
            }
            None if self.sparse.is_some() => {
                self.train_sparse_steps(train, first_step..steps, &mut tally, &mut readahead)
            }
            None => self.train_steps(train, first_step..steps, &mut tally, &mut readahead),
        };
        readahead.finish();
        self.work.plan = plan;
        self.position = tally.stopped_at.take();
        outcome?;

        let evaluation = valid.map(|v| self.model.evaluate_with(&self.threads, v, batch));
        // Metrics by kind: rounded accuracy for values in [0, 1], the reconstruction's
        // and the codes' statistics for unbounded rows.
        let bounded = self.model.config().loss == Loss::Bce;
        let bounded_only = |v: Option<f64>| v.filter(|_| bounded);
        let unbounded_only = |v: Option<f64>| v.filter(|_| !bounded);
        Ok(EpochMetrics {
            epoch,
            loss: tally.loss_sum / tally.seen as f64,
            rounded_accuracy: tally.equal as f64 / (tally.seen * width) as f64,
            val_loss: evaluation.map(|e| e.loss),
            val_rounded_accuracy: bounded_only(evaluation.map(|e| e.rounded_accuracy)),
            mean_coding_activation: evaluation.map(|e| e.mean_coding_activation),
            mse: evaluation.and_then(|e| e.mse),
            fvu: evaluation.and_then(|e| e.fvu),
            l0: unbounded_only(evaluation.map(|e| e.l0)),
            dead_latents: evaluation.map(|e| e.dead_latents).filter(|_| !bounded),
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
        readahead: &mut Readahead<'_>,
    ) -> Result<(), TrainError> {
        let batch = self.config.batch_size;
        for step in steps {
            readahead.before_step(step);
            let start = step * batch;
            let rows = batch.min(train.len() - start);
            // The next batch's samples are scattered over the data set: have them on
            // their way from memory while this step computes.
            let next = (start + rows).min(train.len())..(start + rows + batch).min(train.len());
            let (stats, penalty) = self.work.step(
                &self.threads,
                &mut self.model,
                train,
                start..start + rows,
                next,
                &self.config.optimizer,
                &mut self.state,
            );
            tally.step_end(step, rows, stats, penalty)?;
        }
        Ok(())
    }
}

impl Trainer {
    /// Steps `steps` of the epoch of a sparse autoencoder, with its learning-rate
    /// warm-up.
    fn train_sparse_steps(
        &mut self,
        train: &Dataset,
        steps: Range<usize>,
        tally: &mut EpochTally<'_>,
        readahead: &mut Readahead<'_>,
    ) -> Result<(), TrainError> {
        let batch = self.config.batch_size;
        let sparse = self.sparse.as_mut().expect("a sparse engine");
        let warmup = self.model.config().sae.map_or(0, |s| s.lr_warmup_steps);
        for step in steps {
            readahead.before_step(step);
            let start = step * batch;
            let rows = batch.min(train.len() - start);
            let taken = self.state.iterations;
            let lr_scale = if warmup == 0 {
                1.0
            } else {
                ((taken + 1) as f32 / warmup as f32).min(1.0)
            };
            let stats = sparse.step.train(
                &self.threads,
                &mut self.model,
                train,
                &self.work.order[start..start + rows],
                &mut sparse.batch,
                &self.config.optimizer,
                lr_scale,
                &mut self.state,
                &mut sparse.dead,
            )?;
            // The loss of an SAE is per row (summed over its values), as its trainers
            // report it.
            let width = self.model.input_width() as f64;
            let output = OutputStats {
                loss_sum: stats.squared_error * width,
                ..OutputStats::default()
            };
            tally.step_end(step, rows, output, stats.penalty)?;
        }
        Ok(())
    }
}

/// Advice to the kernel as an epoch reads a training set by windows (a [`ReadPlan`]):
/// when a step's batch enters a window, the window after it is asked for, so that it is
/// read from disk while the steps compute, and before every step everything of the file
/// but the blocks of the windows the batch reads is let go of, so that resident memory
/// stays about one window however large the file. Before every step rather than at each
/// window's entry: a page fault maps the whole large folio around the faulting page on
/// recent kernels, and the last row of a block reaches into the folio after it, of
/// another block; released at once, those folios stay a step's worth.
struct Readahead<'a> {
    train: &'a Dataset,
    plan: &'a ReadPlan,
    batch: usize,
    /// Whether a step of this epoch has been advised for (the first may follow a
    /// resumption, mid-epoch).
    started: bool,
    /// Windows asked for: `..asked`.
    asked: usize,
    /// The blocks held, sorted (kept to reuse its allocation).
    held: Vec<Range<usize>>,
}

impl<'a> Readahead<'a> {
    fn new(train: &'a Dataset, plan: &'a ReadPlan, batch: usize) -> Self {
        Self {
            train,
            plan,
            batch,
            started: false,
            asked: 0,
            held: Vec::new(),
        }
    }

    /// Advice before step `step` (from 0) of the epoch.
    fn before_step(&mut self, step: usize) {
        let windows = self.plan.windows();
        if windows == 0 {
            return;
        }
        let end = self.plan.positions(windows - 1).end;
        let start = step * self.batch;
        if start >= end {
            return;
        }
        let first = self.plan.window_of(start);
        let last = self.plan.window_of((start + self.batch).min(end) - 1);
        let ahead = (last + 1).min(windows - 1);
        if !self.started {
            self.started = true;
            self.asked = first;
        }
        while self.asked <= ahead {
            for block in self.plan.blocks(self.asked) {
                self.train.advise(block.clone(), Residency::Soon);
            }
            self.asked += 1;
        }
        self.hold_only(first..last + 1);
    }

    /// Lets go of every part of the training set but the blocks of `windows`.
    fn hold_only(&mut self, windows: Range<usize>) {
        self.held.clear();
        for window in windows {
            self.held.extend_from_slice(self.plan.blocks(window));
        }
        self.held.sort_unstable_by_key(|block| block.start);
        let mut from = self.train.offset();
        let end = from + self.train.len();
        for block in self.held.iter().chain(std::iter::once(&(end..end))) {
            if block.start > from {
                self.train.advise(from..block.start, Residency::Done);
            }
            from = from.max(block.end);
        }
    }

    /// Lets go of the whole training set, at the end of the epoch.
    fn finish(&mut self) {
        if self.started {
            self.hold_only(0..0);
        }
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
