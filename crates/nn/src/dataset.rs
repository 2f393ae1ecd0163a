//! Samples as flat rows of `features` values, split into training and validation views,
//! shuffled each epoch from a seeded RNG and gathered into a reusable f32 batch buffer.
//!
//! Where the values come from, and how they are held, is [`crate::source`]'s business:
//! u8 data (images) stays in the memory map and is scaled by `1/255` while a batch is
//! gathered, as the reference divides pixels by 255 ([`Dataset::scaling`]); f32 data is
//! read in place, byte-swapped while gathering when stored big-endian; other element types
//! are converted to f32 once when opened and used unscaled.

use crate::error::DataError;
use crate::idx::{ElementType, IdxFile};
use crate::source::{Description, OpenOptions, Residency, Scaling, Storage, Values};
use kernels::MatMut;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use crate::source::U8_SCALE;

/// The largest piece the page cache keeps a file in (a folio of one huge page on x86-64).
/// A fault on a memory-mapped file maps the whole folio around the page, so the blocks a
/// shuffle window reads are cut at multiples of it in the file: a block then never shares
/// a folio with another block, but for the one row that crosses its end.
pub const LARGE_FOLIO_BYTES: usize = 2 << 20;

/// Bytes of the file read in one piece when a training set larger than its shuffle window
/// of `window_bytes` is shuffled ([`Dataset::window_shuffled_order`]): a sixteenth of the
/// window, as a whole number of [`LARGE_FOLIO_BYTES`] from one to four of them. Large
/// enough that reading a block is sequential for the disk and that the folio its last
/// row reaches into is a small part of it; small enough that a window mixes rows from
/// many places in the file.
pub fn shuffle_block_bytes(window_bytes: usize) -> usize {
    (window_bytes / 16 / LARGE_FOLIO_BYTES).clamp(1, 4) * LARGE_FOLIO_BYTES
}

/// How an epoch's order reads its file: cut into windows, each holding the rows of a few
/// blocks of the file, so that the reader can ask for the next window ahead and let go of
/// every block it is not reading (see [`Dataset::advise`]). Empty when the order is a single
/// window, the whole set, with nothing to tell.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReadPlan {
    /// Where each window ends in the order.
    window_ends: Vec<usize>,
    /// The blocks of the file (absolute sample indices), window after window.
    blocks: Vec<Range<usize>>,
    blocks_per_window: usize,
}

impl ReadPlan {
    /// Number of windows (0 for a single window with nothing to tell).
    pub fn windows(&self) -> usize {
        self.window_ends.len()
    }

    /// The positions of the order that window `window` covers.
    pub fn positions(&self, window: usize) -> Range<usize> {
        let start = window.checked_sub(1).map_or(0, |w| self.window_ends[w]);
        start..self.window_ends[window]
    }

    /// The window holding position `position` of the order.
    pub fn window_of(&self, position: usize) -> usize {
        self.window_ends.partition_point(|&end| end <= position)
    }

    /// The blocks of the file (absolute sample indices, in file order) that window
    /// `window` reads.
    pub fn blocks(&self, window: usize) -> &[Range<usize>] {
        let start = window * self.blocks_per_window;
        &self.blocks[start..(start + self.blocks_per_window).min(self.blocks.len())]
    }

    fn clear(&mut self) {
        self.window_ends.clear();
        self.blocks.clear();
        self.blocks_per_window = 0;
    }
}

/// The first of the rows of `width` values in `values` that holds NaN or infinity, if
/// any.
pub(crate) fn first_non_finite_row(values: &[f32], width: usize) -> Option<usize> {
    values
        .chunks_exact(width)
        .position(|row| !row.iter().fold(true, |ok, v| ok & v.is_finite()))
}

#[derive(Debug)]
struct Source {
    storage: Storage,
    path: Option<PathBuf>,
    description: Option<Description>,
}

/// A view of consecutive samples of a data source; cheap to clone and split.
#[derive(Clone, Debug)]
pub struct Dataset {
    source: Arc<Source>,
    rows: Range<usize>,
    features: usize,
}

impl Dataset {
    /// Opens a data file of samples, of any format [`crate::source`] reads (IDX, `.npy`,
    /// safetensors with a single tensor of rows, any of them gzipped): dimension 0 counts
    /// samples, the product of the rest is the number of features (28 x 28 images give
    /// 784). Gzipped files are decompressed into `cache_dir` (default:
    /// [`crate::cache::default_cache_dir`]) first.
    pub fn open(path: &Path, cache_dir: Option<&Path>) -> Result<Self, DataError> {
        let options = OpenOptions {
            cache_dir: cache_dir.map(Path::to_path_buf),
            ..OpenOptions::default()
        };
        Self::open_with(path, &options)
    }

