//! `C <- alpha * A * B + beta * C` on strided f32 matrices: our register-tiled kernel for
//! the products of training and inference (a batch of up to 1024 rows by layers up to
//! 800 units wide, or any product 64 deep or 64 rows tall), `matrixmultiply` for
//! larger ones.
//!
//! A matrix view carries a row stride and a column stride, so a transpose is a swap of
//! the two ([`MatRef::t`]) and the three products a dense layer needs are one call each:
//! forward `Z = X W`, weight gradient (fused with SGD) `W <- W - lr X^T dZ`, and input
//! gradient `dX = dZ W^T`. Views are validated when built, so the unsafe call below only
//! ever sees in-bounds, non-aliasing strides.

use std::marker::PhantomData;

mod tiled;

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

/// Whether the register-tiled kernel runs a product rather than `matrixmultiply`: the
/// products of a training step at batch sizes up to 64, and those of a batch of up to
/// [`TILED_MAX_ROWS`] rows by a layer up to [`TILED_MAX_COLUMNS`] units wide (larger
/// batches, inference), which it runs without allocating. It reads each block of `A` (up
/// to 1024 rows by 128 steps, 512 KB) once per 32 columns of `B`, from L2; a taller `A`
/// or a wider `B` gains from `matrixmultiply`'s cache blocking (at 2048 x 784 x 1000, with
/// the tiled kernel forced, 72 GFLOP/s against 95).
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

fn reach(rows: usize, cols: usize, row_stride: usize, col_stride: usize) -> Option<usize> {
    if rows == 0 || cols == 0 {
        return Some(0);
    }
    (rows - 1)
        .checked_mul(row_stride)?
        .checked_add((cols - 1).checked_mul(col_stride)?)?
        .checked_add(1)
}

fn check_bounds(
    len: usize,
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
) -> Result<(), GemmError> {
    let needed = reach(rows, cols, row_stride, col_stride);
    // matrixmultiply takes isize strides and offsets.
    match needed {
        Some(needed) if needed <= len && needed <= isize::MAX as usize => Ok(()),
        _ => Err(GemmError::OutOfBounds {
            rows,
            cols,
            row_stride,
            col_stride,
            needed: needed.unwrap_or(usize::MAX),
            len,
        }),
    }
}

/// A read-only `rows x cols` view: element `(i, j)` is `data[i * row_stride + j * col_stride]`.
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

impl<'a> MatRef<'a> {
    /// A strided view; fails if any element lies outside `data`.
    pub fn new(
        data: &'a [f32],
        rows: usize,
        cols: usize,
        row_stride: usize,
        col_stride: usize,
    ) -> Result<Self, GemmError> {
        check_bounds(data.len(), rows, cols, row_stride, col_stride)?;
        Ok(Self {
            data,
            rows,
            cols,
            row_stride,
            col_stride,
        })
    }

    /// A densely packed row-major view.
    pub fn row_major(data: &'a [f32], rows: usize, cols: usize) -> Result<Self, GemmError> {
        Self::new(data, rows, cols, cols, 1)
    }

    /// The transpose (no copy: the strides swap).
    pub fn t(self) -> Self {
        Self {
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
            ..self
        }
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of columns.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The rows `range` of this view (no copy).
    ///
    /// # Panics
    /// If `range` reaches past the last row.
    pub fn rows_range(self, range: core::ops::Range<usize>) -> Self {
        assert!(
            range.start <= range.end && range.end <= self.rows,
            "MatRef::rows_range out of range"
        );
        if range.is_empty() {
            return Self { rows: 0, ..self };
        }
        Self {
            data: &self.data[range.start * self.row_stride..],
            rows: range.len(),
            ..self
        }
    }

    /// Columns `range` of the view.
    ///
    /// # Panics
    /// If the range is reversed or ends past the last column.
    pub fn cols_range(self, range: core::ops::Range<usize>) -> Self {
        assert!(
            range.start <= range.end && range.end <= self.cols,
            "MatRef::cols_range out of range"
        );
        if range.is_empty() || self.rows == 0 {
            return Self {
                cols: range.len(),
                ..self
            };
        }
        Self {
            data: &self.data[range.start * self.col_stride..],
            cols: range.len(),
            ..self
        }
    }

    /// Element `(i, j)`.
    ///
    /// # Panics
    /// If `(i, j)` is outside the view.
    pub fn get(&self, i: usize, j: usize) -> f32 {
        assert!(
            i < self.rows && j < self.cols,
            "MatRef::get: ({i}, {j}) out of range"
        );
        self.data[i * self.row_stride + j * self.col_stride]
    }
}

/// A mutable `rows x cols` view whose elements occupy distinct locations.
///
/// It holds a pointer rather than a slice because [`MatMut::split_cols`] hands out two
/// views whose elements interleave in memory; nothing here ever makes a slice of a view's
/// whole span, so two such views never alias a `&mut`.
#[derive(Debug)]
pub struct MatMut<'a> {
    ptr: *mut f32,
    /// Elements from `ptr` that the view may reach (all are in one borrowed slice).
    len: usize,
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
    borrow: PhantomData<&'a mut [f32]>,
}

// SAFETY: a view is an exclusive borrow of the distinct elements it addresses, as a
// `&mut [f32]` is of its slice; views made by splitting address disjoint elements.
unsafe impl Send for MatMut<'_> {}
// SAFETY: as for `Send`; a `&MatMut` gives no access to the elements.
unsafe impl Sync for MatMut<'_> {}

