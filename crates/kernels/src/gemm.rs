//! `C <- alpha * A * B + beta * C` on strided f32 matrices: our register-tiled kernel for
//! the products of training and inference (a batch of up to 1024 rows by layers up to
//! 800 units wide, or any product 64 deep or 64 rows tall), our packed, cache-blocked
//! kernel for larger ones (a sparse autoencoder's encoder and decoder), and
//! `matrixmultiply` for those where neither AVX2 nor AVX-512 is available.
//!
//! The operands are the strided views of [`crate::matrix`], so a transpose is a swap of
//! the two strides ([`MatRef::t`]) and the three products a dense layer needs are one call
//! each: forward `Z = X W`, weight gradient (fused with SGD) `W <- W - lr X^T dZ`, and
//! input gradient `dX = dZ W^T`. Views are validated when built, so the unsafe calls below
//! only ever see in-bounds, non-aliasing strides.

mod packed;
mod tiled;

pub use crate::matrix::{MatMut, MatRef};

use std::cell::Cell;

/// The kernels a product can run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kernel {
    /// The register-tiled kernel, for the products of training (`gemm/tiled.rs`).
    Tiled,
    /// The packed, cache-blocked kernel, for larger products, with AVX2 or AVX-512
    /// (`gemm/packed.rs`).
    Packed,
    /// `matrixmultiply`, for larger products where neither AVX2 nor AVX-512 is there
    /// (the packed kernel's tiles are made for their registers).
    Matrixmultiply,
}

thread_local! {
    static FORCED_KERNEL: Cell<Option<Kernel>> = const { Cell::new(None) };
}

/// The kernel [`gemm`] runs an `m x k` by `k x n` product on, on this thread and its
/// instruction set ([`crate::isa::current`]), as [`with_kernel`] may have forced it.
pub fn kernel_for(m: usize, k: usize, n: usize) -> Kernel {
    match FORCED_KERNEL.with(Cell::get) {
        Some(kernel) => kernel,
        None if tiled_suits(m, k, n) => Kernel::Tiled,
        None if packed::suits(crate::isa::current()) => Kernel::Packed,
        None => Kernel::Matrixmultiply,
    }
}

/// Runs `f` with every product this thread starts in it on `kernel`, whatever its shape
/// and the instruction set: for the benchmarks and tests that compare the kernels at one
/// shape. Products run on other threads are not affected. The kernel chosen before is
/// restored when `f` returns or unwinds.
pub fn with_kernel<R>(kernel: Kernel, f: impl FnOnce() -> R) -> R {
    crate::isa::with_override(&FORCED_KERNEL, kernel, f)
}

/// Allocates the calling thread's packing buffer (a thread's first product does it
/// otherwise): for worker threads, so that a step that happens to be the first to use
/// one does not allocate.
pub fn reserve_thread_buffer() {
    tiled::reserve_buffer();
}

/// Rows of `A` (a batch) up to which the register-tiled kernel runs a product whose `B`
/// is at most [`TILED_MAX_COLUMNS`] wide, without allocating.
pub const TILED_MAX_ROWS: usize = 1024;

/// Columns of `B` (a layer's units) up to which the register-tiled kernel runs a product
/// whose `A` has at most [`TILED_MAX_ROWS`] rows.
pub const TILED_MAX_COLUMNS: usize = 800;

/// Whether the register-tiled kernel runs a product rather than the packed one (or
/// `matrixmultiply` without AVX2): the
/// products of a training step at batch sizes up to 64, and those of a batch of up to
/// [`TILED_MAX_ROWS`] rows by a layer up to [`TILED_MAX_COLUMNS`] units wide (larger
/// batches, inference), which it runs without allocating. It reads each block of `A` (up
/// to 1024 rows by 128 steps, 512 KB) once per 32 columns of `B`, from L2; a taller `A`
/// or a wider `B` gains from the cache blocking of the packed kernel or of
/// `matrixmultiply` (measured with `cargo bench -p kernels --bench gemm_compare --
/// --shape 2048x784x1000 --kernel tiled`; the kernels README has the figures).
fn tiled_suits(m: usize, k: usize, n: usize) -> bool {
    m <= 64 || k <= 64 || (m <= TILED_MAX_ROWS && n <= TILED_MAX_COLUMNS)
}

