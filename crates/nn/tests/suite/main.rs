//! The models, data sources, engines and training loop, in one test binary so that the
//! tests are linked once. The allocation count (`allocations.rs`) and the resident-memory
//! tests (`streaming.rs`) keep processes of their own, where nothing else runs.

mod common;

mod data_files;
mod engines;
mod fidelity;
mod gradients;
mod metrics;
mod recovery;
mod sae;
mod training;
