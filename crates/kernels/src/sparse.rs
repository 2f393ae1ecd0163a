//! Products of a sparse batch ([`SparseRows`], `B x N` with about `k` entries a row) with
//! a dense row-major `N x d` matrix `w` (one contiguous row per latent), as a TopK sparse
//! autoencoder needs them after its encoder product:
//!
//! - [`sparse_times_dense`]: `out[b, :] = bias + sum_{(j, v) in row b} v w[j, :]`, the
//!   decoder's forward pass (`2 k d` FLOP a row instead of `2 N d`).
//! - [`dots_at_entries`]: `grads[e] = dout[b, :] . w[j, :]` for every entry `e = (b, j)`,
//!   the gradient with respect to the kept activations.
//! - [`scatter_outer_add`]: `g[j, :] += alpha v_e x[b, :]` for every entry, the weight
//!   gradients: `dW_dec` (`v` the activations, `x = dout`) and the transposed encoder
//!   gradient `dW_enc^T` (`v` the latent gradients, `x` the encoder's input rows), both
//!   `N x d`.
//! - [`sum_by_latent`]: `out[j] += alpha sum_{e of latent j} v_e`, the encoder bias's
//!   gradient.
//!
//! The first two walk the rows; the last two walk a [`LatentIndex`] (the entries grouped
//! by latent), so that each gradient row is read and written once per batch, with its
//! contributions added in register blocks in increasing row order.
//!
//! # Threads
//! - [`sparse_times_dense`] and [`dots_at_entries`] write per row and per entry: split the
//!   batch into blocks of rows, each with its own [`SparseRows`] (as the selection
//!   kernels' threads produce them) and its part of `out`/`dout`.
//! - [`scatter_outer_add`] and [`sum_by_latent`] take a range of latents and the rows of
//!   `g` (or of `out`) for that range only: split `0..N` into ranges, hand each thread its
//!   range and the disjoint slice of `g` that holds those rows (`split_at_mut`); no two
//!   threads write the same row, and each reads only its own latents' entries.
//!   [`LatentIndex::entries_in`] tells how much work a range holds. The result does not
//!   depend on the split: each row's sum runs in the same order whatever the ranges.
//!
//! Every accumulation is in f32; the tests bound the error against f64 references.

use crate::isa::dispatch;
use crate::layout::Layout;
use crate::sparse_rows::{LatentIndex, SparseRows};
use core::ops::Range;
use pulp::{Simd, WithSimd};

/// Registers of a row block kept in accumulators while the entries stream by: eight
/// independent FMA chains, enough to cover the FMA latency on the machines we target.
const BLOCK: usize = 8;

/// `acc[r] += s * x[r]` for the registers of one block.
#[inline(always)]
fn fma_block<S: Simd>(simd: S, acc: &mut [S::f32s; BLOCK], s: S::f32s, x: &[S::f32s; BLOCK]) {
    for (a, &x) in acc.iter_mut().zip(x) {
        *a = simd.mul_add_f32s(s, x, *a);
    }
}

/// Block `blk` of a row's full registers, as an array.
#[inline(always)]
fn block<S: Simd>(head: &[S::f32s], blk: usize) -> &[S::f32s; BLOCK] {
    head[blk * BLOCK..(blk + 1) * BLOCK].try_into().unwrap()
}

/// Where the sums of [`add_scaled_rows`] start.
#[derive(Clone, Copy)]
enum Start<'a> {
    /// At zero.
    Zero,
    /// At these values (a bias as long as the row).
    At(&'a [f32]),
    /// At the row's own values: the terms are added to it.
    Row,
}

