//! Strided f32 matrix views, the operands of [`crate::gemm()`].
//!
//! A view carries a row stride and a column stride, so a transpose is a swap of the two
//! ([`MatRef::t`]). Views are validated when built: every element lies inside the slice
//! (with strides and offsets that fit in `isize`), and the elements of a [`MatMut`] are
//! distinct locations, so the products that take them can index them unchecked.

use std::marker::PhantomData;

use crate::gemm::GemmError;

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
    pub(crate) data: &'a [f32],
    pub(crate) rows: usize,
    pub(crate) cols: usize,
    pub(crate) row_stride: usize,
    pub(crate) col_stride: usize,
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
        self.take_rows(range, "MatRef::rows_range out of range")
    }

    /// Columns `range` of the view.
    ///
    /// # Panics
    /// If the range is reversed or ends past the last column.
    pub fn cols_range(self, range: core::ops::Range<usize>) -> Self {
        // The columns of a view are the rows of its transpose.
        self.t()
            .take_rows(range, "MatRef::cols_range out of range")
            .t()
    }

    /// The rows `range` (no copy); panics with `message` if the range is reversed or ends
    /// past the last row.
    fn take_rows(self, range: core::ops::Range<usize>, message: &str) -> Self {
        assert!(
            range.start <= range.end && range.end <= self.rows,
            "{message}"
        );
        // A view without columns has no element to start the rows at: its bounds check
        // covered none, so `range.start * row_stride` may lie past the slice.
        if range.is_empty() || self.cols == 0 {
            return Self {
                rows: range.len(),
                ..self
            };
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
///
/// It holds a pointer rather than a slice because [`MatMut::split_cols`] hands out two
/// views whose elements interleave in memory; nothing here ever makes a slice of a view's
/// whole span, so two such views never alias a `&mut`.
#[derive(Debug)]
pub struct MatMut<'a> {
    pub(crate) ptr: *mut f32,
    /// Elements from `ptr` that the view may reach (all are in one borrowed slice).
    len: usize,
    pub(crate) rows: usize,
    pub(crate) cols: usize,
    pub(crate) row_stride: usize,
    pub(crate) col_stride: usize,
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
    pub(crate) unsafe fn at(&mut self, i: usize, j: usize) -> *mut f32 {
        // SAFETY: `(i, j)` is an element of the view (the contract), which its bounds check
        // placed inside the borrowed slice.
        unsafe { self.ptr.add(i * self.row_stride + j * self.col_stride) }
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
        // Only two or more rows can interleave, and then the bounds check covered every
        // element (a view without rows or columns has none), so no product overflows.
        let row_span = if self.cols == 0 || self.rows <= 1 {
            0
        } else {
            (self.cols - 1) * self.col_stride + 1
        };
        if row_span > self.row_stride {
            return None;
        }
        // Saturating: the strides of a view without columns were never checked.
        let cut = at.saturating_mul(self.row_stride).min(self.len);
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
    /// [`gemm`](crate::gemm()) and used again afterwards.
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
        if self.cols == 0 {
            // No element of this view was bounds-checked, so row `i` may start past the
            // slice: no pointer is computed.
            return Some(&mut []);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Views with no columns or no rows: their bounds checks cover no element, so their
    /// strides may reach past the slice, and nothing may compute a pointer from them.
    #[test]
    fn views_without_columns_or_rows_split_and_give_empty_rows() {
        // No columns, rows 1000 floats apart, over an empty slice.
        let mut empty: [f32; 0] = [];
        let mut narrow = MatMut::new(&mut empty, 3, 0, 1000, 1).unwrap();
        for i in 0..3 {
            assert_eq!(narrow.row_mut(i).unwrap().len(), 0);
        }
        let (mut left, mut right) = narrow.split_cols(0);
        assert_eq!(
            (left.rows(), left.cols(), right.rows(), right.cols()),
            (3, 0, 3, 0)
        );
        assert_eq!(left.row_mut(2).unwrap().len(), 0);
        assert_eq!(right.row_mut(2).unwrap().len(), 0);
        for at in 0..=3 {
            let (mut top, mut bottom) = right.reborrow().split_rows(at).unwrap();
            assert_eq!((top.rows(), bottom.rows()), (at, 3 - at));
            for i in 0..at {
                assert_eq!(top.row_mut(i).unwrap().len(), 0);
            }
            for i in 0..3 - at {
                assert_eq!(bottom.row_mut(i).unwrap().len(), 0);
            }
        }
        // Strides no view with elements could have.
        let mut wild = MatMut::new(&mut empty, 2, 0, usize::MAX, usize::MAX).unwrap();
        assert_eq!(wild.row_mut(1).unwrap().len(), 0);
        let (_, mut bottom) = wild.split_rows(2).unwrap();
        assert_eq!(bottom.rows(), 0);
        assert_eq!(bottom.reborrow().split_cols(0).1.cols(), 0);

        // Zero-width parts of a real matrix, split at either end.
        let (m, n) = (4, 5);
        let mut data: Vec<f32> = (0..m * n).map(|i| i as f32).collect();
        let view = MatMut::row_major(&mut data, m, n).unwrap();
        let (mut none, mut all) = view.split_cols(0);
        assert_eq!((none.cols(), all.cols()), (0, n));
        assert_eq!(none.row_mut(m - 1).unwrap().len(), 0);
        let (mut all_again, mut past) = all.reborrow().split_cols(n);
        assert_eq!((all_again.cols(), past.cols()), (n, 0));
        assert_eq!(past.row_mut(m - 1).unwrap().len(), 0);
        all_again.row_mut(m - 1).unwrap()[n - 1] = -1.0;
        let (_, mut past_bottom) = past.split_rows(m).unwrap();
        assert_eq!(past_bottom.rows(), 0);
        assert_eq!(past_bottom.reborrow().split_cols(0).0.cols(), 0);
        assert_eq!(data[m * n - 1], -1.0);

        // No rows: every split works and gives views without rows.
        let mut flat = MatMut::new(&mut empty, 0, 4, usize::MAX, usize::MAX).unwrap();
        for at in [0, 2, 4] {
            let (left, right) = flat.reborrow().split_cols(at);
            assert_eq!((left.rows(), left.cols()), (0, at));
            assert_eq!((right.rows(), right.cols()), (0, 4 - at));
        }
        let (top, bottom) = flat.split_rows(0).unwrap();
        assert_eq!((top.rows(), bottom.rows(), bottom.cols()), (0, 0, 4));
        let (left, right) = MatMut::new(&mut empty, 0, 0, 7, 7).unwrap().split_cols(0);
        assert_eq!((left.cols(), right.cols()), (0, 0));

        // Read-only views without columns or rows take any range of what they have.
        let none = MatRef::new(&empty, 3, 0, 1000, 1).unwrap();
        assert_eq!(none.rows_range(1..3).rows(), 2);
        assert_eq!(none.rows_range(3..3).rows(), 0);
        assert_eq!(none.cols_range(0..0).cols(), 0);
        let flat = MatRef::new(&empty, 0, 4, 1, 1000).unwrap();
        assert_eq!(flat.cols_range(1..4).cols(), 3);
        assert_eq!(flat.rows_range(0..0).rows(), 0);
    }

    #[test]
    #[should_panic(expected = "MatMut::row_mut past the last row")]
    fn a_view_without_rows_has_no_row() {
        let mut empty: [f32; 0] = [];
        let mut flat = MatMut::new(&mut empty, 0, 4, 4, 1).unwrap();
        flat.row_mut(0);
    }
}