    /// As [`Dataset::open`], with every option: the cache directory, and the tensor of a
    /// safetensors file that holds the rows.
    pub fn open_with(path: &Path, options: &OpenOptions) -> Result<Self, DataError> {
        let opened = crate::source::open(path, options)?;
        let dims = &opened.description.shape;
        if dims.len() < 2 {
            return Err(DataError::Shape {
                path: path.to_path_buf(),
                message: format!(
                    "expected samples of rank 2 or more (e.g. [N, 28, 28]), found shape {dims:?}"
                ),
            });
        }
        let samples = dims[0];
        // With no samples the header's checks do not bound the other dimensions.
        let Some(features) = opened.description.features() else {
            return Err(DataError::Shape {
                path: path.to_path_buf(),
                message: format!(
                    "samples of shape {dims:?} would have more values than any memory holds"
                ),
            });
        };
        if features == 0 {
            return Err(DataError::Shape {
                path: path.to_path_buf(),
                message: format!("samples have no features: shape {dims:?}"),
            });
        }
        let description = opened.description.clone();
        Ok(Self {
            source: Arc::new(Source {
                storage: opened.into_storage(),
                path: Some(path.to_path_buf()),
                description: Some(description),
            }),
            rows: 0..samples,
            features,
        })
    }

    /// In-memory f32 samples, used unscaled.
    ///
    /// # Panics
    /// If `features` is 0 or does not divide `values.len()`.
    pub fn from_f32(values: Vec<f32>, features: usize) -> Self {
        let len = values.len();
        Self::in_memory(Storage::F32(values), len, features)
    }

    /// In-memory u8 samples, scaled by [`U8_SCALE`] when gathered.
    ///
    /// # Panics
    /// If `features` is 0 or does not divide `bytes.len()`.
    pub fn from_u8(bytes: Vec<u8>, features: usize) -> Self {
        let len = bytes.len();
        Self::in_memory(Storage::OwnedU8(bytes), len, features)
    }

    fn in_memory(storage: Storage, values: usize, features: usize) -> Self {
        assert!(features > 0 && values % features == 0, "ragged samples");
        Self {
            source: Arc::new(Source {
                storage,
                path: None,
                description: None,
            }),
            rows: 0..values / features,
            features,
        }
    }

    /// The file the samples came from, if any.
    pub fn path(&self) -> Option<&Path> {
        self.source.path.as_deref()
    }

    /// What the file the samples came from holds, if they came from one.
    pub fn description(&self) -> Option<&Description> {
        self.source.description.as_ref()
    }

    /// How stored values become the f32 values gathered: u8 sources (IDX u8, `.npy`
    /// `|u1`, [`Dataset::from_u8`]) are divided by 255, everything else is used as stored.
    pub fn scaling(&self) -> Scaling {
        self.source.storage.scaling()
    }

    /// The whole file as memory-mapped, header included, if the values are read from the
    /// map rather than held in memory: with [`Dataset::stored_bytes`], a way to see that
    /// no copy was made.
    pub fn mapping(&self) -> Option<&[u8]> {
        self.source.storage.mapping()
    }

    /// The bytes the values of the whole source are read from, wherever they are held.
    pub fn stored_bytes(&self) -> &[u8] {
        match self.source.storage.values() {
            Values::Bytes(bytes) => bytes,
            Values::Floats(values) => bytemuck::cast_slice(values),
            Values::BigEndian(words) => bytemuck::cast_slice(words),
        }
    }

    /// The first sample of this view (counting from 0, relative to the view) that holds
    /// NaN or an infinity, if any. One sequential pass over the floats, reading the
    /// samples as they are stored (mapped files stream through the page cache); u8
    /// samples are always finite and cost nothing.
    pub fn first_non_finite_row(&self) -> Option<usize> {
        let f = self.features;
        let block = self.rows.start * f..self.rows.end * f;
        match self.source.storage.values() {
            Values::Bytes(_) => None,
            Values::Floats(values) => first_non_finite_row(&values[block], f),
            Values::BigEndian(words) => words[block].chunks_exact(f).position(|row| {
                !row.iter().fold(true, |ok, &w| {
                    ok & f32::from_bits(u32::from_be(w)).is_finite()
                })
            }),
        }
    }