/// `row = start + sum_t s_t x_t` over the terms `(s_t, x_t)` that `terms()` yields (each
/// `x_t` as long as `row`): the registers in blocks of [`BLOCK`] accumulators, each
/// register's sum one FMA chain in the order of the terms.
#[inline(always)]
fn add_scaled_rows<'x, S: Simd, T: Iterator<Item = (f32, &'x [f32])>>(
    simd: S,
    row: &mut [f32],
    start: Start<'_>,
    terms: impl Fn() -> T,
) {
    let zero = simd.splat_f32s(0.0);
    let (start_head, start_tail) = match start {
        Start::At(values) => S::as_simd_f32s(values),
        Start::Zero | Start::Row => (&[][..], &[][..]),
    };
    let (head, tail) = S::as_mut_simd_f32s(row);
    let full = head.len() / BLOCK;
    for blk in 0..full {
        let regs = &mut head[blk * BLOCK..(blk + 1) * BLOCK];
        let mut acc: [S::f32s; BLOCK] = match start {
            Start::Zero => [zero; BLOCK],
            Start::At(_) => *block::<S>(start_head, blk),
            Start::Row => (&*regs).try_into().unwrap(),
        };
        for (s, x) in terms() {
            let x = block::<S>(S::as_simd_f32s(x).0, blk);
            fma_block(simd, &mut acc, simd.splat_f32s(s), x);
        }
        regs.copy_from_slice(&acc);
    }
    for (r, reg) in head.iter_mut().enumerate().skip(full * BLOCK) {
        let mut acc = match start {
            Start::Zero => zero,
            Start::At(_) => start_head[r],
            Start::Row => *reg,
        };
        for (s, x) in terms() {
            acc = simd.mul_add_f32s(simd.splat_f32s(s), S::as_simd_f32s(x).0[r], acc);
        }
        *reg = acc;
    }
    if !tail.is_empty() {
        // A partial load of no values is zero.
        let mut acc = simd.partial_load_f32s(match start {
            Start::Zero | Start::At(_) => start_tail,
            Start::Row => tail,
        });
        for (s, x) in terms() {
            let x = simd.partial_load_f32s(S::as_simd_f32s(x).1);
            acc = simd.mul_add_f32s(simd.splat_f32s(s), x, acc);
        }
        simd.partial_store_f32s(tail, acc);
    }
}

// ---------------------------------------------------------------------------------------
// Decoder forward.

/// The arguments of [`sparse_times_dense`], in its order.
struct SparseTimesDense<'a>(
    &'a SparseRows,
    &'a [f32],
    Layout,
    Option<&'a [f32]>,
    &'a mut [f32],
    Layout,
);

impl WithSimd for SparseTimesDense<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let Self(codes, w, w_layout, bias, out, out_layout) = self;
        let start = bias.map_or(Start::Zero, Start::At);
        for b in 0..out_layout.rows {
            let (indices, values) = codes.row(b);
            let w_row = move |j: u32| &w[w_layout.row(j as usize)];
            let terms = move || {
                indices
                    .iter()
                    .zip(values)
                    .map(move |(&j, &v)| (v, w_row(j)))
            };
            add_scaled_rows(simd, &mut out[out_layout.row(b)], start, terms);
        }
    }
}

/// The shapes of a row-wise product of `codes` with `w` (`w_what` in the messages) and a
/// dense batch of `len` values laid out as `layout` (`what`): one row per row of codes,
/// as wide as `w`.
#[track_caller]
fn check_row_product(
    codes: &SparseRows,
    w: &[f32],
    w_layout: Layout,
    w_what: &str,
    len: usize,
    layout: Layout,
    what: &str,
) {
    w_layout.check(w.len(), w_what);
    assert_eq!(
        w_layout.rows,
        codes.cols(),
        "{w_what}: w has {} rows for {} latents",
        w_layout.rows,
        codes.cols()
    );
    layout.check(len, what);
    assert_eq!(layout.rows, codes.rows(), "{what} rows != code rows");
    assert_eq!(layout.cols, w_layout.cols, "{what} cols != w cols");
}

/// `out[b, :] = bias + sum_{(j, v) in row b of codes} v w[j, :]` for every row `b`:
/// the sparse codes times the row-major `N x d` matrix `w` (the decoder's forward pass;
/// `bias = None` adds nothing). Row `b` of `out` is overwritten, never read.
///
/// # Panics
/// If `w` is too short for `w_layout`, `w_layout.rows != codes.cols()`,
/// `out_layout.rows != codes.rows()`, `out_layout.cols != w_layout.cols`, `out` is too
/// short for `out_layout`, or `bias` is not `w_layout.cols` long.
pub fn sparse_times_dense(
    codes: &SparseRows,
    w: &[f32],
    w_layout: Layout,
    bias: Option<&[f32]>,
    out: &mut [f32],
    out_layout: Layout,
) {
    let (w_what, what) = ("sparse_times_dense: w", "sparse_times_dense: out");
    check_row_product(codes, w, w_layout, w_what, out.len(), out_layout, what);
    if let Some(bias) = bias {
        assert_eq!(
            bias.len(),
            w_layout.cols,
            "sparse_times_dense: bias length != cols"
        );
    }
    if out_layout.is_empty() {
        return;
    }
    dispatch(SparseTimesDense(codes, w, w_layout, bias, out, out_layout));
}

