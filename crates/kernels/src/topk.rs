//! Choosing the latents a sparse autoencoder keeps, from the encoder's pre-activations
//! `z` (`B x N`: `x W_enc` before the bias is added) into [`SparseRows`], fused with the
//! bias and the ReLU: every selection reads `relu(z + bias)`.
//!
//! - [`top_k_rows`]: per row, the `k` largest positive values (TopK).
//! - [`batch_top_k`]: the `k * B` largest positive values of the whole batch (BatchTopK
//!   training); returns the smallest kept value for the running inference threshold.
//! - [`threshold_rows`]: every value above a threshold, per latent or global (JumpReLU,
//!   and BatchTopK at inference).
//! - [`top_k_rows_among`]: per row, the `k` largest positive values among a list of
//!   latents, from activations already through the ReLU (AuxK over the dead latents).
//! - [`window_rows`]: every value within half a bandwidth of its latent's threshold
//!   (where JumpReLU's thresholds take their pseudo-derivative).
//!
//! The `_relu_in_place` variants also overwrite `z` with `relu(z + bias)`, for a caller
//! that needs the dense activations too (AuxK reads them).
//!
//! # Rules shared by every selection
//! - A value is kept only if it is `> 0`, so a row may keep fewer than `k`.
//! - Ties are broken by the lower latent index (and, in [`batch_top_k`], the lower row
//!   first): `(value, row, index)` is a strict total order, so the kept set is the same
//!   on every instruction set and for every thread split.
//! - The output rows hold their indices in increasing order (the [`SparseRows`] invariant).
//! - Inputs are finite or `+inf`; what a NaN selects is unspecified (no undefined behaviour).
//!
//! # Method
//! A row of `N = 8192` values keeps 32, so the work is to look at few of them twice.
//! 1. One SIMD pass computes `a = relu(z + bias)` (storing it in the in-place variants)
//!    and the maximum of every chunk of [`CHUNK`] consecutive values.
//! 2. A lower bound `t` on the `k`-th largest value: if more than `k` chunks have a
//!    positive maximum, `t` is the `k`-th largest chunk maximum (those `k` chunks hold `k`
//!    distinct values `>= t`); else `t = 0`.
//! 3. Only chunks whose maximum is `>= t` are read again, and their values `>= t` (and
//!    `> 0`) become candidates, in index order, as 64-bit keys `value bits << 32 | !index`:
//!    the bits of a positive f32 order like its value, and `!index` puts the lower index
//!    first among equal values.
//! 4. If there are more than `k` candidates, `select_nth_unstable` on a copy of the keys
//!    finds the `k`-th largest, and the candidates at or above it are kept, still in
//!    index order. The selection is exact: step 2 only filters.
//!
//! At N 8192 and k 32 with random values, 32 of the 128 chunks are read again (2048
//! values) and about 37 values become candidates; pass 1 is about a quarter of the time
//! and the scalar re-reading of those chunks most of the rest (`benches/sparse.rs`).
//! When `N / CHUNK < 4 k` the chunks shrink, down to [`MIN_CHUNK`], so that the bound
//! keeps filtering; where it cannot (AuxK's `k_aux` 256 among a few thousand latents),
//! every positive value is a candidate, collected by a loop without branches.
//!
//! While a row is selected, the next one is fetched into L2, a piece of it before each
//! piece of pass 1: pass 1 alone kept the memory busy, and a training batch's
//! pre-activations (128 MiB) come from memory. On two threads sharing it, a batch of 4096
//! x 8192 took 6.7-8.1 ms in three runs, against 9.8-11.2 without the fetch (`cargo bench
//! -p kernels --bench sparse -- --quick top_k_rows_from_memory`, Zen 5, 2026-12-07, the
//! two builds in alternation).
//!
//! # Threads
//! Rows are independent: split the batch into blocks of rows, give each thread its own
//! [`SelectScratch`] and [`SparseRows`], and use the blocks as they are or join them
//! with [`SparseRows::append`]. [`batch_top_k`] ranks the whole batch and runs on one
//! thread.
//!
//! None of these kernels allocates once `scratch` and `out` have held a batch as large.

use crate::isa::dispatch;
use crate::layout::Layout;
use crate::sparse_rows::SparseRows;
use core::ops::Range;
use pulp::{Simd, WithSimd};

/// Values per chunk whose maximum pass 1 records, when the row is long enough (a
/// multiple of every SIMD width).
pub const CHUNK: usize = 64;
/// The shortest chunk used when `k` is large against the row length.
pub const MIN_CHUNK: usize = 16;

/// Values of a row per piece of the top-k selection's pass 1, each piece asking for the
/// same of the next row into L2: a multiple of every chunk length ([`CHUNK`] and its
/// halves), so pieces hold whole chunks.
const PREFETCH_PIECE: usize = 1024;
const _: () = assert!(PREFETCH_PIECE % CHUNK == 0 && CHUNK.is_power_of_two());

/// The chunk length for rows of `n` values keeping `k`: [`CHUNK`], halved while there
/// would be fewer than `4 k` chunks, down to [`MIN_CHUNK`].
fn chunk_len(n: usize, k: usize) -> usize {
    let mut chunk = CHUNK;
    while chunk > MIN_CHUNK && n / chunk < 4 * k {
        chunk /= 2;
    }
    chunk
}

/// Reusable buffers of the selection kernels. They grow to the largest shape seen, then
/// serve every later call without allocating.
#[derive(Clone, Debug, Default)]
pub struct SelectScratch {
    /// Pass 1's chunk maxima (of one row, or of the whole batch).
    maxima: Vec<f32>,
    /// Positive chunk maxima as bits, permuted by the search for the bound.
    bound: Vec<u32>,
    /// Candidates of one row in index order, at the front (only grows, to the row length).
    keys: Vec<u64>,
    /// A copy of `keys` permuted by the selection.
    chosen: Vec<u64>,
    /// Candidates of the whole batch in (row, index) order.
    batch_keys: Vec<u128>,
    /// A copy of `batch_keys` permuted by the selection.
    batch_chosen: Vec<u128>,
    /// The values of the listed latents, gathered from one row.
    gathered: Vec<f32>,
}