impl<'a> MatMut<'a> {
    /// A strided view; fails if any element lies outside `data` or two elements alias.
    ///
    /// Accepted layouts are those where one stride steps over a whole line of the
    /// other (`row_stride >= cols * col_stride` or `col_stride >= rows * row_stride`).
    pub fn new(
        data: &'a mut [f32],
        rows: usize,
        cols: usize,
        row_stride: usize,
        col_stride: usize,
    ) -> Result<Self, GemmError> {
        check_bounds(data.len(), rows, cols, row_stride, col_stride)?;
        let distinct = rows <= 1 && (cols <= 1 || col_stride >= 1)
            || cols <= 1 && row_stride >= 1
            || col_stride >= 1 && row_stride >= cols * col_stride
            || row_stride >= 1 && col_stride >= rows * row_stride;
        if !distinct {
            return Err(GemmError::AliasedOutput {
                rows,
                cols,
                row_stride,
                col_stride,
            });
        }
        Ok(Self {
            ptr: data.as_mut_ptr(),
            len: data.len(),
            rows,
            cols,
            row_stride,
            col_stride,
            borrow: PhantomData,
        })
    }

    /// A densely packed row-major view.
    pub fn row_major(data: &'a mut [f32], rows: usize, cols: usize) -> Result<Self, GemmError> {
        Self::new(data, rows, cols, cols, 1)
    }

    /// The transpose (no copy: the strides swap).
    pub fn t(self) -> Self {
        Self {
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
            ..self
        }
    }

    /// Element `(i, j)`'s location.
    ///
    /// # Safety
    /// `i < rows` and `j < cols`.
    unsafe fn at(&mut self, i: usize, j: usize) -> *mut f32 {
        self.ptr.add(i * self.row_stride + j * self.col_stride)
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of columns.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Splits into rows `..at` and `at..`, two views over disjoint parts of the slice, so
    /// they can be written from two threads. `None` where a row's elements are not all
    /// before the next row's (a column-major view), as the parts would interleave.
    ///
    /// # Panics
    /// If `at > rows`.
    pub fn split_rows(self, at: usize) -> Option<(Self, Self)> {
        assert!(at <= self.rows, "MatMut::split_rows past the last row");
        let row_span = if self.cols == 0 {
            0
        } else {
            (self.cols - 1) * self.col_stride + 1
        };
        if self.rows > 1 && row_span > self.row_stride {
            return None;
        }
        let cut = (at * self.row_stride).min(self.len);
        let bottom = Self {
            // SAFETY: `cut <= len`, inside the borrowed slice.
            ptr: unsafe { self.ptr.add(cut) },
            len: self.len - cut,
            rows: self.rows - at,
            ..self
        };
        let top = Self {
            len: cut,
            rows: at,
            ..self
        };
        Some((top, bottom))
    }

    /// A shorter-lived view of the same elements, so that a view can be passed to
    /// [`gemm`] and used again afterwards.
    pub fn reborrow(&mut self) -> MatMut<'_> {
        MatMut {
            borrow: PhantomData,
            ..*self
        }
    }

    /// Row `i` as a slice, where a row's elements are adjacent (`col_stride == 1`);
    /// `None` otherwise. The slice holds only this view's elements of the row, so views
    /// from [`MatMut::split_cols`] give disjoint slices.
    ///
    /// # Panics
    /// If `i >= rows`.
    pub fn row_mut(&mut self, i: usize) -> Option<&mut [f32]> {
        assert!(i < self.rows, "MatMut::row_mut past the last row");
        if self.col_stride != 1 && self.cols > 1 {
            return None;
        }
        let start = i * self.row_stride;
        // SAFETY: the row's `cols` adjacent elements are inside the borrowed slice (the
        // bounds check covered every element) and belong to this view alone; the slice
        // borrows `self` mutably, so no other access to them exists while it lives.
        Some(unsafe { std::slice::from_raw_parts_mut(self.ptr.add(start), self.cols) })
    }

    /// Splits into columns `..at` and `at..`: two views whose elements interleave in
    /// memory but never coincide (the view's elements are distinct), for two threads to
    /// write.
    ///
    /// # Panics
    /// If `at > cols`.
    pub fn split_cols(self, at: usize) -> (Self, Self) {
        assert!(at <= self.cols, "MatMut::split_cols past the last column");
        let offset = if at == self.cols || self.rows == 0 {
            0
        } else {
            at * self.col_stride
        };
        let right = Self {
            // SAFETY: column `at` of a non-empty view starts at `at * col_stride`, which
            // its bounds check put inside the slice; an empty right part keeps `ptr`.
            ptr: unsafe { self.ptr.add(offset) },
            len: self.len - offset,
            cols: self.cols - at,
            ..self
        };
        let left = Self { cols: at, ..self };
        (left, right)
    }
}

/// `C <- alpha * A * B + beta * C`. With `beta == 0`, `C` is not read (NaNs in it vanish).
///
/// Fails, leaving `C` untouched, unless `A` is `m x k`, `B` is `k x n` and `C` is `m x n`.
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
    if tiled_suits(m, k, n) {
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
        // SAFETY: as below; `m`, `k` and `n` are positive.
        unsafe { product.run() };
        return Ok(());
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