// ---------------------------------------------------------------------------------------
// Dots at the kept entries.

/// Entries whose dots share one pass over `dout`'s row.
const DOTS_AT_ONCE: usize = 4;

/// The arguments of [`dots_at_entries`], in its order.
struct DotsAtEntries<'a>(
    &'a SparseRows,
    &'a [f32],
    Layout,
    &'a [f32],
    Layout,
    &'a mut [f32],
);

impl WithSimd for DotsAtEntries<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let Self(codes, dout, dout_layout, w, w_layout, grads) = self;
        let zero = simd.splat_f32s(0.0);
        let w_row = |j: u32| S::as_simd_f32s(&w[w_layout.row(j as usize)]);
        for b in 0..dout_layout.rows {
            let (d_head, d_tail) = S::as_simd_f32s(&dout[dout_layout.row(b)]);
            let d_tail = simd.partial_load_f32s(d_tail);
            let range = codes.row_range(b);
            let indices = &codes.indices()[range.clone()];
            let grads = &mut grads[range];
            let mut groups = indices.chunks_exact(DOTS_AT_ONCE);
            let mut out_groups = grads.chunks_exact_mut(DOTS_AT_ONCE);
            for (group, out) in (&mut groups).zip(&mut out_groups) {
                // Two accumulators per entry (even and odd registers): eight chains.
                let rows: [&[S::f32s]; DOTS_AT_ONCE] =
                    core::array::from_fn(|e| &w_row(group[e]).0[..d_head.len()]);
                let mut even = [zero; DOTS_AT_ONCE];
                let mut odd = [zero; DOTS_AT_ONCE];
                let mut pairs = d_head.chunks_exact(2);
                let mut r = 0;
                for pair in &mut pairs {
                    for e in 0..DOTS_AT_ONCE {
                        even[e] = simd.mul_add_f32s(pair[0], rows[e][r], even[e]);
                        odd[e] = simd.mul_add_f32s(pair[1], rows[e][r + 1], odd[e]);
                    }
                    r += 2;
                }
                for &x in pairs.remainder() {
                    for e in 0..DOTS_AT_ONCE {
                        even[e] = simd.mul_add_f32s(x, rows[e][r], even[e]);
                    }
                }
                for e in 0..DOTS_AT_ONCE {
                    let t = simd.partial_load_f32s(w_row(group[e]).1);
                    odd[e] = simd.mul_add_f32s(d_tail, t, odd[e]);
                    out[e] = simd.reduce_sum_f32s(simd.add_f32s(even[e], odd[e]));
                }
            }
            for (&j, out) in groups.remainder().iter().zip(out_groups.into_remainder()) {
                let (w_head, w_tail) = w_row(j);
                let mut even = zero;
                let mut odd = zero;
                let mut pairs = d_head.chunks_exact(2);
                let mut w_pairs = w_head.chunks_exact(2);
                for (x, y) in (&mut pairs).zip(&mut w_pairs) {
                    even = simd.mul_add_f32s(x[0], y[0], even);
                    odd = simd.mul_add_f32s(x[1], y[1], odd);
                }
                for (&x, &y) in pairs.remainder().iter().zip(w_pairs.remainder()) {
                    even = simd.mul_add_f32s(x, y, even);
                }
                odd = simd.mul_add_f32s(d_tail, simd.partial_load_f32s(w_tail), odd);
                *out = simd.reduce_sum_f32s(simd.add_f32s(even, odd));
            }
        }
    }
}

