//! Every kernel against its scalar reference, on every instruction set the CPU offers,
//! over many lengths, tails and extreme values: a module per kernel module, in one test
//! binary so that the tests are linked once.

mod common;
mod sae_data;

mod activation;
mod gemm;
mod math;
mod output;
mod select;
mod sparse;
mod sparse_rows;
mod sparsity;
mod topk;
mod transpose;
mod unit_norm;
mod updates;
