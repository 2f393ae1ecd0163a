//! Packed, cache-blocked `C <- alpha * A * B + beta * C` for products too large for the
//! register-tiled kernel to keep its operands in cache: a sparse autoencoder's encoder
//! (4096 x 512 by 512 x 8192), inference over a large batch.
//!
//! The loops are the usual three levels of blocking around a register micro-tile. A
//! block of `DEPTH` steps of `k` of `B`, `COLUMNS` wide, is copied into panels of `V`
//! vectors a step; a block of up to `rows_per_block` rows of `A` is copied into panels
//! of `R` rows a step and stays in L2 while every column panel uses it, and a column
//! panel (`DEPTH x V` vectors) stays in cache while every row tile of the block uses it.
//! A micro-tile keeps `R x V` vectors of `C` in registers over a block's steps: per step
//! `V` vector loads and `R` broadcasts from the two copies, read in order, for `R x V`
//! FMAs. With AVX-512 that is 6 x 4: 24 independent chains, well past what two FMA pipes
//! of latency 4 need, and 10 loads for 24 FMAs (12 x 2 would take 14). With AVX2 (16
//! registers) it is 6 x 2.
//!
//! The copies pad a ragged edge with zeros to whole tiles; a tile crossing an edge of
//! `C` goes through a stack tile with the same vector arithmetic, so every element of
//! `C` is computed by the same operations wherever it falls, and splitting a product
//! between threads by rows or columns never changes a bit. As with the tiled kernel, a
//! product reads and writes only its own rows and columns of `C`.

use std::cell::RefCell;

use pulp::{Simd, WithSimd};

use super::tiled::Product;

/// Steps of `k` per block: a sparse autoencoder's input width (512) in one block, so
/// `C` is written once rather than read back after each block.
const DEPTH: usize = 512;

/// Columns of `B` per copied block (8 MB at `DEPTH` steps): each copy of a block of `A`
/// serves this many columns.
const COLUMNS: usize = 4096;

/// Floats of `A`'s copied block (1 MB), about half of a 2 MB L2, which leaves room for the
/// panel of `B` (128 KB with AVX-512) that every row tile of the block reads.
const A_BLOCK: usize = 1 << 18;

/// Largest tile in floats (`R x V x lanes`), which sizes the stack tile of edges.
const MAX_TILE: usize = 512;

thread_local! {
    /// This thread's copies of `A`'s and `B`'s blocks.
    static BUFFERS: RefCell<(Vec<f32>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// Whether this kernel runs the products too large for the tiled one on `arch`, rather
/// than `matrixmultiply`: with AVX2 or AVX-512, whose registers its micro-tiles are
/// sized for. `matrixmultiply`'s AVX-512 kernel (16 x 16, a broadcast load per FMA) held
/// the SAE step at a third of the FMA peak on a Xeon with two 512-bit FMA units (see
/// README.md); on a Zen 4 the two are within a few percent of each other
/// (`cargo bench -p kernels --bench gemm_compare -- --sae`, and `--threads 2`).
pub(super) fn suits(arch: crate::isa::Arch) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        matches!(arch, crate::isa::Arch::V3(_) | crate::isa::Arch::V4(_))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = arch;
        false
    }
}

/// Runs `product` on the thread's instruction set.
///
/// # Safety
/// As [`Product::run`].
pub(super) unsafe fn run(product: Product) {
    BUFFERS.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buffers) => {
            let (a, b) = &mut *buffers;
            crate::isa::dispatch(Job { product, a, b })
        }
        // Only reachable if a product started another on the same thread.
        Err(_) => crate::isa::dispatch(Job {
            product,
            a: &mut Vec::new(),
            b: &mut Vec::new(),
        }),
    })
}

struct Job<'a> {
    product: Product,
    a: &'a mut Vec<f32>,
    b: &'a mut Vec<f32>,
}