impl SelectScratch {
    /// Empty buffers.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `maxima` to `len` zeros.
    fn reset_maxima(&mut self, len: usize) {
        self.maxima.clear();
        self.maxima.resize(len, 0.0);
    }
}

/// Where the kernels read `z`, and whether they write `relu(z + bias)` back.
enum PreActivations<'a> {
    Read(&'a [f32]),
    ReluInPlace(&'a mut [f32]),
}

/// The per-latent or global threshold of [`threshold_rows`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Threshold<'a> {
    /// `theta` for every latent.
    Global(f32),
    /// `theta[j]` for latent `j` (length `N`).
    PerLatent(&'a [f32]),
}

// ---------------------------------------------------------------------------------------
// Pass 1: chunk maxima (SIMD).

/// `maxima[c] = max(0, max of relu(z + bias) over chunk c)`.
#[inline(always)]
fn maxima_biased<S: Simd>(simd: S, z: &[f32], bias: &[f32], chunk: usize, maxima: &mut [f32]) {
    let zero = simd.splat_f32s(0.0);
    for ((z, b), m) in z.chunks(chunk).zip(bias.chunks(chunk)).zip(maxima) {
        let (z_head, z_tail) = S::as_simd_f32s(z);
        let (b_head, b_tail) = S::as_simd_f32s(b);
        // Starting from zero makes the maximum that of the ReLU'd values; the zeros a
        // partial load puts past the tail change nothing either.
        let mut acc = zero;
        for (&z, &b) in z_head.iter().zip(b_head) {
            acc = simd.max_f32s(acc, simd.add_f32s(z, b));
        }
        let tail = simd.add_f32s(
            simd.partial_load_f32s(z_tail),
            simd.partial_load_f32s(b_tail),
        );
        *m = simd.reduce_max_f32s(simd.max_f32s(acc, tail));
    }
}

/// [`maxima_biased`], also writing `z = relu(z + bias)`.
#[inline(always)]
fn maxima_biased_in_place<S: Simd>(
    simd: S,
    z: &mut [f32],
    bias: &[f32],
    chunk: usize,
    maxima: &mut [f32],
) {
    let zero = simd.splat_f32s(0.0);
    for ((z, b), m) in z.chunks_mut(chunk).zip(bias.chunks(chunk)).zip(maxima) {
        let (z_head, z_tail) = S::as_mut_simd_f32s(z);
        let (b_head, b_tail) = S::as_simd_f32s(b);
        let mut acc = zero;
        for (z, &b) in z_head.iter_mut().zip(b_head) {
            let a = simd.max_f32s(simd.add_f32s(*z, b), zero);
            *z = a;
            acc = simd.max_f32s(acc, a);
        }
        if !z_tail.is_empty() {
            let a = simd.max_f32s(
                simd.add_f32s(
                    simd.partial_load_f32s(z_tail),
                    simd.partial_load_f32s(b_tail),
                ),
                zero,
            );
            simd.partial_store_f32s(z_tail, a);
            acc = simd.max_f32s(acc, a);
        }
        *m = simd.reduce_max_f32s(acc);
    }
}

/// `maxima[c] = max(0, max of a over chunk c)`.
#[inline(always)]
fn maxima_plain<S: Simd>(simd: S, a: &[f32], chunk: usize, maxima: &mut [f32]) {
    for (a, m) in a.chunks(chunk).zip(maxima) {
        let (head, tail) = S::as_simd_f32s(a);
        let mut acc = simd.partial_load_f32s(tail);
        acc = simd.max_f32s(acc, simd.splat_f32s(0.0));
        for &a in head {
            acc = simd.max_f32s(acc, a);
        }
        *m = simd.reduce_max_f32s(acc);
    }
}

/// `v` where `v > theta` (else 0), then the ReLU: positive exactly where the entry is kept.
#[inline(always)]
fn gated<S: Simd>(simd: S, z: S::f32s, b: S::f32s, theta: S::f32s) -> S::f32s {
    let zero = simd.splat_f32s(0.0);
    let v = simd.add_f32s(z, b);
    simd.max_f32s(
        simd.select_f32s(simd.greater_than_f32s(v, theta), v, zero),
        zero,
    )
}

/// `maxima[c] = max(0, max of gated(z + bias) over chunk c)`: positive exactly where chunk
/// `c` holds a kept entry.
#[inline(always)]
fn maxima_thresholded<S: Simd>(
    simd: S,
    z: &[f32],
    bias: &[f32],
    threshold: Threshold<'_>,
    chunk: usize,
    maxima: &mut [f32],
) {
    let zero = simd.splat_f32s(0.0);
    match threshold {
        Threshold::Global(theta) => {
            let theta = simd.splat_f32s(theta);
            for ((z, b), m) in z.chunks(chunk).zip(bias.chunks(chunk)).zip(maxima) {
                let (z_head, z_tail) = S::as_simd_f32s(z);
                let (b_head, b_tail) = S::as_simd_f32s(b);
                let mut acc = zero;
                for (&z, &b) in z_head.iter().zip(b_head) {
                    acc = simd.max_f32s(acc, gated(simd, z, b, theta));
                }
                if !z_tail.is_empty() {
                    let z = simd.partial_load_f32s(z_tail);
                    let b = simd.partial_load_f32s(b_tail);
                    acc = simd.max_f32s(acc, gated(simd, z, b, theta));
                }
                *m = simd.reduce_max_f32s(acc);
            }
        }
        Threshold::PerLatent(theta) => {
            let chunks = z
                .chunks(chunk)
                .zip(bias.chunks(chunk))
                .zip(theta.chunks(chunk));
            for (((z, b), t), m) in chunks.zip(maxima) {
                let (z_head, z_tail) = S::as_simd_f32s(z);
                let (b_head, b_tail) = S::as_simd_f32s(b);
                let (t_head, t_tail) = S::as_simd_f32s(t);
                let mut acc = zero;
                for ((&z, &b), &t) in z_head.iter().zip(b_head).zip(t_head) {
                    acc = simd.max_f32s(acc, gated(simd, z, b, t));
                }
                if !z_tail.is_empty() {
                    let z = simd.partial_load_f32s(z_tail);
                    let b = simd.partial_load_f32s(b_tail);
                    let t = simd.partial_load_f32s(t_tail);
                    acc = simd.max_f32s(acc, gated(simd, z, b, t));
                }
                *m = simd.reduce_max_f32s(acc);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Passes 2 to 4: bound, candidates, selection (scalar, on few values).

/// How the candidate scan reads `relu(z + bias)` at index `j`.
trait RowValues {
    fn at(&self, j: usize) -> f32;
}

/// Values already through the ReLU (or gathered activations).
struct Stored<'a>(&'a [f32]);

impl RowValues for Stored<'_> {
    #[inline(always)]
    fn at(&self, j: usize) -> f32 {
        self.0[j]
    }
}

/// `relu(z + bias)` recomputed: the same f32 addition as pass 1, so the same value.
struct Biased<'a> {
    z: &'a [f32],
    bias: &'a [f32],
}

impl RowValues for Biased<'_> {
    #[inline(always)]
    fn at(&self, j: usize) -> f32 {
        (self.z[j] + self.bias[j]).max(0.0)
    }
}

/// The largest `t` such that at least `k` of the positive `maxima` are `>= t`, if more
/// than `k` are positive; else 0. (`k >= 1`.)
fn lower_bound(maxima: &[f32], k: usize, bits: &mut Vec<u32>) -> f32 {
    bits.clear();
    bits.extend(maxima.iter().filter(|&&m| m > 0.0).map(|m| m.to_bits()));
    if bits.len() <= k {
        return 0.0;
    }
    // Positive floats order like their bit patterns.
    let (_, kth, _) = bits.select_nth_unstable_by(k - 1, |a, b| b.cmp(a));
    f32::from_bits(*kth)
}

/// Writes the candidate keys of one row to `keys[..count]` in increasing index, and
/// returns `count`: every `j < n` with `a = values.at(j) > 0` and `a >= bound`, read only
/// from the chunks whose maximum reaches `bound`. `keys` only grows, to `n`.
#[inline(always)]
fn collect_candidates(
    values: &impl RowValues,
    n: usize,
    maxima: &[f32],
    chunk: usize,
    bound: f32,
    keys: &mut Vec<u64>,
) -> usize {
    if keys.len() < n {
        keys.resize(n, 0);
    }
    // `a >= low` is `a > 0 && a >= bound` in one comparison.
    let low = bound.max(f32::from_bits(1));
    let mut count = 0;
    for (c, &m) in maxima.iter().enumerate() {
        if m < low {
            continue;
        }
        let range = c * chunk..n.min((c + 1) * chunk);
        if bound > 0.0 {
            // Few values pass: the branch is almost never taken and predicts well.
            // (Testing `a > 0` on its own first, a coin toss, made top-k at N 8192 and
            // k 32 four times slower.)
            for j in range {
                let a = values.at(j);
                if a >= low {
                    keys[count] = row_key(a, j);
                    count += 1;
                }
            }
        } else {
            // No bound: a third or more of the values pass, so every key is written and
            // the count moves on only past candidates (a branch here made AuxK's choice
            // of 256 among 4096 latents 2.4 times slower).
            for j in range {
                let a = values.at(j);
                keys[count] = row_key(a, j);
                count += usize::from(a >= low);
            }
        }
    }
    count
}

/// The candidate key of a positive value at index `j`: larger keys rank first.
#[inline(always)]
fn row_key(a: f32, j: usize) -> u64 {
    (u64::from(a.to_bits()) << 32) | u64::from(!(j as u32))
}

#[inline(always)]
fn from_row_key(key: u64) -> (usize, f32) {
    (!(key as u32) as usize, f32::from_bits((key >> 32) as u32))
}

/// Moves the `k` largest of the distinct `keys` to the front, in their order, and returns
/// how many were kept (`min(k, keys.len())`).
fn keep_largest<K: Ord + Copy>(keys: &mut [K], k: usize, chosen: &mut Vec<K>) -> usize {
    if keys.len() <= k {
        return keys.len();
    }
    if k == 0 {
        return 0;
    }
    chosen.clear();
    chosen.extend_from_slice(keys);
    let (_, kth, _) = chosen.select_nth_unstable_by(k - 1, |a, b| b.cmp(a));
    let kth = *kth;
    let mut kept = 0;
    for i in 0..keys.len() {
        if keys[i] >= kth {
            keys[kept] = keys[i];
            kept += 1;
        }
    }
    kept
}

impl PreActivations<'_> {
    /// Asks for the values at `range` into L2 (not L1, which the row being selected
    /// fills).
    #[inline(always)]
    fn prefetch(&self, range: Range<usize>) {
        let row = match self {
            Self::Read(z) => &z[range],
            Self::ReluInPlace(z) => &z[range],
        };
        #[cfg(target_arch = "x86_64")]
        for line in row.chunks(16) {
            use core::arch::x86_64::{_mm_prefetch, _MM_HINT_T1};
            // SAFETY: SSE, which `_mm_prefetch` needs, is part of every x86_64 CPU; a
            // prefetch only hints the cache, never faults or writes, and `line` is live.
            unsafe { _mm_prefetch::<_MM_HINT_T1>(line.as_ptr().cast()) };
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = row;
    }

    /// Pass 1 over the row of `z` at `range`: [`maxima_biased`], or
    /// [`maxima_biased_in_place`] where `relu(z + bias)` is written back.
    #[inline(always)]
    fn chunk_maxima<S: Simd>(
        &mut self,
        simd: S,
        range: Range<usize>,
        bias: &[f32],
        chunk: usize,
        maxima: &mut [f32],
    ) {
        match self {
            Self::Read(z) => maxima_biased(simd, &z[range], bias, chunk, maxima),
            Self::ReluInPlace(z) => {
                maxima_biased_in_place(simd, &mut z[range], bias, chunk, maxima)
            }
        }
    }

    /// [`collect_candidates`] of the row at `range` after [`Self::chunk_maxima`]: its
    /// values recomputed, or read back where pass 1 wrote them.
    #[inline(always)]
    fn candidates(
        &self,
        range: Range<usize>,
        bias: &[f32],
        maxima: &[f32],
        chunk: usize,
        bound: f32,
        keys: &mut Vec<u64>,
    ) -> usize {
        let n = range.len();
        match self {
            Self::Read(z) => {
                let values = Biased { z: &z[range], bias };
                collect_candidates(&values, n, maxima, chunk, bound, keys)
            }
            Self::ReluInPlace(z) => {
                collect_candidates(&Stored(&z[range]), n, maxima, chunk, bound, keys)
            }
        }
    }
}

/// Selects the top `k` of one row whose chunk maxima are in `scratch.maxima`, and appends
/// them to `out` as one row: `collect(maxima, bound, keys)` writes the row's candidate keys
/// as [`collect_candidates`] does, and candidate position `p` is latent `latent(p)`.
#[inline(always)]
fn select_row(
    k: usize,
    scratch: &mut SelectScratch,
    out: &mut SparseRows,
    collect: impl FnOnce(&[f32], f32, &mut Vec<u64>) -> usize,
    latent: impl Fn(usize) -> u32,
) {
    let SelectScratch {
        maxima,
        bound,
        keys,
        chosen,
        ..
    } = scratch;
    if k > 0 {
        let t = lower_bound(maxima, k, bound);
        let count = collect(maxima, t, keys);
        let kept = keep_largest(&mut keys[..count], k, chosen);
        for &key in &keys[..kept] {
            let (p, a) = from_row_key(key);
            out.push(latent(p), a);
        }
    }
    out.end_row();
}

// ---------------------------------------------------------------------------------------
// What every selection does around its own work.

/// One selection kernel: its own inputs, and its work on an instruction set.
trait Selection: Sized {
    /// What the kernel returns.
    type Output: Default;

    /// How many entries `out` should have room for.
    fn entries(&self, layout: Layout) -> usize;

    /// Whether every row keeps nothing, whatever the values: the rows are then written
    /// empty without running the kernel.
    fn keeps_nothing(&self, layout: Layout) -> bool {
        layout.is_empty()
    }

    /// The rest of the kernel's work when it keeps nothing (none), and its result.
    fn nothing(self, _layout: Layout) -> Self::Output {
        Self::Output::default()
    }

    /// Appends to the batch's rows one row for every row of its shape.
    fn select_rows<S: Simd>(self, simd: S, batch: Batch<'_>) -> Self::Output;
}

/// The batch a [`Selection`] runs on: its shape, the buffers, and the rows it writes.
struct Batch<'a>(Layout, &'a mut SelectScratch, &'a mut SparseRows);

/// A [`Selection`] with its batch, as [`dispatch`] runs it.
struct Dispatched<'a, T> {
    selection: T,
    batch: Batch<'a>,
}

impl<T: Selection> WithSimd for Dispatched<'_, T> {
    type Output = T::Output;
    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) -> T::Output {
        self.selection.select_rows(simd, self.batch)
    }
}

