//! What training is told and what it reports: the settings, each epoch's metrics, the
//! progress within an epoch, the state a resumed run needs, and the observer that
//! receives progress.

use crate::error::TrainError;
use crate::optimizer::Optimizer;
use serde::{Deserialize, Serialize};

/// How to train.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Passes over the training set.
    pub epochs: usize,
    /// Samples per step (the last step of an epoch may have fewer).
    pub batch_size: usize,
    /// Reshuffle the training set every epoch.
    pub shuffle: bool,
    /// For training sets larger than memory: shuffle (or read, unshuffled) within windows
    /// of about this many bytes of the file, reading ahead of the window in use and
    /// letting go of the one behind it (see [`crate::Dataset::window_shuffled_order`]).
    /// `None` shuffles the whole set at once, as does a set that fits in one window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shuffle_window_bytes: Option<usize>,
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
            shuffle_window_bytes: None,
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
        if self.shuffle_window_bytes == Some(0) {
            return Err(TrainError::Invalid(
                "the shuffle window must be at least 1 byte".into(),
            ));
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
    /// Validation rounded accuracy (models with a BCE loss, whose values lie in [0, 1]).
    pub val_rounded_accuracy: Option<f64>,
    /// Mean coding activation over the validation set.
    pub mean_coding_activation: Option<f64>,
    /// Validation mean squared error per value (models with an MSE loss, whose rows are
    /// unbounded floats; so are the next three).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mse: Option<f64>,
    /// Validation fraction of variance unexplained.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fvu: Option<f64>,
    /// Mean active (`> 0`) coding units per validation sample.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub l0: Option<f64>,
    /// Coding units never active on the validation set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_latents: Option<usize>,
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
    /// A sparse autoencoder's counts of the rows since each latent fired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_latents: Option<crate::sae::DeadLatents>,
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
