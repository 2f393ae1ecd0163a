//! The latents a sparse autoencoder keeps for a batch, stored row by row (CSR), and the
//! same entries grouped by latent (the transpose's index) for the weight gradients.
//!
//! # Invariant
//! Within a row, indices are strictly increasing (the entries are in latent order, not in
//! the order a selection ranked them). Every producer in this crate (the selections of
//! the `topk` module) writes them so, and [`SparseRows::push`] rejects anything else. Entry `e` of the whole
//! batch is `(row, indices[e], values[e])` with `offsets[row] <= e < offsets[row + 1]`;
//! arrays of per-entry values (a latent gradient, say) are aligned with this numbering.
//!
//! Both containers keep their buffers across batches: once they have held the largest
//! batch of a run, filling them again allocates nothing.

use core::ops::Range;

/// A batch of sparse rows over `cols` latents: for row `b`, the kept latents
/// `indices[offsets[b]..offsets[b + 1]]` (strictly increasing) and their `values`.
///
/// Filled row by row: [`clear`](Self::clear), then for each row [`push`](Self::push) its
/// entries and [`end_row`](Self::end_row) (or [`push_row`](Self::push_row) at once).
#[derive(Clone, Debug, PartialEq)]
pub struct SparseRows {
    cols: usize,
    offsets: Vec<usize>,
    indices: Vec<u32>,
    values: Vec<f32>,
}

impl Default for SparseRows {
    fn default() -> Self {
        Self::new(0)
    }
}

impl SparseRows {
    /// No rows, over `cols` latents.
    ///
    /// # Panics
    /// If `cols` exceeds `u32::MAX` (indices are stored as `u32`).
    pub fn new(cols: usize) -> Self {
        Self::with_capacity(cols, 0, 0)
    }

    /// No rows, over `cols` latents, with room for `rows` rows and `entries` entries.
    ///
    /// # Panics
    /// If `cols` exceeds `u32::MAX`.
    pub fn with_capacity(cols: usize, rows: usize, entries: usize) -> Self {
        let mut offsets = Vec::with_capacity(rows + 1);
        offsets.push(0);
        let mut this = Self {
            cols: 0,
            offsets,
            indices: Vec::with_capacity(entries),
            values: Vec::with_capacity(entries),
        };
        this.clear(cols);
        this
    }

    /// Makes room for `rows` more rows and `entries` more entries.
    pub fn reserve(&mut self, rows: usize, entries: usize) {
        self.offsets.reserve(rows);
        self.indices.reserve(entries);
        self.values.reserve(entries);
    }

    /// Removes every row and sets the number of latents to `cols`; keeps the buffers.
    ///
    /// # Panics
    /// If `cols` exceeds `u32::MAX`.
    pub fn clear(&mut self, cols: usize) {
        assert!(
            u32::try_from(cols).is_ok(),
            "SparseRows: {cols} latents do not fit u32 indices"
        );
        self.cols = cols;
        self.offsets.truncate(1);
        self.indices.clear();
        self.values.clear();
    }

    /// Appends entry `(index, value)` to the row being built.
    ///
    /// # Panics
    /// If `index >= cols`, or `index` is not greater than the previous index of this row.
    #[inline]
    pub fn push(&mut self, index: u32, value: f32) {
        assert!(
            (index as usize) < self.cols,
            "SparseRows::push: index {index} out of range for {} latents",
            self.cols
        );
        let row_start = self.offsets[self.offsets.len() - 1];
        if self.indices.len() > row_start {
            let last = self.indices[self.indices.len() - 1];
            assert!(
                index > last,
                "SparseRows::push: index {index} after {last}: indices must increase within a row"
            );
        }
        self.indices.push(index);
        self.values.push(value);
    }

    /// Closes the row being built (an empty row if nothing was pushed since the last).
    #[inline]
    pub fn end_row(&mut self) {
        self.offsets.push(self.indices.len());
    }

    /// Appends a whole row.
    ///
    /// # Panics
    /// If the lengths differ, an index is out of range, or the indices do not increase.
    pub fn push_row(&mut self, indices: &[u32], values: &[f32]) {
        assert_eq!(
            indices.len(),
            values.len(),
            "SparseRows::push_row: indices and values differ in length"
        );
        for (&j, &v) in indices.iter().zip(values) {
            self.push(j, v);
        }
        self.end_row();
    }

    /// Appends every completed row of `other`, which must be over the same number of
    /// latents, after these rows (joins the blocks of rows that threads filled separately).
    ///
    /// # Panics
    /// If `other.cols() != self.cols()`, or a row of `self` is still open (entries pushed
    /// since the last [`end_row`](Self::end_row)).
    pub fn append(&mut self, other: &SparseRows) {
        assert_eq!(
            other.cols, self.cols,
            "SparseRows::append: different numbers of latents"
        );
        assert_eq!(
            self.offsets[self.offsets.len() - 1],
            self.indices.len(),
            "SparseRows::append: a row is still open"
        );
        let base = self.indices.len();
        let completed = other.offsets[other.rows()];
        self.indices.extend_from_slice(&other.indices[..completed]);
        self.values.extend_from_slice(&other.values[..completed]);
        self.offsets
            .extend(other.offsets[1..].iter().map(|&o| base + o));
    }

    /// Number of latents (the bound on every index).
    #[inline]
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Number of completed rows.
    #[inline]
    pub fn rows(&self) -> usize {
        self.offsets.len() - 1
    }