/// Clears `out` to `layout.cols` latents with room for `layout.rows` rows and the
/// selection's entries, then runs `selection` on the widest instruction set, or, where it
/// keeps nothing, writes `layout.rows` empty rows.
fn select<T: Selection>(
    selection: T,
    layout: Layout,
    scratch: &mut SelectScratch,
    out: &mut SparseRows,
) -> T::Output {
    out.clear(layout.cols);
    out.reserve(layout.rows, selection.entries(layout));
    if selection.keeps_nothing(layout) {
        for _ in 0..layout.rows {
            out.end_row();
        }
        return selection.nothing(layout);
    }
    let batch = Batch(layout, scratch, out);
    dispatch(Dispatched { selection, batch })
}

#[track_caller]
fn check_pre_activations(layout: Layout, z_len: usize, bias: &[f32], what: &str) {
    layout.check(z_len, what);
    assert_eq!(bias.len(), layout.cols, "{what}: bias length != cols");
    assert!(
        u32::try_from(layout.cols).is_ok(),
        "{what}: {} latents do not fit u32 indices",
        layout.cols
    );
}

// ---------------------------------------------------------------------------------------
// Row-wise top-k.

struct TopKRows<'a> {
    z: PreActivations<'a>,
    bias: &'a [f32],
    k: usize,
}