impl WithSimd for Job<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        // SAFETY (every arm): `Product::run`'s contract, this function's caller's.
        match S::F32_LANES {
            16 => unsafe { blocks::<S, 6, 4>(simd, &self.product, self.a, self.b) },
            8 => unsafe { blocks::<S, 6, 2>(simd, &self.product, self.a, self.b) },
            _ => unsafe { blocks::<S, 4, 4>(simd, &self.product, self.a, self.b) },
        }
    }
}

/// The three levels of blocking: steps of `k`, then columns of `B`, then rows of `A`,
/// each block's operands copied once and used by every tile of the block.
///
/// # Safety
/// As [`Product::run`].
#[inline(always)]
unsafe fn blocks<S: Simd, const R: usize, const V: usize>(
    simd: S,
    p: &Product,
    a_copy: &mut Vec<f32>,
    b_copy: &mut Vec<f32>,
) {
    const { assert!(R * V * 16 <= MAX_TILE) };
    let width = V * S::F32_LANES;
    let depth_max = DEPTH.min(p.k);
    let columns_max = COLUMNS.min(p.n).div_ceil(width) * width;
    let rows_per_block = (A_BLOCK / depth_max / R).max(1) * R;
    let rows_max = rows_per_block.min(p.m.div_ceil(R) * R);
    if b_copy.len() < depth_max * columns_max {
        b_copy.resize(depth_max * columns_max, 0.0);
    }
    if a_copy.len() < depth_max * rows_max {
        a_copy.resize(depth_max * rows_max, 0.0);
    }
    let mut j0 = 0;
    while j0 < p.n {
        let columns = COLUMNS.min(p.n - j0);
        let mut k0 = 0;
        while k0 < p.k {
            let depth = DEPTH.min(p.k - k0);
            // SAFETY: steps `k0..k0 + depth` of columns `j0..j0 + columns` lie in `B`
            // (the contract); the copy holds `depth * columns` rounded up to panels.
            unsafe { pack_b::<V>(p, S::F32_LANES, k0, depth, j0, columns, b_copy) };
            let beta = if k0 == 0 { p.beta } else { 1.0 };
            let mut i0 = 0;
            while i0 < p.m {
                let rows = rows_per_block.min(p.m - i0);
                // SAFETY: rows `i0..i0 + rows` at steps `k0..k0 + depth` lie in `A`.
                unsafe { pack_a::<R>(p, k0, depth, i0, rows, a_copy) };
                let (tiles_down, tiles_across) = (rows.div_ceil(R), columns.div_ceil(width));
                for t in 0..tiles_down * tiles_across {
                    // Down each column panel of `B` before the next: the panel stays in
                    // cache while every row tile of the block uses it.
                    let (i, j) = (t % tiles_down * R, t / tiles_down * width);
                    let b_panel = &b_copy[j * depth..(j + width) * depth];
                    let a_panel = &a_copy[i * depth..(i + R) * depth];
                    let acc = micro::<S, R, V>(simd, depth, a_panel, b_panel);
                    let edge = Edge {
                        rows: R.min(rows - i),
                        width: width.min(columns - j),
                    };
                    // SAFETY: the tile's rows `i0 + i..` and columns `j0 + j..`, up
                    // to `edge`, lie in `C`.
                    unsafe {
                        store::<S, R, V>(simd, p, acc, (i0 + i, j0 + j), edge, (p.alpha, beta))
                    };
                }
                i0 += rows;
            }
            k0 += depth;
        }
        j0 += columns;
    }
}