/// `grads[e] = dout[b, :] . w[j, :]` for every entry `e = (b, j)` of `codes` (entries
/// numbered as in [`SparseRows`]): the gradient with respect to the kept activations,
/// from the gradient `dout` (`B x d`) of the decoder's output and the row-major `N x d`
/// decoder `w`.
///
/// # Panics
/// If `w` is too short for `w_layout`, `w_layout.rows != codes.cols()`, `dout` is too
/// short for `dout_layout`, `dout_layout.rows != codes.rows()`,
/// `dout_layout.cols != w_layout.cols`, or `grads.len() != codes.nnz()`.
pub fn dots_at_entries(
    codes: &SparseRows,
    dout: &[f32],
    dout_layout: Layout,
    w: &[f32],
    w_layout: Layout,
    grads: &mut [f32],
) {
    let (w_what, what) = ("dots_at_entries: w", "dots_at_entries: dout");
    check_row_product(codes, w, w_layout, w_what, dout.len(), dout_layout, what);
    assert_eq!(
        grads.len(),
        codes.nnz(),
        "dots_at_entries: grads length != entries"
    );
    assert_eq!(
        codes.offsets()[codes.rows()],
        codes.nnz(),
        "dots_at_entries: codes has an open row"
    );
    dispatch(DotsAtEntries(codes, dout, dout_layout, w, w_layout, grads));
}

// ---------------------------------------------------------------------------------------
// Scatter of outer products, by latent.

/// The arguments of [`scatter_outer_add`], in its order.
struct ScatterOuterAdd<'a>(
    &'a LatentIndex,
    &'a [f32],
    &'a [f32],
    Layout,
    f32,
    Range<usize>,
    &'a mut [f32],
    Layout,
);

impl WithSimd for ScatterOuterAdd<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let Self(index, values, x, x_layout, alpha, latents, g, g_layout) = self;
        for (r, j) in latents.enumerate() {
            let (rows, entries) = index.latent(j);
            if rows.is_empty() {
                continue;
            }
            let x_row = move |b: u32| &x[x_layout.row(b as usize)];
            let terms = move || {
                let pairs = rows.iter().zip(entries);
                pairs.map(move |(&b, &e)| (alpha * values[e as usize], x_row(b)))
            };
            add_scaled_rows(simd, &mut g[g_layout.row(r)], Start::Row, terms);
        }
    }
}

/// The arguments the kernels by latent share: `latents` within the index's, and one
/// value for each of its entries (`what` names the kernel in the messages).
#[track_caller]
fn check_by_latent(index: &LatentIndex, values: &[f32], latents: &Range<usize>, what: &str) {
    assert!(
        latents.start <= latents.end && latents.end <= index.cols(),
        "{what}: latents {latents:?} outside 0..{}",
        index.cols()
    );
    assert_eq!(
        values.len(),
        index.nnz(),
        "{what}: values length != entries"
    );
}

/// `g[j - latents.start, :] += alpha values[e] x[b, :]` for every entry `e = (b, j)` of the
/// indexed batch with `j` in `latents`: the rows `latents` of the `N x d` gradient
/// `alpha V^T X`, where `V` is the sparse batch with `values` in place of its own
/// (aligned with the entries of the [`SparseRows`] that `index` was built from).
///
/// `dW_dec`: `values` the activations (`codes.values()`), `x = dout`. `dW_enc^T`: `values`
/// the latent gradients, `x` the encoder's input rows. Pass `latents = 0..N` and all of
/// `g`, or give each thread a range and its rows (see the module documentation). Each
/// row of `g` receives its entries in increasing row order.
///
/// # Panics
/// If `latents` is not within `0..index.cols()`, `values.len() != index.nnz()`,
/// `x` is too short for `x_layout`, `x_layout.rows != index.source_rows()`,
/// `g` is too short for `g_layout`, `g_layout.rows != latents.len()`, or
/// `g_layout.cols != x_layout.cols`.
#[allow(clippy::too_many_arguments)]
pub fn scatter_outer_add(
    index: &LatentIndex,
    values: &[f32],
    x: &[f32],
    x_layout: Layout,
    alpha: f32,
    latents: Range<usize>,
    g: &mut [f32],
    g_layout: Layout,
) {
    check_by_latent(index, values, &latents, "scatter_outer_add");
    x_layout.check(x.len(), "scatter_outer_add: x");
    assert_eq!(
        x_layout.rows,
        index.source_rows(),
        "scatter_outer_add: x rows != code rows"
    );
    g_layout.check(g.len(), "scatter_outer_add: g");
    assert_eq!(
        g_layout.rows,
        latents.len(),
        "scatter_outer_add: g rows != latents in the range"
    );
    assert_eq!(
        g_layout.cols, x_layout.cols,
        "scatter_outer_add: g cols != x cols"
    );
    if g_layout.is_empty() {
        return;
    }
    dispatch(ScatterOuterAdd(
        index, values, x, x_layout, alpha, latents, g, g_layout,
    ));
}