impl Selection for TopKRows<'_> {
    type Output = ();

    fn entries(&self, layout: Layout) -> usize {
        layout.rows * self.k.min(layout.cols)
    }

    #[inline(always)]
    fn select_rows<S: Simd>(self, simd: S, batch: Batch<'_>) {
        let Batch(layout, scratch, out) = batch;
        let Self { mut z, bias, k } = self;
        let n = layout.cols;
        let chunk = chunk_len(n, k);
        scratch.reset_maxima(n.div_ceil(chunk));
        for i in 0..layout.rows {
            let range = layout.row(i);
            // Pass 1 by pieces of whole chunks, each first asking for the same piece of
            // the next row: that row is on its way from memory while this one's bound,
            // candidates and selection compute, which left the memory idle. A batch's
            // pre-activations (128 MiB at B 4096, N 8192) come from memory; asking for a
            // whole row at once measured slower, by the queue of misses it fills.
            let mut start = 0;
            while start < n {
                let end = n.min(start + PREFETCH_PIECE);
                if i + 1 < layout.rows {
                    let next = layout.row(i + 1).start;
                    z.prefetch(next + start..next + end);
                }
                z.chunk_maxima(
                    simd,
                    range.start + start..range.start + end,
                    &bias[start..end],
                    chunk,
                    &mut scratch.maxima[start / chunk..end.div_ceil(chunk)],
                );
                start = end;
            }
            let collect = |maxima: &[f32], t, keys: &mut Vec<u64>| {
                z.candidates(range, bias, maxima, chunk, t, keys)
            };
            select_row(k, scratch, out, collect, |j| j as u32);
        }
    }
}