/// Copies `B`'s steps `k0..k0 + depth` of columns `j0..j0 + columns` into `to` as
/// panels of `V * lanes` columns, each `depth` steps of `V * lanes` floats; columns past
/// `columns` are zeros.
///
/// # Safety
/// Those steps and columns lie in `B`.
#[inline(always)]
unsafe fn pack_b<const V: usize>(
    p: &Product,
    lanes: usize,
    k0: usize,
    depth: usize,
    j0: usize,
    columns: usize,
    to: &mut [f32],
) {
    let width = V * lanes;
    for (panel, out) in to[..columns.div_ceil(width) * width * depth]
        .chunks_exact_mut(width * depth)
        .enumerate()
    {
        let first = j0 + panel * width;
        let count = width.min(j0 + columns - first);
        for (step, out) in out.chunks_exact_mut(width).enumerate() {
            // SAFETY: step `k0 + step < k0 + depth` of column `first < j0 + columns`.
            let from = unsafe {
                p.b.add((k0 + step) * p.b_row_stride + first * p.b_col_stride)
            };
            if p.b_col_stride == 1 {
                // SAFETY: `count` adjacent columns of that step, all in `B`.
                let row = unsafe { core::slice::from_raw_parts(from, count) };
                out[..count].copy_from_slice(row);
            } else {
                for (q, slot) in out[..count].iter_mut().enumerate() {
                    // SAFETY: column `first + q < j0 + columns` of that step.
                    *slot = unsafe { *from.add(q * p.b_col_stride) };
                }
            }
            out[count..].fill(0.0);
        }
    }
}

/// Copies `A`'s rows `i0..i0 + rows` at steps `k0..k0 + depth` into `to` as panels of
/// `R` rows, each `depth` steps of `R` floats; rows past `rows` are zeros.
///
/// # Safety
/// Those rows and steps lie in `A`.
#[inline(always)]
unsafe fn pack_a<const R: usize>(
    p: &Product,
    k0: usize,
    depth: usize,
    i0: usize,
    rows: usize,
    to: &mut [f32],
) {
    for (panel, out) in to[..rows.div_ceil(R) * R * depth]
        .chunks_exact_mut(R * depth)
        .enumerate()
    {
        let first = i0 + panel * R;
        let count = R.min(i0 + rows - first);
        if p.a_col_stride == 1 {
            // Rows stored by rows: each row's steps are adjacent, read in order.
            for r in 0..R {
                if r < count {
                    // SAFETY: row `first + r < i0 + rows` at step `k0`, in `A`.
                    let from = unsafe { p.a.add((first + r) * p.a_row_stride + k0) };
                    for step in 0..depth {
                        // SAFETY: step `k0 + step < k0 + depth` of that row.
                        out[step * R + r] = unsafe { *from.add(step) };
                    }
                } else {
                    for step in 0..depth {
                        out[step * R + r] = 0.0;
                    }
                }
            }
        } else {
            // `A` stored transposed (a weight gradient's `X^T`): a step's rows are
            // adjacent, so read a step at a time rather than a row at a time across
            // `depth` cache lines.
            for (step, out) in out.chunks_exact_mut(R).enumerate() {
                // SAFETY: row `first` at step `k0 + step < k0 + depth`, in `A`.
                let from = unsafe {
                    p.a.add(first * p.a_row_stride + (k0 + step) * p.a_col_stride)
                };
                for (r, slot) in out.iter_mut().enumerate() {
                    *slot = if r < count {
                        // SAFETY: row `first + r < i0 + rows` of that step.
                        unsafe { *from.add(r * p.a_row_stride) }
                    } else {
                        0.0
                    };
                }
            }
        }
    }
}