    /// Where this view starts in its source: the index of its first sample (0 for a
    /// whole file), to add to the positions its methods count from.
    pub fn offset(&self) -> usize {
        self.rows.start
    }

    /// Number of samples in this view.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether this view holds no sample.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Values per sample.
    pub fn features(&self) -> usize {
        self.features
    }

    /// The samples `range` of this view (relative to it).
    ///
    /// # Panics
    /// If `range` reaches past the view.
    pub fn slice(&self, range: Range<usize>) -> Self {
        assert!(
            range.start <= range.end && range.end <= self.len(),
            "slice out of range"
        );
        Self {
            source: Arc::clone(&self.source),
            rows: self.rows.start + range.start..self.rows.start + range.end,
            features: self.features,
        }
    }

    /// The first `len - valid` samples for training and the last `valid` for validation,
    /// as the reference takes the last 5000 of the training file.
    pub fn split_tail(&self, valid: usize) -> Result<(Self, Self), DataError> {
        if valid >= self.len() {
            return Err(DataError::Split {
                valid,
                total: self.len(),
            });
        }
        let cut = self.len() - valid;
        Ok((self.slice(0..cut), self.slice(cut..self.len())))
    }

    /// Fills `order` with this view's sample indices in a shuffled order that depends only
    /// on `seed` and `epoch`. Indices are absolute, ready for [`Dataset::gather`].
    pub fn shuffled_order(&self, seed: u64, epoch: u64, order: &mut Vec<usize>) {
        order.clear();
        order.extend(self.rows.clone());
        order.shuffle(&mut shuffle_rng(seed, epoch));
    }

    /// Fills `order` with this view's sample indices shuffled within windows of about
    /// `window_bytes` bytes of the file, and `plan` with how that order reads the file,
    /// for sets larger than the page cache allows: the file is cut into blocks of
    /// [`shuffle_block_bytes`] (at multiples of it from the file's start, a block taking
    /// the rows that start in it), the blocks are shuffled and taken a window's worth at
    /// a time, and each window's samples are shuffled together. So an epoch reads every
    /// block once, whole, and a step's batch mixes samples from every block of its
    /// window.
    ///
    /// A view that fits in one window is shuffled whole, exactly as
    /// [`Dataset::shuffled_order`] does, and `plan` is left empty. Depends only on
    /// `seed`, `epoch`, `window_bytes` and where the view lies in its file.
    pub fn window_shuffled_order(
        &self,
        seed: u64,
        epoch: u64,
        window_bytes: usize,
        order: &mut Vec<usize>,
        plan: &mut ReadPlan,
    ) {
        plan.clear();
        if self.fits_in_window(window_bytes) {
            self.shuffled_order(seed, epoch, order);
            return;
        }
        let mut rng = shuffle_rng(seed, epoch);
        self.cut_into_blocks(window_bytes, plan);
        plan.blocks.shuffle(&mut rng);
        order.clear();
        let per_window = plan.blocks_per_window;
        for window in plan.blocks.chunks_mut(per_window) {
            // In file order, so that asking for a window reads forward through the file.
            window.sort_unstable_by_key(|block| block.start);
            let start = order.len();
            for block in window.iter() {
                order.extend(block.clone());
            }
            order[start..].shuffle(&mut rng);
            plan.window_ends.push(order.len());
        }
    }

    /// Fills `order` with this view's sample indices in file order, and `plan` with
    /// windows of about `window_bytes` bytes of consecutive samples (left empty if the
    /// view fits in one).
    pub fn window_sequential_order(
        &self,
        window_bytes: usize,
        order: &mut Vec<usize>,
        plan: &mut ReadPlan,
    ) {
        plan.clear();
        self.sequential_order(order);
        if !self.fits_in_window(window_bytes) {
            self.cut_into_blocks(window_bytes, plan);
            let ends = plan
                .blocks
                .chunks(plan.blocks_per_window)
                .map(|window| window.last().map_or(0, |b| b.end) - self.rows.start);
            plan.window_ends.extend(ends);
        }
    }

    /// Bytes of one sample in the source.
    fn row_bytes(&self) -> usize {
        self.features * self.stored_value_bytes()
    }

    /// Blocks in a window of about `window_bytes` (at least one).
    fn blocks_per_window(window_bytes: usize) -> usize {
        (window_bytes / shuffle_block_bytes(window_bytes)).max(1)
    }

    /// Whether the view's samples take no more than a window of `window_bytes`, a whole
    /// number of blocks.
    fn fits_in_window(&self, window_bytes: usize) -> bool {
        let window = Self::blocks_per_window(window_bytes) * shuffle_block_bytes(window_bytes);
        self.len().saturating_mul(self.row_bytes()) <= window
    }