/// For every row `i` of `z` (`B x N`), the `k` largest of `relu(z[i, j] + bias[j])` that
/// are `> 0`, ties to the lower `j`, written to `out` (cleared first) as row `i`, in
/// increasing `j`. `z` is left as it is; see [`top_k_rows_relu_in_place`].
///
/// # Panics
/// If `z` is too short for `layout`, `bias.len() != layout.cols`, or `layout.cols`
/// exceeds `u32::MAX`.
pub fn top_k_rows(
    layout: Layout,
    z: &[f32],
    bias: &[f32],
    k: usize,
    scratch: &mut SelectScratch,
    out: &mut SparseRows,
) {
    check_pre_activations(layout, z.len(), bias, "top_k_rows: z");
    let z = PreActivations::Read(z);
    select(TopKRows { z, bias, k }, layout, scratch, out);
}

/// [`top_k_rows`], also overwriting `z` with `relu(z + bias)` in the same pass.
///
/// # Panics
/// As [`top_k_rows`].
pub fn top_k_rows_relu_in_place(
    layout: Layout,
    z: &mut [f32],
    bias: &[f32],
    k: usize,
    scratch: &mut SelectScratch,
    out: &mut SparseRows,
) {
    check_pre_activations(layout, z.len(), bias, "top_k_rows_relu_in_place: z");
    let z = PreActivations::ReluInPlace(z);
    select(TopKRows { z, bias, k }, layout, scratch, out);
}

// ---------------------------------------------------------------------------------------
// Batch top-k.

/// The candidate key of a positive value at `(row, j)`: larger keys rank first.
#[inline(always)]
fn batch_key(a: f32, row: usize, j: usize) -> u128 {
    (u128::from(a.to_bits()) << 64) | (u128::from(!(row as u32)) << 32) | u128::from(!(j as u32))
}

#[inline(always)]
fn from_batch_key(key: u128) -> (usize, usize, f32) {
    (
        !((key >> 32) as u32) as usize,
        !(key as u32) as usize,
        f32::from_bits((key >> 64) as u32),
    )
}

struct BatchTopK<'a> {
    z: PreActivations<'a>,
    bias: &'a [f32],
    keep: usize,
}

impl<'a> BatchTopK<'a> {
    /// Keeping `k * layout.rows`, after checking that the rows fit `u32` (else panicking
    /// in `kernel`'s name).
    #[track_caller]
    fn new(kernel: &str, layout: Layout, z: PreActivations<'a>, bias: &'a [f32], k: usize) -> Self {
        assert!(
            u32::try_from(layout.rows).is_ok(),
            "{kernel}: more than u32::MAX rows"
        );
        let keep = k.saturating_mul(layout.rows);
        Self { z, bias, keep }
    }
}

impl Selection for BatchTopK<'_> {
    type Output = Option<f32>;

    fn entries(&self, layout: Layout) -> usize {
        self.keep.min(layout.len())
    }

    fn keeps_nothing(&self, layout: Layout) -> bool {
        layout.is_empty() || self.keep == 0
    }

    fn nothing(self, layout: Layout) -> Option<f32> {
        if let PreActivations::ReluInPlace(z) = self.z {
            crate::activation::bias_activation_forward(
                crate::activation::Activation::Relu,
                layout,
                z,
                self.bias,
            );
        }
        None
    }

    #[inline(always)]
    fn select_rows<S: Simd>(self, simd: S, batch: Batch<'_>) -> Option<f32> {
        let Batch(layout, scratch, out) = batch;
        let Self { mut z, bias, keep } = self;
        let n = layout.cols;
        // Chunks sized as if each row kept its share, `keep / B` rounded up.
        let chunk = chunk_len(n, keep.div_ceil(layout.rows));
        let per_row = n.div_ceil(chunk);
        scratch.reset_maxima(layout.rows * per_row);
        let SelectScratch {
            maxima,
            bound,
            keys,
            batch_keys,
            batch_chosen,
            ..
        } = scratch;
        for (i, row_maxima) in maxima.chunks_exact_mut(per_row).enumerate() {
            z.chunk_maxima(simd, layout.row(i), bias, chunk, row_maxima);
        }
        let t = lower_bound(maxima, keep, bound);
        batch_keys.clear();
        for (i, row_maxima) in maxima.chunks_exact(per_row).enumerate() {
            let count = z.candidates(layout.row(i), bias, row_maxima, chunk, t, keys);
            batch_keys.extend(keys[..count].iter().map(|&key| {
                let (j, a) = from_row_key(key);
                batch_key(a, i, j)
            }));
        }
        let kept = keep_largest(batch_keys, keep, batch_chosen);
        let mut smallest: Option<f32> = None;
        let mut row = 0;
        for &key in &batch_keys[..kept] {
            let (i, j, a) = from_batch_key(key);
            while row < i {
                out.end_row();
                row += 1;
            }
            out.push(j as u32, a);
            smallest = Some(smallest.map_or(a, |s| s.min(a)));
        }
        while row < layout.rows {
            out.end_row();
            row += 1;
        }
        smallest
    }
}

