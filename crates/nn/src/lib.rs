//! Dense sparse autoencoders with the semantics of Keras, trained through the SIMD
//! kernels of the `kernels` crate.
//!
//! - [`source`]: data files recognised by their first bytes, memory-mapped, held the way
//!   their rows are cheapest to gather, and scaled as their element type asks.
//! - [`idx`], [`npy`], [`tensors`]: the IDX, `.npy` and safetensors formats, every header
//!   validated before it is trusted (and `.npy` written).
//! - [`cache`]: gzipped files decompressed once into a cache.
//! - [`dataset`]: samples, train/validation split, shuffled batches.
//! - [`config`]: the architecture (layers, coding layer, penalty, loss) and its JSON.
//! - [`layer`], [`model`]: dense layers and the autoencoder's forward pass.
//! - [`inference`]: evaluation and its metrics, encoding, decoding, reconstruction.
//! - `step` (internal): the arithmetic of a training step, written once for every
//!   engine; [`loss`], [`penalty`] and [`coding`] are its three dispatches.
//! - [`params`]: a model's parameters as named tensors.
//! - [`optimizer`]: SGD (with momentum, Nesterov) and Adam.
//! - [`trainer`]: the training loop, its metrics, and progress observers.
//! - [`parallel`]: the step's products split across threads, deterministically.
//! - `team` (internal): plain SGD epochs run by threads that each own a part of every
//!   layer, meeting at barriers.
//! - `barrier` (internal): the spinning barrier the team meets at; [`phase_times`]: where
//!   the team's step spends its time (with the `phase-times` feature).
//! - [`sae`]: the sparse autoencoders of interpretability (TopK, ReLU+L1): their
//!   configuration, initialisation and sparse training step.
//! - [`synthetic`]: rows built from known sparse features, and how well a decoder
//!   recovers them; [`geometric_median`]: Weiszfeld's iteration.
//! - [`checkpoint`]: safetensors save and load.
//! - [`error`]: what can go wrong, with the file and the reason.

#![warn(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]

mod barrier;
pub mod cache;
pub mod checkpoint;
pub mod coding;
pub mod config;
pub mod dataset;
pub mod error;
pub mod geometric_median;
pub mod idx;
pub mod inference;
pub mod layer;
pub mod loss;
pub mod model;
pub mod npy;
pub mod optimizer;
pub mod parallel;
pub mod params;
pub mod penalty;
pub mod phase_times;
pub mod sae;
pub mod source;
mod step;
pub mod synthetic;
mod team;
pub mod tensors;
pub mod trainer;

pub use config::{Activation, Coding, LayerSpec, Loss, ModelConfig, Penalty};
pub use dataset::Dataset;
pub use error::{DataError, FileError, IdxError, ModelError, TrainError};
pub use model::{Autoencoder, Evaluation};
pub use optimizer::Optimizer;
pub use source::{OpenOptions, Scaling};
pub use trainer::{
    Control, Engine, EpochMetrics, EpochPosition, Observer, StepProgress, TrainConfig, Trainer,
    TrainerState,
};