    /// Fills `plan.blocks` with the view cut into blocks, in file order: block `b` of the
    /// file takes the samples whose first byte lies in bytes `b B..(b + 1) B` of it, `B`
    /// being [`shuffle_block_bytes`]. Blocks with no sample (a sample longer than a
    /// block) are left out.
    fn cut_into_blocks(&self, window_bytes: usize, plan: &mut ReadPlan) {
        let block_bytes = shuffle_block_bytes(window_bytes);
        let (row_bytes, first_byte) = (self.row_bytes(), self.source.storage.file_offset());
        // The first sample starting at or after byte `at` of the file.
        let row_at = |at: usize| (at.saturating_sub(first_byte)).div_ceil(row_bytes);
        let end = self.rows.end;
        let mut start = self.rows.start;
        let mut boundary = (first_byte + start * row_bytes) / block_bytes + 1;
        while start < end {
            let next = row_at(boundary * block_bytes).clamp(start, end);
            if next > start {
                plan.blocks.push(start..next);
                start = next;
            }
            boundary += 1;
        }
        plan.blocks_per_window = Self::blocks_per_window(window_bytes);
    }

    /// Bytes one stored value takes in the source.
    fn stored_value_bytes(&self) -> usize {
        match self.source.storage.values() {
            Values::Bytes(_) => 1,
            Values::Floats(_) | Values::BigEndian(_) => 4,
        }
    }

    /// Tells the kernel what is about to happen to the samples `rows` (absolute indices,
    /// as in an order) of a memory-mapped file: read soon, or done with. Advice only: it
    /// changes what is resident, never what is read. Nothing for samples held in memory.
    pub fn advise(&self, rows: Range<usize>, residency: Residency) {
        let row_bytes = self.row_bytes();
        let bytes = rows.start * row_bytes..rows.end * row_bytes;
        self.source.storage.advise(bytes, residency);
    }

    /// Fills `order` with this view's sample indices in file order.
    pub fn sequential_order(&self, order: &mut Vec<usize>) {
        order.clear();
        order.extend(self.rows.clone());
    }

    /// Copies the samples `rows` (absolute indices, as [`Dataset::shuffled_order`] gives)
    /// into `out`, row after row, as f32.
    ///
    /// # Panics
    /// If `out.len() != rows.len() * features` or an index lies outside this view.
    pub fn gather(&self, rows: &[usize], out: &mut [f32]) {
        assert!(
            rows.iter().all(|r| self.rows.contains(r)),
            "gather: sample index outside the view {:?}",
            self.rows
        );
        match self.source.storage.values() {
            Values::Bytes(bytes) => {
                kernels::gather::gather_u8_rows(bytes, self.features, rows, U8_SCALE, out);
            }
            Values::Floats(values) => {
                for (dst, &r) in out.chunks_exact_mut(self.features).zip(rows) {
                    dst.copy_from_slice(&values[r * self.features..(r + 1) * self.features]);
                }
            }
            Values::BigEndian(words) => {
                for (dst, &r) in out.chunks_exact_mut(self.features).zip(rows) {
                    swap_into(&words[r * self.features..(r + 1) * self.features], dst);
                }
            }
        }
    }

    /// Copies columns `columns` of the samples `rows` (absolute indices) into the rows of
    /// `out` (`rows.len() x columns.len()`, any row stride): one thread's share of a
    /// batch split by input columns.
    ///
    /// # Panics
    /// If `out` has the wrong shape or is not stored by rows, `columns` reaches past the
    /// features, or an index lies outside this view.
    pub fn gather_columns(&self, rows: &[usize], columns: Range<usize>, mut out: MatMut<'_>) {
        assert!(
            out.rows() == rows.len()
                && out.cols() == columns.len()
                && columns.start <= columns.end
                && columns.end <= self.features,
            "gather_columns: shapes do not match"
        );
        assert!(
            rows.iter().all(|r| self.rows.contains(r)),
            "gather_columns: sample index outside the view {:?}",
            self.rows
        );
        let width = columns.len();
        let values = self.source.storage.values();
        for (i, &r) in rows.iter().enumerate() {
            let Some(out_row) = out.row_mut(i) else {
                panic!("gather_columns: the rows of `out` must be contiguous")
            };
            let part = r * self.features + columns.start..r * self.features + columns.end;
            match values {
                Values::Bytes(bytes) => {
                    kernels::gather::gather_u8_rows(&bytes[part], width, &[0], U8_SCALE, out_row)
                }
                Values::Floats(values) => out_row.copy_from_slice(&values[part]),
                Values::BigEndian(words) => swap_into(&words[part], out_row),
            }
        }
    }