/// The `k * B` largest values `> 0` of `relu(z + bias)` over the whole batch (`B =
/// layout.rows`), ties to the lower `(row, j)`, written to `out` (cleared first): rows
/// keep different numbers of entries. Returns the smallest kept value, the batch's
/// threshold for the running inference threshold, or `None` if nothing is positive.
/// `z` is left as it is; see [`batch_top_k_relu_in_place`].
///
/// # Panics
/// If `z` is too short for `layout`, `bias.len() != layout.cols`, `layout.cols` exceeds
/// `u32::MAX`, or `layout.rows` exceeds `u32::MAX`.
pub fn batch_top_k(
    layout: Layout,
    z: &[f32],
    bias: &[f32],
    k: usize,
    scratch: &mut SelectScratch,
    out: &mut SparseRows,
) -> Option<f32> {
    check_pre_activations(layout, z.len(), bias, "batch_top_k: z");
    let z = PreActivations::Read(z);
    let selection = BatchTopK::new("batch_top_k", layout, z, bias, k);
    select(selection, layout, scratch, out)
}

/// [`batch_top_k`], also overwriting `z` with `relu(z + bias)` in the same pass.
///
/// # Panics
/// As [`batch_top_k`].
pub fn batch_top_k_relu_in_place(
    layout: Layout,
    z: &mut [f32],
    bias: &[f32],
    k: usize,
    scratch: &mut SelectScratch,
    out: &mut SparseRows,
) -> Option<f32> {
    check_pre_activations(layout, z.len(), bias, "batch_top_k_relu_in_place: z");
    let z = PreActivations::ReluInPlace(z);
    let selection = BatchTopK::new("batch_top_k_relu_in_place", layout, z, bias, k);
    select(selection, layout, scratch, out)
}

// ---------------------------------------------------------------------------------------
// Threshold.

impl Threshold<'_> {
    /// The threshold of latent `j`.
    #[inline(always)]
    fn of(self, j: usize) -> f32 {
        match self {
            Threshold::Global(theta) => theta,
            Threshold::PerLatent(theta) => theta[j],
        }
    }
}

/// Appends `(j, v)` to `out` for every `j` in `range` with `v = z[j] + bias[j]` above
/// latent `j`'s threshold and `> 0`.
#[inline(always)]
fn push_above(
    z: &[f32],
    bias: &[f32],
    threshold: Threshold<'_>,
    range: Range<usize>,
    out: &mut SparseRows,
) {
    for j in range {
        let v = z[j] + bias[j];
        if v > threshold.of(j) && v > 0.0 {
            out.push(j as u32, v);
        }
    }
}

struct ThresholdRows<'a> {
    z: &'a [f32],
    bias: &'a [f32],
    threshold: Threshold<'a>,
}

impl Selection for ThresholdRows<'_> {
    type Output = ();

    fn entries(&self, _layout: Layout) -> usize {
        0
    }

    #[inline(always)]
    fn select_rows<S: Simd>(self, simd: S, batch: Batch<'_>) {
        let Batch(layout, scratch, out) = batch;
        let Self { z, bias, threshold } = self;
        let n = layout.cols;
        let chunk = CHUNK;
        scratch.reset_maxima(n.div_ceil(chunk));
        let maxima = &mut scratch.maxima;
        for i in 0..layout.rows {
            let z = &z[layout.row(i)];
            maxima_thresholded(simd, z, bias, threshold, chunk, maxima);
            for (c, &m) in maxima.iter().enumerate() {
                if m > 0.0 {
                    push_gated(
                        simd,
                        z,
                        bias,
                        threshold,
                        c * chunk..n.min((c + 1) * chunk),
                        out,
                    );
                }
            }
            out.end_row();
        }
    }
}

/// [`push_above`] on a chunk holding kept entries, a vector at a time: [`gated`] leaves
/// each kept value (`z + bias`, the same addition) and zero elsewhere, and
/// [`push_lanes`] keeps the positive ones. Testing the sign and the threshold value by
/// value mispredicted the sign every other value where about half the pre-activations are
/// positive: JumpReLU's selection ran three times slower than TopK's.
#[inline(always)]
fn push_gated<S: Simd>(
    simd: S,
    z: &[f32],
    bias: &[f32],
    threshold: Threshold<'_>,
    range: Range<usize>,
    out: &mut SparseRows,
) {
    let zero = simd.splat_f32s(0.0);
    let mut j = range.start;
    while j < range.end {
        let width = S::F32_LANES.min(range.end - j);
        let z = simd.partial_load_f32s(&z[j..j + width]);
        let b = simd.partial_load_f32s(&bias[j..j + width]);
        let theta = match threshold {
            Threshold::Global(theta) => simd.splat_f32s(theta),
            Threshold::PerLatent(theta) => simd.partial_load_f32s(&theta[j..j + width]),
        };
        let v = gated(simd, z, b, theta);
        let kept = simd.greater_than_f32s(v, zero);
        push_lanes(simd, v, kept, j..j + width, out, |v| (v > 0.0).then_some(v));
        j += width;
    }
}

/// Appends `(j, entry)` for each `j` in `columns` (at most one vector's lanes, from the
/// first) whose lane of `values` gives `entry(value) = Some(entry)`. `passing`, the lanes
/// that can, is tested once for the whole vector first, since most vectors of the
/// selections that call this hold no entry; the lanes are then tested one by one, on a
/// branch that passes only for entries, so that it predicts well.
#[inline(always)]
fn push_lanes<S: Simd>(
    simd: S,
    values: S::f32s,
    passing: S::m32s,
    columns: Range<usize>,
    out: &mut SparseRows,
    entry: impl Fn(f32) -> Option<f32>,
) {
    let (one, zero) = (simd.splat_f32s(1.0), simd.splat_f32s(0.0));
    if simd.reduce_max_f32s(simd.select_f32s(passing, one, zero)) <= 0.0 {
        return;
    }
    let mut lanes = [0.0f32; 16];
    let lanes = &mut lanes[..S::F32_LANES];
    simd.partial_store_f32s(lanes, values);
    for (j, &value) in columns.clone().zip(lanes.iter()) {
        if let Some(entry) = entry(value) {
            out.push(j as u32, entry);
        }
    }
}