/// `out[j - latents.start] += alpha sum_{e of latent j} values[e]` for `j` in `latents`,
/// in increasing row order (the encoder bias's gradient from the latent gradients).
/// A scalar loop: one addition per entry.
///
/// # Panics
/// If `latents` is not within `0..index.cols()`, `values.len() != index.nnz()`, or
/// `out.len() != latents.len()`.
pub fn sum_by_latent(
    index: &LatentIndex,
    values: &[f32],
    alpha: f32,
    latents: Range<usize>,
    out: &mut [f32],
) {
    check_by_latent(index, values, &latents, "sum_by_latent");
    assert_eq!(
        out.len(),
        latents.len(),
        "sum_by_latent: out length != latents in the range"
    );
    for (o, j) in out.iter_mut().zip(latents) {
        let (_, entries) = index.latent(j);
        let sum: f32 = entries.iter().map(|&e| values[e as usize]).sum();
        *o += alpha * sum;
    }
}

/// Scalar references for this module's kernels, accumulated in f64 and walking the rows
/// of the [`SparseRows`] directly.
pub mod reference {
    use super::*;

    /// Reference for [`super::sparse_times_dense`].
    pub fn sparse_times_dense(
        codes: &SparseRows,
        w: &[f32],
        w_layout: Layout,
        bias: Option<&[f32]>,
        out: &mut [f32],
        out_layout: Layout,
    ) {
        for b in 0..out_layout.rows {
            let (indices, values) = codes.row(b);
            for c in 0..out_layout.cols {
                let mut acc = bias.map_or(0.0, |bias| f64::from(bias[c]));
                for (&j, &v) in indices.iter().zip(values) {
                    let wv = w[j as usize * w_layout.row_stride + c];
                    acc += f64::from(v) * f64::from(wv);
                }
                out[b * out_layout.row_stride + c] = acc as f32;
            }
        }
    }

    /// Reference for [`super::dots_at_entries`].
    pub fn dots_at_entries(
        codes: &SparseRows,
        dout: &[f32],
        dout_layout: Layout,
        w: &[f32],
        w_layout: Layout,
        grads: &mut [f32],
    ) {
        for b in 0..dout_layout.rows {
            for e in codes.row_range(b) {
                let j = codes.indices()[e] as usize;
                grads[e] = (0..dout_layout.cols)
                    .map(|c| {
                        f64::from(dout[b * dout_layout.row_stride + c])
                            * f64::from(w[j * w_layout.row_stride + c])
                    })
                    .sum::<f64>() as f32;
            }
        }
    }

    /// Reference for [`super::scatter_outer_add`], from the [`SparseRows`] itself.
    #[allow(clippy::too_many_arguments)]
    pub fn scatter_outer_add(
        codes: &SparseRows,
        values: &[f32],
        x: &[f32],
        x_layout: Layout,
        alpha: f32,
        latents: Range<usize>,
        g: &mut [f32],
        g_layout: Layout,
    ) {
        let mut sums = vec![0.0f64; latents.len() * g_layout.cols];
        for b in 0..codes.rows() {
            for e in codes.row_range(b) {
                let j = codes.indices()[e] as usize;
                if !latents.contains(&j) {
                    continue;
                }
                let s = f64::from(alpha) * f64::from(values[e]);
                for c in 0..g_layout.cols {
                    sums[(j - latents.start) * g_layout.cols + c] +=
                        s * f64::from(x[b * x_layout.row_stride + c]);
                }
            }
        }
        for r in 0..latents.len() {
            for c in 0..g_layout.cols {
                let k = r * g_layout.row_stride + c;
                g[k] = (f64::from(g[k]) + sums[r * g_layout.cols + c]) as f32;
            }
        }
    }

    /// Reference for [`super::sum_by_latent`], from the [`SparseRows`] itself.
    pub fn sum_by_latent(
        codes: &SparseRows,
        values: &[f32],
        alpha: f32,
        latents: Range<usize>,
        out: &mut [f32],
    ) {
        let mut sums = vec![0.0f64; latents.len()];
        for (&j, &v) in codes.indices().iter().zip(values) {
            let j = j as usize;
            if latents.contains(&j) {
                sums[j - latents.start] += f64::from(v);
            }
        }
        for (o, s) in out.iter_mut().zip(sums) {
            *o = (f64::from(*o) + f64::from(alpha) * s) as f32;
        }
    }
}