/// Why a matrix view or a product was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GemmError {
    /// Some element of the view lies past the end of its slice.
    #[error("{rows}x{cols} view with strides ({row_stride}, {col_stride}) needs {needed} elements, slice has {len}")]
    OutOfBounds {
        /// Rows of the view.
        rows: usize,
        /// Columns of the view.
        cols: usize,
        /// Row stride.
        row_stride: usize,
        /// Column stride.
        col_stride: usize,
        /// Elements the view reaches (or `usize::MAX` on overflow).
        needed: usize,
        /// Length of the slice.
        len: usize,
    },
    /// Two elements of an output view share a memory location.
    #[error("output view {rows}x{cols} with strides ({row_stride}, {col_stride}) maps two elements to one location")]
    AliasedOutput {
        /// Rows of the view.
        rows: usize,
        /// Columns of the view.
        cols: usize,
        /// Row stride.
        row_stride: usize,
        /// Column stride.
        col_stride: usize,
    },
    /// The operands' shapes do not chain.
    #[error("shape mismatch: ({a_rows}x{a_cols}) * ({b_rows}x{b_cols}) into ({c_rows}x{c_cols})")]
    ShapeMismatch {
        /// Rows of A.
        a_rows: usize,
        /// Columns of A.
        a_cols: usize,
        /// Rows of B.
        b_rows: usize,
        /// Columns of B.
        b_cols: usize,
        /// Rows of C.
        c_rows: usize,
        /// Columns of C.
        c_cols: usize,
    },
}

/// `C <- alpha * A * B + beta * C`. With `beta == 0`, `C` is not read (NaNs in it vanish).
///
/// Fails, leaving `C` untouched, unless `A` is `m x k`, `B` is `k x n` and `C` is `m x n`.
///
/// A product never reads or writes outside its own columns and rows of `C`: every element
/// it touches is one of the view's (a ragged edge is written back only over columns of the
/// view itself), whichever kernel runs it. Callers rely on this to split `C` by columns
/// ([`MatMut::split_cols`]) or rows ([`MatMut::split_rows`]) and run the parts on
/// different threads at once.
pub fn gemm(
    alpha: f32,
    a: MatRef<'_>,
    b: MatRef<'_>,
    beta: f32,
    mut c: MatMut<'_>,
) -> Result<(), GemmError> {
    if a.cols != b.rows || a.rows != c.rows || b.cols != c.cols {
        return Err(GemmError::ShapeMismatch {
            a_rows: a.rows,
            a_cols: a.cols,
            b_rows: b.rows,
            b_cols: b.cols,
            c_rows: c.rows,
            c_cols: c.cols,
        });
    }
    let (m, k, n) = (a.rows, a.cols, b.cols);
    if m == 0 || n == 0 {
        return Ok(());
    }
    if k == 0 {
        for i in 0..m {
            for j in 0..n {
                // SAFETY: `i < m` and `j < n`, the view's shape.
                let slot = unsafe { &mut *c.at(i, j) };
                *slot = if beta == 0.0 { 0.0 } else { beta * *slot };
            }
        }
        return Ok(());
    }
    let product = tiled::Product {
        m,
        k,
        n,
        alpha,
        beta,
        a: a.data.as_ptr(),
        a_row_stride: a.row_stride,
        a_col_stride: a.col_stride,
        b: b.data.as_ptr(),
        b_row_stride: b.row_stride,
        b_col_stride: b.col_stride,
        c: c.ptr,
        c_row_stride: c.row_stride,
        c_col_stride: c.col_stride,
    };
    match kernel_for(m, k, n) {
        Kernel::Tiled => {
            // SAFETY: as below; `m`, `k` and `n` are positive.
            unsafe { product.run() };
            return Ok(());
        }
        Kernel::Packed => {
            // SAFETY: as below; `m`, `k` and `n` are positive.
            unsafe { packed::run(product) };
            return Ok(());
        }
        Kernel::Matrixmultiply => {}
    }
    // SAFETY: every view was bounds-checked when built (all strides and offsets fit in
    // isize and every element index is inside its slice), `c` has distinct element
    // locations, and `c` is borrowed mutably so it cannot overlap `a` or `b`.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            alpha,
            a.data.as_ptr(),
            a.row_stride as isize,
            a.col_stride as isize,
            b.data.as_ptr(),
            b.row_stride as isize,
            b.col_stride as isize,
            beta,
            c.ptr,
            c.row_stride as isize,
            c.col_stride as isize,
        );
    }
    Ok(())
}

/// Scalar references for this module's kernels.
pub mod reference {
    use super::*;

    /// Naive triple loop, accumulated in f64, for [`super::gemm`].
    pub fn gemm(alpha: f32, a: MatRef<'_>, b: MatRef<'_>, beta: f32, mut c: MatMut<'_>) {
        for i in 0..a.rows {
            for j in 0..b.cols {
                let dot: f64 = (0..a.cols)
                    .map(|p| f64::from(a.get(i, p)) * f64::from(b.get(p, j)))
                    .sum();
                // SAFETY: `i < a.rows` and `j < b.cols`, the view's shape.
                let slot = unsafe { &mut *c.at(i, j) };
                let prior = if beta == 0.0 {
                    0.0
                } else {
                    f64::from(beta) * f64::from(*slot)
                };
                *slot = (f64::from(alpha) * dot + prior) as f32;
            }
        }
    }
}