    /// Number of entries in completed rows and in the row being built.
    #[inline]
    pub fn nnz(&self) -> usize {
        self.indices.len()
    }

    /// The entry numbers of row `row`.
    ///
    /// # Panics
    /// If `row >= self.rows()`.
    #[inline]
    pub fn row_range(&self, row: usize) -> Range<usize> {
        self.offsets[row]..self.offsets[row + 1]
    }

    /// The indices and values of row `row`.
    ///
    /// # Panics
    /// If `row >= self.rows()`.
    #[inline]
    pub fn row(&self, row: usize) -> (&[u32], &[f32]) {
        let range = self.row_range(row);
        (&self.indices[range.clone()], &self.values[range])
    }

    /// Row starts: `rows() + 1` entry numbers, from 0 to the entry count of the completed
    /// rows.
    #[inline]
    pub fn offsets(&self) -> &[usize] {
        &self.offsets
    }

    /// Every entry's latent index, row after row.
    #[inline]
    pub fn indices(&self) -> &[u32] {
        &self.indices
    }

    /// Every entry's value, row after row.
    #[inline]
    pub fn values(&self) -> &[f32] {
        &self.values
    }

    /// Every entry's value, to change in place (the indices stay as they are).
    #[inline]
    pub fn values_mut(&mut self) -> &mut [f32] {
        &mut self.values
    }

    /// `counts[j] += 1` for every entry of latent `j`: how often each latent fired (the
    /// dead-latent statistics), and, where nonzero, which rows of a weight matrix the
    /// batch touched.
    ///
    /// # Panics
    /// If `counts.len() != self.cols()`.
    pub fn count_latents(&self, counts: &mut [u32]) {
        assert_eq!(
            counts.len(),
            self.cols,
            "SparseRows::count_latents: counts length != cols"
        );
        for &j in &self.indices {
            counts[j as usize] += 1;
        }
    }
}

/// The entries of a [`SparseRows`] grouped by latent: for latent `j`, the entries
/// `entries[starts[j]..starts[j + 1]]` in increasing row order, each with its row.
///
/// It lets a weight-gradient kernel (the `sparse` module's) visit each gradient row once,
/// and split the latents among threads without any thread scanning the others' entries.
/// Built by a counting sort in `O(entries + cols)`; rebuilding keeps the buffers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LatentIndex {
    starts: Vec<usize>,
    rows: Vec<u32>,
    entries: Vec<u32>,
    source_rows: usize,
    source_nnz: usize,
}

impl LatentIndex {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// The index of `codes`' completed rows.
    pub fn of(codes: &SparseRows) -> Self {
        let mut index = Self::new();
        index.rebuild(codes);
        index
    }

    /// Replaces the contents with the index of `codes`' completed rows.
    ///
    /// # Panics
    /// If `codes` has `u32::MAX` entries or more, or `u32::MAX` rows or more.
    pub fn rebuild(&mut self, codes: &SparseRows) {
        let nnz = codes.offsets[codes.rows()];
        assert!(
            u32::try_from(nnz).is_ok() && u32::try_from(codes.rows()).is_ok(),
            "LatentIndex: more than u32::MAX entries or rows"
        );
        let cols = codes.cols;
        self.source_rows = codes.rows();
        self.source_nnz = nnz;
        self.starts.clear();
        self.starts.resize(cols + 1, 0);
        for &j in &codes.indices[..nnz] {
            self.starts[j as usize + 1] += 1;
        }
        for j in 0..cols {
            self.starts[j + 1] += self.starts[j];
        }
        self.rows.clear();
        self.rows.resize(nnz, 0);
        self.entries.clear();
        self.entries.resize(nnz, 0);
        // `starts[j]` serves as latent j's write cursor, then is restored below.
        for row in 0..codes.rows() {
            for e in codes.row_range(row) {
                let j = codes.indices[e] as usize;
                let slot = self.starts[j];
                self.rows[slot] = row as u32;
                self.entries[slot] = e as u32;
                self.starts[j] += 1;
            }
        }
        for j in (0..cols).rev() {
            self.starts[j + 1] = self.starts[j];
        }
        self.starts[0] = 0;
    }

    /// Number of latents.
    #[inline]
    pub fn cols(&self) -> usize {
        self.starts.len().saturating_sub(1)
    }

    /// Number of rows of the indexed batch.
    #[inline]
    pub fn source_rows(&self) -> usize {
        self.source_rows
    }

    /// Number of entries of the indexed batch.
    #[inline]
    pub fn nnz(&self) -> usize {
        self.source_nnz
    }

    /// The rows in which latent `j` was kept (increasing), and the entry number of each.
    ///
    /// # Panics
    /// If `j >= self.cols()`.
    #[inline]
    pub fn latent(&self, j: usize) -> (&[u32], &[u32]) {
        let range = self.starts[j]..self.starts[j + 1];
        (&self.rows[range.clone()], &self.entries[range])
    }

    /// How many entries latents `latents` hold together (to balance threads' shares).
    ///
    /// # Panics
    /// If the range reaches past `self.cols()`.
    #[inline]
    pub fn entries_in(&self, latents: Range<usize>) -> usize {
        self.starts[latents.end] - self.starts[latents.start]
    }

    /// The latents kept at least once, in increasing order: the rows of a weight
    /// gradient that the batch touched.
    pub fn touched(&self) -> impl Iterator<Item = usize> + '_ {
        self.starts
            .windows(2)
            .enumerate()
            .filter(|(_, w)| w[1] > w[0])
            .map(|(j, _)| j)
    }
}