    /// Asks the CPU to start loading samples `rows` into cache (the next step's batch),
    /// so that [`Dataset::gather`] finds them there instead of waiting on memory.
    /// Indices outside this view are ignored; nothing is read.
    pub fn prefetch(&self, rows: &[usize]) {
        self.prefetch_columns(rows, 0..self.features);
    }

    /// [`Dataset::prefetch`] of columns `columns` only: the part of the next batch that
    /// one thread will gather with [`Dataset::gather_columns`]. Columns past the
    /// features, like indices outside the view, are ignored.
    pub fn prefetch_columns(&self, rows: &[usize], columns: Range<usize>) {
        let (base, element) = match self.source.storage.values() {
            Values::Bytes(bytes) => (bytes, 1),
            Values::Floats(values) => (bytemuck::cast_slice(values), 4),
            Values::BigEndian(words) => (bytemuck::cast_slice(words), 4),
        };
        let end = columns.end.min(self.features);
        let columns = columns.start.min(end)..end;
        let row_bytes = self.features * element;
        for &r in rows.iter().filter(|r| self.rows.contains(r)) {
            let start = r * row_bytes;
            let part = &base[start + columns.start * element..start + columns.end * element];
            for line in part.chunks(64) {
                prefetch_line(line);
            }
        }
    }

    /// Copies samples `range` (relative to this view) into `out`.
    ///
    /// # Panics
    /// If `range` reaches past the view or `out.len() != range.len() * features`.
    pub fn gather_range(&self, range: Range<usize>, out: &mut [f32]) {
        assert!(
            range.start <= range.end && range.end <= self.len(),
            "gather_range: out of range"
        );
        // Consecutive samples are one block of the source: convert it as a single row,
        // with no index list to build.
        let f = self.features;
        let block = (self.rows.start + range.start) * f..(self.rows.start + range.end) * f;
        match self.source.storage.values() {
            Values::Bytes(bytes) => {
                let bytes = &bytes[block];
                kernels::gather::gather_u8_rows(bytes, bytes.len(), &[0], U8_SCALE, out);
            }
            Values::Floats(values) => out.copy_from_slice(&values[block]),
            Values::BigEndian(words) => swap_into(&words[block], out),
        }
    }
}

/// Big-endian f32 bit patterns as f32 values: `out[i] = f32::from_be(words[i])`.
#[inline]
fn swap_into(words: &[u32], out: &mut [f32]) {
    assert_eq!(words.len(), out.len(), "gather: output of the wrong length");
    for (o, &w) in out.iter_mut().zip(words) {
        *o = f32::from_bits(u32::from_be(w));
    }
}

/// The RNG that shuffles epoch `epoch` of a run seeded with `seed`: one ChaCha8 stream
/// per epoch, so any epoch's order can be recreated without replaying the earlier ones.
pub fn shuffle_rng(seed: u64, epoch: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(1 + epoch);
    rng
}

/// Labels from a rank-1 IDX file, checked against the number of samples they label.
pub fn open_labels(
    path: &Path,
    cache_dir: Option<&Path>,
    samples: &Dataset,
) -> Result<Vec<u8>, DataError> {
    let file = IdxFile::open_with_cache(path, cache_dir)?;
    if file.dims().len() != 1 || file.element_type() != ElementType::U8 {
        return Err(DataError::Shape {
            path: path.to_path_buf(),
            message: format!(
                "expected rank-1 u8 labels, found {} of shape {:?}",
                file.element_type().name(),
                file.dims()
            ),
        });
    }
    let labels = file.as_u8().expect("checked u8").to_vec();
    if labels.len() != samples.len() {
        return Err(DataError::CountMismatch {
            images: samples.path().map(Path::to_path_buf).unwrap_or_default(),
            image_count: samples.len(),
            labels: path.to_path_buf(),
            label_count: labels.len(),
        });
    }
    Ok(labels)
}

/// A hint to bring the cache line holding `bytes[0]` into cache.
#[inline]
fn prefetch_line(bytes: &[u8]) {
    #[cfg(target_arch = "x86_64")]
    {
        use core::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        // SAFETY: SSE, which `_mm_prefetch` needs, is part of every x86_64 CPU; a
        // prefetch only hints the cache, never faults or writes, and `bytes` is live.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(bytes.as_ptr().cast()) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = bytes;
}