/// `R x V` vectors of `A B` over `depth` steps of a panel of each copy.
#[inline(always)]
fn micro<S: Simd, const R: usize, const V: usize>(
    simd: S,
    depth: usize,
    a: &[f32],
    b: &[f32],
) -> [[S::f32s; V]; R] {
    let lanes = S::F32_LANES;
    let zero = simd.splat_f32s(0.0);
    let mut acc = [[zero; V]; R];
    let (a, b) = (&a[..depth * R], &b[..depth * V * lanes]);
    for (a, b) in a.chunks_exact(R).zip(b.chunks_exact(V * lanes)) {
        let bv: [S::f32s; V] = core::array::from_fn(|v| {
            // SAFETY: `b` is one step of the panel, `V * lanes` floats, so vector `v < V`
            // is in it; unaligned.
            unsafe { core::ptr::read_unaligned(b.as_ptr().add(v * lanes) as *const S::f32s) }
        });
        for (acc, &x) in acc.iter_mut().zip(a) {
            let x = simd.splat_f32s(x);
            for (acc, &b) in acc.iter_mut().zip(&bv) {
                *acc = simd.mul_add_f32s(x, b, *acc);
            }
        }
    }
    acc
}

/// How much of a tile lies in `C`.
#[derive(Clone, Copy)]
struct Edge {
    rows: usize,
    width: usize,
}

/// Writes `alpha * acc + beta * C` (`alpha * acc` when `beta` is zero, `C` unread) over
/// the tile at row `i`, column `j` of `C`, clipped to `edge`.
///
/// # Safety
/// Rows `i..i + edge.rows` and columns `j..j + edge.width` lie in `C`.
#[inline(always)]
unsafe fn store<S: Simd, const R: usize, const V: usize>(
    simd: S,
    p: &Product,
    acc: [[S::f32s; V]; R],
    (i, j): (usize, usize),
    edge: Edge,
    (alpha, beta): (f32, f32),
) {
    let lanes = S::F32_LANES;
    let alpha_v = simd.splat_f32s(alpha);
    let beta_v = simd.splat_f32s(beta);
    let scaled = |sum: S::f32s, prior: *const f32| {
        if beta == 0.0 {
            simd.mul_f32s(alpha_v, sum)
        } else {
            // SAFETY: `prior` points to a whole vector (each caller's).
            let prior = unsafe { core::ptr::read_unaligned(prior as *const S::f32s) };
            simd.mul_add_f32s(alpha_v, sum, simd.mul_f32s(beta_v, prior))
        }
    };
    if edge.rows == R && edge.width == V * lanes && p.c_col_stride == 1 {
        for (r, row) in acc.iter().enumerate() {
            // SAFETY: row `i + r` of the tile, in `C` (the contract).
            let c = unsafe { p.c.add((i + r) * p.c_row_stride + j) };
            for (v, &sum) in row.iter().enumerate() {
                // SAFETY: vector `v` of that row's `V * lanes` adjacent columns, in `C`.
                let out = unsafe { c.add(v * lanes) };
                let value = scaled(sum, out);
                // SAFETY: as above.
                unsafe { core::ptr::write_unaligned(out as *mut S::f32s, value) };
            }
        }
        return;
    }
    // Through a stack tile, with the same vector operations as above, so an element
    // rounds alike wherever it falls.
    let mut tile = [0.0f32; MAX_TILE];
    let width = V * lanes;
    for (r, row) in acc.iter().enumerate().take(edge.rows) {
        // SAFETY: row `i + r` of the tile, in `C`.
        let c = unsafe { p.c.add((i + r) * p.c_row_stride + j * p.c_col_stride) };
        let line = &mut tile[r * width..(r + 1) * width];
        if beta != 0.0 {
            for (q, slot) in line.iter_mut().enumerate().take(edge.width) {
                // SAFETY: column `j + q` of the row, in `C`.
                *slot = unsafe { *c.add(q * p.c_col_stride) };
            }
        }
        for (v, &sum) in row.iter().enumerate() {
            let out = line[v * lanes..].as_mut_ptr();
            let value = scaled(sum, out);
            // SAFETY: vector `v` of the stack tile's row, `width` floats.
            unsafe { core::ptr::write_unaligned(out as *mut S::f32s, value) };
        }
        for (q, &value) in line.iter().enumerate().take(edge.width) {
            // SAFETY: column `j + q` of the row, in `C`.
            unsafe { *c.add(q * p.c_col_stride) = value };
        }
    }
}