/// For every row `i` of `z` (`B x N`), every `j` with `v = z[i, j] + bias[j] > theta_j`
/// and `v > 0`, with value `v`, written to `out` (cleared first) in increasing `j`:
/// `relu(v) * H(v - theta_j)` with its zeros left out (JumpReLU; BatchTopK's inference
/// with a global threshold).
///
/// # Panics
/// If `z` is too short for `layout`, `bias` (or a per-latent threshold) is not
/// `layout.cols` long, or `layout.cols` exceeds `u32::MAX`.
pub fn threshold_rows(
    layout: Layout,
    z: &[f32],
    bias: &[f32],
    threshold: Threshold<'_>,
    scratch: &mut SelectScratch,
    out: &mut SparseRows,
) {
    check_pre_activations(layout, z.len(), bias, "threshold_rows: z");
    if let Threshold::PerLatent(theta) = threshold {
        assert_eq!(
            theta.len(),
            layout.cols,
            "threshold_rows: threshold length != cols"
        );
    }
    let selection = ThresholdRows { z, bias, threshold };
    select(selection, layout, scratch, out);
}

/// For every row `i` of `z` (`B x N`), every `j` with `|(z[i, j] + bias[j] - theta[j]) /
/// bandwidth| < 1/2`, as the entry `(j, 1.0)` in `out` (cleared first), in increasing
/// `j`: where JumpReLU's rectangle kernel of width `bandwidth` about latent `j`'s
/// threshold is not zero, kept or not. Their reconstruction gradients make the
/// thresholds' pseudo-derivative.
///
/// A vector at a time, the same operations as the scalar test, then one branch per value
/// that almost never passes (a division per value, scalar, took longer than the rest of
/// JumpReLU's step outside the encoder's product).
///
/// # Panics
/// If `z` is too short for `layout`, `bias` or `theta` is not `layout.cols` long, or
/// `layout.cols` exceeds `u32::MAX`.
pub fn window_rows(
    layout: Layout,
    z: &[f32],
    bias: &[f32],
    theta: &[f32],
    bandwidth: f32,
    out: &mut SparseRows,
) {
    check_pre_activations(layout, z.len(), bias, "window_rows: z");
    assert_eq!(
        theta.len(),
        layout.cols,
        "window_rows: theta length != cols"
    );
    out.clear(layout.cols);
    dispatch(WindowRows {
        layout,
        z,
        bias,
        theta,
        bandwidth,
        out,
    });
}

struct WindowRows<'a> {
    layout: Layout,
    z: &'a [f32],
    bias: &'a [f32],
    theta: &'a [f32],
    bandwidth: f32,
    out: &'a mut SparseRows,
}

impl WithSimd for WindowRows<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let Self {
            layout,
            z,
            bias,
            theta,
            bandwidth,
            out,
        } = self;
        let (n, eps) = (layout.cols, simd.splat_f32s(bandwidth));
        let halves = simd.splat_f32s(0.5);
        for i in 0..layout.rows {
            let row = &z[layout.row(i)];
            let mut j = 0;
            while j < n {
                let width = S::F32_LANES.min(n - j);
                let v = simd.add_f32s(
                    simd.partial_load_f32s(&row[j..j + width]),
                    simd.partial_load_f32s(&bias[j..j + width]),
                );
                let v = simd.sub_f32s(v, simd.partial_load_f32s(&theta[j..j + width]));
                let distance = simd.abs_f32s(simd.div_f32s(v, eps));
                let inside = simd.greater_than_f32s(halves, distance);
                let entry = |distance: f32| (distance < 0.5).then_some(1.0);
                push_lanes(simd, distance, inside, j..j + width, out, entry);
                j += width;
            }
            out.end_row();
        }
    }
}

// ---------------------------------------------------------------------------------------
// Top-k among listed latents (AuxK).

struct TopKAmong<'a> {
    activations: &'a [f32],
    latents: &'a [u32],
    k: usize,
}

impl Selection for TopKAmong<'_> {
    type Output = ();

    fn entries(&self, layout: Layout) -> usize {
        layout.rows * self.k.min(self.latents.len())
    }

    fn keeps_nothing(&self, _layout: Layout) -> bool {
        self.latents.is_empty()
    }

    #[inline(always)]
    fn select_rows<S: Simd>(self, simd: S, batch: Batch<'_>) {
        let Batch(layout, scratch, out) = batch;
        let Self {
            activations,
            latents,
            k,
        } = self;
        let n = latents.len();
        let chunk = chunk_len(n, k);
        scratch.reset_maxima(n.div_ceil(chunk));
        let mut gathered = core::mem::take(&mut scratch.gathered);
        gathered.clear();
        gathered.resize(n, 0.0);
        for i in 0..layout.rows {
            let row = &activations[layout.row(i)];
            for (g, &j) in gathered.iter_mut().zip(latents) {
                *g = row[j as usize];
            }
            maxima_plain(simd, &gathered, chunk, &mut scratch.maxima);
            let collect = |maxima: &[f32], t, keys: &mut Vec<u64>| {
                collect_candidates(&Stored(&gathered), n, maxima, chunk, t, keys)
            };
            select_row(k, scratch, out, collect, |p| latents[p]);
        }
        scratch.gathered = gathered;
    }
}

