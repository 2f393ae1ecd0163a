//! The shape of a row-major matrix stored in a slice.

/// A row-major matrix of `rows x cols` whose row `i` starts at `i * row_stride`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Number of rows.
    pub rows: usize,
    /// Number of columns (values per row).
    pub cols: usize,
    /// Distance in elements between the starts of consecutive rows (`>= cols`).
    pub row_stride: usize,
}

impl Layout {
    /// A densely packed `rows x cols` matrix (`row_stride == cols`).
    pub const fn contiguous(rows: usize, cols: usize) -> Self {
        Self {
            rows,
            cols,
            row_stride: cols,
        }
    }

    /// A `rows x cols` matrix whose rows are `row_stride` elements apart.
    ///
    /// # Panics
    /// If `row_stride < cols` (rows would overlap).
    pub const fn strided(rows: usize, cols: usize, row_stride: usize) -> Self {
        assert!(row_stride >= cols, "row_stride must be at least cols");
        Self {
            rows,
            cols,
            row_stride,
        }
    }

    /// Number of elements `rows * cols`.
    pub const fn len(&self) -> usize {
        self.rows * self.cols
    }

    /// Whether the matrix holds no element.
    pub const fn is_empty(&self) -> bool {
        self.rows == 0 || self.cols == 0
    }

    /// The smallest slice length that holds every element.
    pub const fn required_len(&self) -> usize {
        if self.is_empty() {
            0
        } else {
            (self.rows - 1) * self.row_stride + self.cols
        }
    }

    /// The index range of row `i` in the slice. Rows of no columns are `0..0`: a
    /// matrix without columns needs no elements ([`Layout::required_len`]), so its rows
    /// must index even an empty slice.
    #[inline(always)]
    pub fn row(&self, i: usize) -> core::ops::Range<usize> {
        let start = if self.cols == 0 {
            0
        } else {
            i * self.row_stride
        };
        start..start + self.cols
    }

    /// Panics with a message naming `what` unless a slice of `len` elements holds this matrix.
    #[track_caller]
    pub(crate) fn check(&self, len: usize, what: &str) {
        assert!(
            self.row_stride >= self.cols,
            "{what}: row_stride {} is less than cols {}",
            self.row_stride,
            self.cols
        );
        assert!(
            len >= self.required_len(),
            "{what}: slice of {len} elements is too short for a {}x{} matrix with row stride {}",
            self.rows,
            self.cols,
            self.row_stride
        );
    }
}

#[cfg(test)]
mod tests {
    use super::Layout;

    #[test]
    fn rows_of_a_matrix_without_columns_index_an_empty_slice() {
        let empty: [f32; 0] = [];
        let layout = Layout::strided(4, 0, 3);
        assert_eq!(layout.required_len(), 0);
        for i in 0..4 {
            assert!(empty[layout.row(i)].is_empty());
        }
        assert_eq!(Layout::strided(3, 2, 5).row(2), 10..12);
    }
}
