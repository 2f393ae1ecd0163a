//! Hand-written SIMD kernels for training dense and sparse autoencoders on the CPU.
//!
//! Each module holds one family of operations, written once generically over
//! [`pulp::Simd`] and dispatched at run time to the widest instruction set the CPU has
//! (AVX-512, AVX2+FMA, NEON, or portable scalar code; see [`isa`]). Beside every kernel
//! sits a plain scalar `reference` implementation that the test suite compares it with.
//!
//! - [`math`]: vectorised `exp`, `ln`, sigmoid and SELU with stated error bounds.
//! - [`activation`]: fused dense-layer epilogue `act(acc + bias)` and its backward.
//! - [`sparsity`]: KL, L1, L2 and squared mean-target activity penalties fused with the
//!   coding layer's backward.
//! - [`select`]: keep the `k` largest values of each row (a k-sparse coding layer).
//! - [`output`]: fused sigmoid + binary cross-entropy (or squared error) output step.
//! - [`gather`]: u8 rows of a memory-mapped dataset to a scaled f32 batch.
//! - [`reduce`]: column sums (bias gradients), sums, `y += alpha x`.
//! - [`optim`]: SGD with momentum and Adam updates.
//! - [`sparse_rows`]: the latents a sparse autoencoder keeps, by row and by latent.
//! - [`topk`]: top-k, batch top-k, threshold and masked selection fused with bias and ReLU.
//! - [`sparse`]: sparse-times-dense products of the kept latents with a decoder's rows.
//! - [`unit_norm`]: row norms, normalisation and the gradient projection for unit rows.
//! - [`mod@transpose`]: a matrix copied into its transpose, by 8 x 8 blocks in registers.
//! - [`matrix`]: strided matrix views ([`MatRef`], [`MatMut`]), validated when built, that
//!   split by rows or columns for threads.
//! - [`mod@gemm`]: `C <- alpha A B + beta C` on those views, register-tiled for the
//!   products of training and inference, packed and cache-blocked for larger ones
//!   (through `matrixmultiply` without AVX2).
//!
//! No kernel allocates, except the GEMM's per-thread buffers on a thread's first product
//! of each kind, `matrixmultiply`'s packing buffers, and the selections' caller-owned
//! `SelectScratch` and `SparseRows`, which grow until they have held the largest batch.
//! Shape preconditions are checked up front and violations panic with a message naming
//! the kernel (GEMM returns an error instead).

#![warn(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]

pub mod activation;
pub mod gather;
pub mod gemm;
pub mod isa;
pub mod layout;
pub mod math;
pub mod matrix;
pub mod optim;
pub mod output;
pub mod reduce;
pub mod select;
pub mod sparse;
pub mod sparse_rows;
pub mod sparsity;
pub mod topk;
pub mod transpose;
pub mod unit_norm;

pub use activation::Activation;
pub use gemm::{gemm, GemmError};
pub use layout::Layout;
pub use matrix::{MatMut, MatRef};
pub use output::{OutputLoss, OutputStats};
