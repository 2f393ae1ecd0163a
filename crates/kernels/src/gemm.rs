//! `C <- alpha * A * B + beta * C` on strided f32 matrices, through `matrixmultiply`.
//!
//! A matrix view carries a row stride and a column stride, so a transpose is a swap of
//! the two ([`MatRef::t`]) and the three products a dense layer needs are one call each:
//! forward `Z = X W`, weight gradient (fused with SGD) `W <- W - lr X^T dZ`, and input
//! gradient `dX = dZ W^T`. Views are validated when built, so the unsafe call below only
//! ever sees in-bounds, non-aliasing strides.

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
#[derive(Debug)]
pub struct MatMut<'a> {
    data: &'a mut [f32],
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

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
            data,
            rows,
            cols,
            row_stride,
            col_stride,
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
            data: self.data,
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
        let cut = (at * self.row_stride).min(self.data.len());
        let Self {
            data,
            rows,
            cols,
            row_stride,
            col_stride,
        } = self;
        let (top, bottom) = data.split_at_mut(cut);
        let part = |data, rows| Self {
            data,
            rows,
            cols,
            row_stride,
            col_stride,
        };
        Some((part(top, at), part(bottom, rows - at)))
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
    c: MatMut<'_>,
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
                let slot = &mut c.data[i * c.row_stride + j * c.col_stride];
                *slot = if beta == 0.0 { 0.0 } else { beta * *slot };
            }
        }
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
            c.data.as_mut_ptr(),
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
    pub fn gemm(alpha: f32, a: MatRef<'_>, b: MatRef<'_>, beta: f32, c: MatMut<'_>) {
        for i in 0..a.rows {
            for j in 0..b.cols {
                let dot: f64 = (0..a.cols)
                    .map(|p| f64::from(a.get(i, p)) * f64::from(b.get(p, j)))
                    .sum();
                let slot = &mut c.data[i * c.row_stride + j * c.col_stride];
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
