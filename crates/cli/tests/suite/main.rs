//! The `sae` binary, run as a user runs it, in one test binary so that the tests are
//! linked once.

mod common;

mod cli;
mod export;
mod reliability;
mod sae_pictures;
mod sae_train;