/// For every row `i` of `activations` (`B x N`, already through the ReLU), the `k`
/// largest values `> 0` among the latents listed in `latents` (strictly increasing),
/// ties to the lower latent, written to `out` (cleared first) in increasing latent
/// order: AuxK's top-`k_aux` over the dead latents. Costs `O(latents.len())` per row.
///
/// # Panics
/// If `activations` is too short for `layout`, `layout.cols` exceeds `u32::MAX`, or
/// `latents` is not strictly increasing below `layout.cols`.
pub fn top_k_rows_among(
    layout: Layout,
    activations: &[f32],
    latents: &[u32],
    k: usize,
    scratch: &mut SelectScratch,
    out: &mut SparseRows,
) {
    layout.check(activations.len(), "top_k_rows_among: activations");
    assert!(
        latents.windows(2).all(|w| w[0] < w[1]),
        "top_k_rows_among: latents must be strictly increasing"
    );
    if let Some(&last) = latents.last() {
        assert!(
            (last as usize) < layout.cols,
            "top_k_rows_among: latent {last} out of range for {} columns",
            layout.cols
        );
    }
    let selection = TopKAmong {
        activations,
        latents,
        k,
    };
    select(selection, layout, scratch, out);
}

/// Scalar references for this module's kernels: every value computed, ranked with the
/// same total order, no bound and no chunks.
pub mod reference {
    use super::*;

    /// `(value, index)` ranked: larger value first, then lower index.
    fn rank(a: &(f32, usize), b: &(f32, usize)) -> core::cmp::Ordering {
        b.0.total_cmp(&a.0).then(a.1.cmp(&b.1))
    }

    /// The `k` best of `kept` (all positive), pushed as one row in index order.
    fn push_top(mut kept: Vec<(f32, usize)>, k: usize, out: &mut SparseRows) {
        if kept.len() > k {
            if k == 0 {
                kept.clear();
            } else {
                kept.select_nth_unstable_by(k - 1, rank);
                kept.truncate(k);
            }
        }
        kept.sort_unstable_by_key(|&(_, j)| j);
        for (a, j) in kept {
            out.push(j as u32, a);
        }
        out.end_row();
    }

    /// `out` cleared to `layout.cols` latents, then for every row `i` the `k` best of
    /// `kept(i)` (all positive), pushed as row `i`.
    fn push_top_rows<I: Iterator<Item = (f32, usize)>>(
        layout: Layout,
        k: usize,
        out: &mut SparseRows,
        kept: impl Fn(usize) -> I,
    ) {
        out.clear(layout.cols);
        for i in 0..layout.rows {
            push_top(kept(i).collect(), k, out);
        }
    }

    /// The values of `relu(z + bias)` that are `> 0`, with their index.
    fn positive<'a>(z: &'a [f32], bias: &'a [f32]) -> impl Iterator<Item = (f32, usize)> + 'a {
        z.iter()
            .zip(bias)
            .enumerate()
            .map(|(j, (&z, &b))| ((z + b).max(0.0), j))
            .filter(|&(a, _)| a > 0.0)
    }

    /// Reference for [`super::top_k_rows`].
    pub fn top_k_rows(layout: Layout, z: &[f32], bias: &[f32], k: usize, out: &mut SparseRows) {
        push_top_rows(layout, k, out, |i| positive(&z[layout.row(i)], bias));
    }

    /// Reference for [`super::batch_top_k`].
    pub fn batch_top_k(
        layout: Layout,
        z: &[f32],
        bias: &[f32],
        k: usize,
        out: &mut SparseRows,
    ) -> Option<f32> {
        out.clear(layout.cols);
        let mut kept: Vec<(f32, usize, usize)> = Vec::new();
        for i in 0..layout.rows {
            kept.extend(positive(&z[layout.row(i)], bias).map(|(a, j)| (a, i, j)));
        }
        kept.sort_by(|a, b| b.0.total_cmp(&a.0).then((a.1, a.2).cmp(&(b.1, b.2))));
        kept.truncate(k * layout.rows);
        let smallest = kept.last().map(|&(a, _, _)| a);
        kept.sort_by_key(|&(_, i, j)| (i, j));
        let mut entries = kept.into_iter().peekable();
        for i in 0..layout.rows {
            while let Some(&(a, _, j)) = entries.peek().filter(|e| e.1 == i) {
                out.push(j as u32, a);
                entries.next();
            }
            out.end_row();
        }
        smallest
    }

    /// Reference for [`super::threshold_rows`].
    pub fn threshold_rows(
        layout: Layout,
        z: &[f32],
        bias: &[f32],
        threshold: Threshold<'_>,
        out: &mut SparseRows,
    ) {
        out.clear(layout.cols);
        for i in 0..layout.rows {
            push_above(&z[layout.row(i)], bias, threshold, 0..layout.cols, out);
            out.end_row();
        }
    }

    /// Reference for [`super::window_rows`].
    pub fn window_rows(
        layout: Layout,
        z: &[f32],
        bias: &[f32],
        theta: &[f32],
        bandwidth: f32,
        out: &mut SparseRows,
    ) {
        out.clear(layout.cols);
        for i in 0..layout.rows {
            let row = &z[layout.row(i)];
            for (j, ((&z, &b), &t)) in row.iter().zip(bias).zip(theta).enumerate() {
                if ((z + b - t) / bandwidth).abs() < 0.5 {
                    out.push(j as u32, 1.0);
                }
            }
            out.end_row();
        }
    }

    /// Reference for [`super::top_k_rows_among`].
    pub fn top_k_rows_among(
        layout: Layout,
        activations: &[f32],
        latents: &[u32],
        k: usize,
        out: &mut SparseRows,
    ) {
        push_top_rows(layout, k, out, |i| {
            let row = &activations[layout.row(i)];
            latents
                .iter()
                .map(move |&j| (row[j as usize], j as usize))
                .filter(|&(a, _)| a > 0.0)
        });
    }
}
