//! Register-tiled `C <- alpha * A * B + beta * C` for the products of training, where
//! one dimension is the batch (32 rows of `A`, or a depth of 32).
//!
//! Each micro-tile keeps `R x 2` vectors of `C` (R <= 6 rows, two vectors of columns;
//! up to 8 rows with AVX-512's 32 registers where the rows of `A` are apart in memory)
//! in registers over a block of steps of `k`: per step two vector loads of a row of
//! `B` and `R` broadcasts from `A`, so loads stay well below the two FMA pipes' rate
//! (an 8-row, one-vector tile, `matrixmultiply`'s for f32 on AVX2, needs a load per
//! FMA). Neither weight matrix nor activations are copied: `A` is broadcast from where
//! it is, and `B` is read in place when its rows are contiguous (the weights in the
//! forward pass, `dZ` in the weight gradient). A `B` stored by columns (the input
//! gradient's `W^T`) is handled as `C^T = B^T A^T`, which reads `W`'s rows in place
//! and copies only the batch-sized operand; that copy, and the store of the transposed
//! result, go through 8 x 8 transposes in registers (AVX's, on each 8-lane half of an
//! AVX-512 register): element by element, they took a quarter to a third of the time of
//! these products at the reference model's shapes. With those transposes and AVX2, a
//! product of the batch by weights of ragged width (32 x 784 by 784 x 100) runs
//! transposed too, where
//! the batch fills whole panels rather than the width leaving one part padding. A right
//! edge of up to half a vector past whole pairs (a 100-unit layer's last 4 columns with
//! AVX-512) runs apart as its own transposed product, its columns a tile's rows. Any
//! other ragged right edge is computed as the last whole vector or pair of vectors
//! (with AVX-512, an AVX2 vector where that covers it), whose columns the panel before
//! wrote are written back as they are (or, where `B` is narrower than a panel and not
//! whole vectors, copied into a zero-padded one). The copies
//! go to a buffer each thread keeps, so nothing is allocated after a thread's first
//! product.
//!
//! Every element of `C` is computed by the same sequence of operations whichever tile,
//! panel or thread it falls in, so splitting a product between threads never changes
//! a bit of the result.
//!
//! A product never reads or writes outside its own columns and rows of `C`, since callers
//! split `C` by columns (or rows) and run the parts on different threads: a tile's rows
//! stop at `m`, the columns a ragged edge writes back lie in `0..n`, and the stores of
//! whole vectors, of the stack tile and of a transposed tile all cover the tile's `width`
//! columns of `R` rows and nothing past them.

use std::cell::RefCell;

use pulp::{Simd, WithSimd};

/// Steps of `k` per block: a `KC x 2`-vector panel of `B` (8 KB with AVX2) stays in L1
/// while every row tile uses it.
const KC: usize = 128;

/// Steps of `k` per block of a product whose `B` is stored by columns, run transposed
/// (see [`Product::oriented`]): one block for the depths of these models, so each
/// element of `C`, written through a transpose, is written once rather than once per
/// block.
const KC_TRANSPOSED: usize = 1024;

/// Rows of `C` per micro-tile (but for [`WIDE_ROWS`]): 12 accumulators, enough independent FMA chains to
/// cover the FMA latency on two pipes, plus two for `B` and one broadcast.
const ROWS: usize = 6;

/// Rows per micro-tile with AVX-512's 32 registers where the rows of `A` are apart in
/// memory: 16 accumulators. Each step's two loads of `B` then serve 16 FMAs rather
/// than 12, and a 32-row batch is 4 tiles rather than 6. On Zen 5, at the shapes of a
/// thread's share of the reference model, the forward products ran 3-6% faster than
/// with 6 rows (`gemm_compare --shape`), and the input gradients 2-6% (a timing program
/// outside the repository). The weight gradients, whose rows of `A` are adjacent
/// floats, ran no faster with 8, 10 or 12 rows, so they keep [`ROWS`] (each form is
/// another copy of the kernel to compile).
const WIDE_ROWS: usize = 8;

/// Floats of a block of `B` small enough to stay in L1 while every row tile reads it.
const SMALL_B: usize = 4096;

/// Widest register in f32 lanes (AVX-512); sizes the stack tile of edge stores.
const MAX_LANES: usize = 16;

thread_local! {
    /// This thread's buffer for copied panels of `B`: [`PANEL`] floats once allocated.
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Allocates `scratch` to [`PANEL`] floats the first time; a no-op afterwards.
fn allocate(scratch: &mut Vec<f32>) {
    if scratch.len() < PANEL {
        scratch.resize(PANEL, 0.0);
    }
}

/// Gives this thread its buffer now, so that its first product does not allocate.
pub(super) fn reserve_buffer() {
    SCRATCH.with(|cell| {
        if let Ok(mut scratch) = cell.try_borrow_mut() {
            allocate(&mut scratch);
        }
    });
}

/// A product whose operands were validated by [`super::gemm`].
#[derive(Clone, Copy)]
pub(super) struct Product {
    pub m: usize,
    pub k: usize,
    pub n: usize,
    pub alpha: f32,
    pub beta: f32,
    pub a: *const f32,
    pub a_row_stride: usize,
    pub a_col_stride: usize,
    pub b: *const f32,
    pub b_row_stride: usize,
    pub b_col_stride: usize,
    pub c: *mut f32,
    pub c_row_stride: usize,
    pub c_col_stride: usize,
}

impl Product {
    /// # Safety
    /// Every `a[i * a_row_stride + p * a_col_stride]`, `b[p * b_row_stride + j *
    /// b_col_stride]` and `c[i * c_row_stride + j * c_col_stride]` with `i < m`, `p < k`,
    /// `j < n` is in bounds, `C`'s elements are distinct locations, and `C` overlaps
    /// neither `A` nor `B`. `m`, `k` and `n` are positive.
    pub(super) unsafe fn run(self) {
        let arch = self.arch();
        SCRATCH.with(|cell| match cell.try_borrow_mut() {
            Ok(mut scratch) => {
                allocate(&mut scratch);
                arch.dispatch(Job {
                    product: self,
                    scratch: &mut scratch,
                })
            }
            // Only reachable if a product started another on the same thread.
            Err(_) => arch.dispatch(Job {
                product: self,
                scratch: &mut vec![0.0; PANEL],
            }),
        })
    }

    /// The instruction set this product runs on: the thread's.
    fn arch(&self) -> crate::isa::Arch {
        crate::isa::current()
    }

    /// This product, or the same one as `C^T = B^T A^T` where that is cheaper with `S`'s
    /// registers, and its steps of `k` per block. Where both orders could run, they take
    /// the same blocks, and `a b` is `b a`: every element is computed by the same
    /// operations, so the choice never changes a bit.
    #[inline(always)]
    fn oriented<S: Simd>(self) -> (Self, usize) {
        // A column-major `B` (the input gradient's `W^T`) would have to be transposed
        // into panels for every row block; `C^T = B^T A^T` instead reads `W`'s rows in
        // place as broadcasts and copies only the batch-sized `A`.
        if self.b_col_stride != 1 && self.b_row_stride == 1 {
            return (self.transposed(), KC_TRANSPOSED);
        }
        // A batch-sized `A` by a `B` whose width is ragged (32 x 784 by 784 x 100): the
        // last panel computes padding (112 columns for 100), where transposed the batch
        // is the width and fills its panels (32 for 32). Worth the copy of `A^T` and the
        // transposed store only where registers transpose them.
        let pair = 2 * S::F32_LANES;
        let padded = |width: usize| width.div_ceil(pair) * pair;
        let fewer = (self.n * padded(self.m)) * 16 < (self.m * padded(self.n)) * 15;
        if fewer
            && self.c_col_stride == 1
            && self.a_col_stride == 1
            && self.n >= pair
            // With AVX-512 the panels are 32 wide, and the transposed order measured no
            // faster at the reference model's ragged products.
            && S::F32_LANES == 8
            && transpose8::fits::<S>()
        {
            return (self.transposed(), KC);
        }
        (self, KC)
    }

    /// This product cut in two where its right edge is a few columns past whole pairs
    /// of vectors (a 100-unit layer's last 4 with AVX-512): the whole pairs, and the
    /// edge as `C_e^T <- alpha B_e^T A^T + beta C_e^T`, the edge's columns a tile's rows
    /// and `A`'s rows its vectors. Computed in place, that edge is a vector of mostly
    /// padding per row of `C`, each taking its own broadcast, so loads outnumber FMAs;
    /// at 32 x 392 x 100 and 392 x 32 x 100 those 4 columns took a fifth of the
    /// product's time. Transposed, every lane of an FMA is an element of `C`. `A` by
    /// rows is copied transposed by 8 x 8 blocks (`pack_b`), `A` by columns (`X^T` in a
    /// weight gradient) read in place, and the edge's store goes through the transposed
    /// tiles' 8 x 8 transposes. Both parts take the same blocks of `k` as the whole
    /// product would, so every element is computed by the same operations.
    #[inline(always)]
    fn narrow_edge<S: Simd>(self) -> Option<(Self, Self)> {
        let pair = 2 * S::F32_LANES;
        let edge = self.n % pair;
        let suits = self.b_col_stride == 1
            && self.c_col_stride == 1
            && self.c_row_stride != 1
            && self.n > pair
            && self.m >= pair
            && edge > 0
            && edge <= S::F32_LANES / 2
            && transpose8::fits::<S>();
        if !suits {
            return None;
        }
        let first = self.n - edge;
        let whole = Self { n: first, ..self };
        let columns = Self {
            n: edge,
            // SAFETY: column `first < n` of `B`, in bounds (the product's contract).
            b: unsafe { self.b.add(first * self.b_col_stride) },
            // SAFETY: column `first < n` of `C`, likewise.
            c: unsafe { self.c.add(first * self.c_col_stride) },
            ..self
        };
        Some((whole, columns.transposed()))
    }

    /// The same product as `C^T <- alpha B^T A^T + beta C^T`.
    fn transposed(self) -> Self {
        Self {
            m: self.n,
            n: self.m,
            a: self.b,
            a_row_stride: self.b_col_stride,
            a_col_stride: self.b_row_stride,
            b: self.a,
            b_row_stride: self.a_col_stride,
            b_col_stride: self.a_row_stride,
            c_row_stride: self.c_col_stride,
            c_col_stride: self.c_row_stride,
            ..self
        }
    }
}

/// Floats of one copied panel of `B`.
const PANEL: usize = KC_TRANSPOSED * 2 * MAX_LANES;

struct Job<'a> {
    product: Product,
    scratch: &'a mut [f32],
}

impl WithSimd for Job<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let (product, block) = self.product.oriented::<S>();
        if let Some((whole, edge)) = product.narrow_edge::<S>() {
            // SAFETY: as below: `whole` is the product's first columns and `edge` the
            // rest, transposed, so each meets `Product::run`'s contract where the product
            // does, and together they write each of its elements once.
            unsafe {
                whole.blocks(simd, block, self.scratch);
                edge.blocks(simd, block, self.scratch);
            }
            return;
        }
        // SAFETY: `Product::run`'s contract, which holds for the transposed product too;
        // the scratch holds `PANEL` floats, a panel of `B` for a block of up to
        // `KC_TRANSPOSED` steps.
        unsafe { product.blocks(simd, block, self.scratch) }
    }
}

/// Whether products on `S`'s registers take tiles of up to [`WIDE_ROWS`] rows: AVX-512's,
/// whose 32 registers hold them.
#[inline(always)]
fn tall<S: Simd>() -> bool {
    S::F32_LANES == 16
}

/// Rows of the next tile when `left` rows remain: as many tiles as tiles of `most` rows
/// would need, as even as possible (32 rows by at most 6: 6, 6, 5, 5, 5, 5), since a tile
/// of fewer rows has too few independent accumulators to keep both FMA pipes busy.
#[inline(always)]
fn tile_rows(left: usize, most: usize) -> usize {
    let tiles = left.div_ceil(most);
    left.div_ceil(tiles.max(1))
}

impl Product {
    /// # Safety
    /// As [`Product::run`]; `scratch` holds at least `block * 2 * MAX_LANES` floats.
    #[inline(always)]
    unsafe fn blocks<S: Simd>(&self, simd: S, block: usize, scratch: &mut [f32]) {
        let lanes = S::F32_LANES;
        let pair = 2 * lanes;
        let half = half_width::<S>();
        let b_pack = scratch.as_mut_ptr();
        let most = self.most_rows::<S>();
        let mut k0 = 0;
        while k0 < self.k {
            let depth = block.min(self.k - k0);
            let block = Block {
                k0,
                depth,
                // Blocks after the first add to what the earlier ones wrote.
                beta: if k0 == 0 { self.beta } else { 1.0 },
            };
            // A shallow block of a small `B` read in place (the weight gradient's `dZ`
            // against a narrow layer) stays in L1 whole: row tiles go outside, so each
            // tile's broadcasts, read down `depth` rows of `A`, are loaded once rather
            // than once per column panel.
            let rows_outside = self.b_col_stride == 1
                && self.n >= pair
                && depth * self.n <= SMALL_B
                && self.m > most;
            if rows_outside {
                let mut i = 0;
                while i < self.m {
                    let rows = tile_rows(self.m - i, most);
                    let mut j = 0;
                    while j < self.n {
                        let panel = Panel::at(self, j, lanes, half.is_some());
                        // SAFETY: step `k0 < k` of column `panel.column < n`: an element of `B`.
                        let b = unsafe { self.b.add(k0 * self.b_row_stride + panel.column) };
                        // SAFETY: `B`'s rows are contiguous and at least two vectors wide, so
                        // `Panel::at` gives whole vectors in `0..n` (of `half` for a half-width
                        // panel, which `half` being there allowed), read in place for the
                        // block's steps (`k0 + depth <= k`); rows `i..i + rows` are in `0..m`.
                        unsafe {
                            self.tile(simd, half, &block, i, rows, &panel, b, self.b_row_stride)
                        };
                        j += pair;
                    }
                    i += rows;
                }
            } else {
                let mut j = 0;
                while j < self.n {
                    let panel = Panel::at(self, j, lanes, half.is_some());
                    // Panels of whole vectors of an in-place `B` are read where they are;
                    // only a `B` narrower than a panel, and not whole vectors, is copied.
                    let whole = panel.width % lanes == 0 || panel.half;
                    let (b, b_step) = if self.b_col_stride == 1 && whole {
                        (
                            // SAFETY: step `k0 < k` of column `panel.column < n`: an element
                            // of `B`.
                            unsafe { self.b.add(k0 * self.b_row_stride + panel.column) },
                            self.b_row_stride,
                        )
                    } else {
                        // SAFETY: `Product::run`'s contract; `scratch` holds `block * 2 *
                        // MAX_LANES >= depth * pair` floats, and `panel.width <= pair`.
                        unsafe { self.pack_b::<S>(k0, depth, j, panel.width, pair, b_pack) };
                        (b_pack as *const f32, pair)
                    };
                    let mut i = 0;
                    while i < self.m {
                        let rows = tile_rows(self.m - i, most);
                        // SAFETY: `b` holds the block's `depth` steps of the panel's columns
                        // (in `0..n`), `b_step` apart, as whole vectors: `B`'s own rows where
                        // the panel is whole vectors of contiguous rows (of `half` for a
                        // half-width panel, which `half` being there allowed), else the copy of
                        // `pair` floats a step; rows `i..i + rows` are in `0..m`.
                        unsafe { self.tile(simd, half, &block, i, rows, &panel, b, b_step) };
                        i += rows;
                    }
                    j += pair;
                }
            }
            k0 += depth;
        }
    }

    /// The most rows of a tile of this product with `S`'s registers.
    #[inline(always)]
    fn most_rows<S: Simd>(&self) -> usize {
        if tall::<S>() && self.a_row_stride != 1 {
            WIDE_ROWS
        } else {
            ROWS
        }
    }

    /// Runs the tile of rows `i..i + rows` and `panel`'s columns, reading `B`'s block
    /// from `b`, `b_step` floats per step; a half-width panel on `half`'s registers.
    ///
    /// # Safety
    /// As [`Product::run`]; rows `i..i + rows` (1 to [`Product::most_rows`] of them) lie
    /// in `0..m`, the block's steps in `0..k`, and `panel`'s columns in `0..n`; `b` holds
    /// the block's `depth` steps of those columns, `b_step` floats apart, each as whole
    /// vectors (two where `panel.width` exceeds one) of `S`, or of `half` for a
    /// half-width panel.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    unsafe fn tile<S: Simd>(
        &self,
        simd: S,
        half: Option<Half>,
        block: &Block,
        i: usize,
        rows: usize,
        panel: &Panel,
        b: *const f32,
        b_step: usize,
    ) {
        let tile = Tile {
            // SAFETY: row `i < m` at step `block.k0 < k`: an element of `A`.
            a: unsafe {
                self.a
                    .add(block.k0 * self.a_col_stride + i * self.a_row_stride)
            },
            a_row_stride: self.a_row_stride,
            a_step: self.a_col_stride,
            b,
            b_step,
            // SAFETY: row `i < m` of column `panel.column < n`: an element of `C`.
            c: unsafe {
                self.c
                    .add(i * self.c_row_stride + panel.column * self.c_col_stride)
            },
            c_row_stride: self.c_row_stride,
            c_col_stride: self.c_col_stride,
            depth: block.depth,
            width: panel.width,
            skip: panel.skip,
            alpha: self.alpha,
            beta: block.beta,
        };
        let tall = tall::<S>();
        // SAFETY: the tile's fields describe rows `i..i + rows` of `A` and `C`, the block's
        // steps and `panel`'s columns, in bounds by this function's contract; `rows` is at
        // most `most_rows`, which exceeds `ROWS` only where `tall`.
        match half {
            // SAFETY: as below, with `half`'s registers, one of which the panel is.
            Some(half) if panel.half => unsafe { tile.dispatch(half, rows, false, tall) },
            _ => unsafe { tile.dispatch(simd, rows, panel.width > S::F32_LANES, tall) },
        }
    }

    /// Copies `B`'s rows `k0..k0 + depth`, columns `j..j + width`, into `to` as `depth`
    /// rows of `pair` floats, zeros past `width`.
    ///
    /// # Safety
    /// As [`Product::run`]; `to` has room for `depth * pair` floats, `width <= pair`.
    #[inline(always)]
    unsafe fn pack_b<S: Simd>(
        &self,
        k0: usize,
        depth: usize,
        j: usize,
        width: usize,
        pair: usize,
        to: *mut f32,
    ) {
        let (rs, cs) = (self.b_row_stride, self.b_col_stride);
        // Whole 8 x 8 blocks of a transpose go through registers; the rest, one by one.
        let (block_columns, block_depth) = if rs == 1 && transpose8::fits::<S>() {
            (width / 8 * 8, depth / 8 * 8)
        } else {
            (0, 0)
        };
        for q0 in (0..block_columns).step_by(8) {
            for p0 in (0..block_depth).step_by(8) {
                // SAFETY: `B` is stored by columns (`rs == 1`): steps `k0 + p0..k0 + p0 + 8`
                // (`p0 + 8 <= depth`) of columns `j + q0..j + q0 + 8` (`q0 + 8 <= width`)
                // are 8 runs of 8 adjacent elements of `B`, `cs` apart; floats `q0..q0 + 8`
                // (`q0 + 8 <= width <= pair`) of rows `p0..p0 + 8` (`< depth`) of the copy
                // are in it (room for `depth * pair`). `S` passes `transpose8::fits`
                // (checked above), whose registers exist only where the CPU runs AVX.
                unsafe {
                    transpose8::copy(
                        self.b.add(k0 + p0 + (j + q0) * cs),
                        cs,
                        to.add(p0 * pair + q0),
                        pair,
                    )
                };
            }
        }
        for q in 0..pair {
            if q < width {
                // Down one column of `B`: contiguous when `B` is a transpose.
                // SAFETY: step `k0 < k` of column `j + q`, in `0..n` (a copied panel starts
                // at `j`): an element of `B`.
                let from = unsafe { self.b.add(k0 * rs + (j + q) * cs) };
                let first = if q < block_columns { block_depth } else { 0 };
                for p in first..depth {
                    // SAFETY: step `k0 + p < k` of that column is an element of `B`, and
                    // float `q < pair` of row `p < depth` is in the copy.
                    unsafe { *to.add(p * pair + q) = *from.add(p * rs) };
                }
            } else {
                for p in 0..depth {
                    // SAFETY: float `q < pair` of row `p < depth` is in the copy.
                    unsafe { *to.add(p * pair + q) = 0.0 };
                }
            }
        }
    }
}

/// Steps `k0..k0 + depth` of `k`, and the `beta` they apply.
struct Block {
    k0: usize,
    depth: usize,
    beta: f32,
}

/// The columns of `C` one tile computes.
struct Panel {
    /// First column.
    column: usize,
    /// Columns computed (at most two vectors).
    width: usize,
    /// Leading columns not stored, as another panel stores them.
    skip: usize,
    /// One register of half the width (see [`half_width`]).
    half: bool,
}

impl Panel {
    /// The panel for columns `j..`, of up to two vectors of `lanes`. A ragged right edge
    /// of an in-place `B` is computed as the last whole vector or pair of vectors, `n -
    /// lanes..n` or `n - 2 lanes..n`, whose leading columns keep the values the panel
    /// before stored: full registers, and no copy. One vector where it covers the edge:
    /// its tile has half the accumulators, but finishes sooner than two vectors' would;
    /// and, where `half` (registers of half the width exist), one of those where it
    /// covers the edge.
    #[inline(always)]
    fn at(product: &Product, j: usize, lanes: usize, half: bool) -> Self {
        let pair = 2 * lanes;
        let width = pair.min(product.n - j);
        if product.b_col_stride == 1 && width < pair && product.n >= pair {
            let half = half && width <= lanes / 2;
            let vectors = if half {
                lanes / 2
            } else if width <= lanes {
                lanes
            } else {
                pair
            };
            Self {
                column: product.n - vectors,
                width: vectors,
                skip: j + vectors - product.n,
                half,
            }
        } else {
            Self {
                column: j,
                width,
                skip: 0,
                half: false,
            }
        }
    }
}

/// The registers of a half-width panel.
#[cfg(target_arch = "x86_64")]
type Half = pulp::x86::V3;
/// Never made: no instruction set here has registers of two widths.
#[cfg(not(target_arch = "x86_64"))]
type Half = pulp::Scalar;

/// Registers half as wide as `S`'s, for a ragged right edge of at most that many
/// columns: AVX2's 8 lanes beside AVX-512's 16. An FMA on them costs half of a 16-lane
/// one where the core splits those in two (AMD's Zen 4), and no more elsewhere; at the
/// reference model's 100-unit layers the last four columns cost 8 lanes instead of 16.
/// The same operations on every element, so the same bits.
#[inline(always)]
fn half_width<S: Simd>() -> Option<Half> {
    #[cfg(target_arch = "x86_64")]
    if S::F32_LANES == 16 {
        return pulp::x86::V3::try_new();
    }
    None
}

/// Where one micro-tile reads and writes.
struct Tile {
    /// Row `r` of step `p` of `A` is at `a[r * a_row_stride + p * a_step]`.
    a: *const f32,
    a_row_stride: usize,
    a_step: usize,
    /// Step `p` of `B` is two whole vectors at `b[p * b_step..]`.
    b: *const f32,
    b_step: usize,
    c: *mut f32,
    c_row_stride: usize,
    c_col_stride: usize,
    depth: usize,
    /// Columns of `C` this tile computes; fewer than its vectors hold only at the right
    /// edge.
    width: usize,
    /// Leading columns of those it does not store (another panel's).
    skip: usize,
    alpha: f32,
    beta: f32,
}

impl Tile {
    /// # Safety
    /// As [`Tile::run`] with `R = rows`, 1 to [`ROWS`] (or, where `tall`, to
    /// [`WIDE_ROWS`]), and `V` two exactly when `two`.
    ///
    /// `tall` says whether the product's instruction set makes taller tiles than [`ROWS`]
    /// (AVX-512, for its own registers and its half-width panels). It is a constant of
    /// each instruction set's code, so AVX2's carries no taller forms: with them, an
    /// AVX2 epoch of the reference model ran about 3% slower, though it never ran them.
    #[inline(always)]
    unsafe fn dispatch<S: Simd>(&self, simd: S, rows: usize, two: bool, tall: bool) {
        // Rows of `A` that are adjacent floats (a weight gradient's `X^T`) are broadcast
        // from fixed offsets: no stride and no address arithmetic in the loop, which on
        // AVX2's 16 registers spared those products a stack reload per broadcast. Only
        // the full tiles (5 and 6 rows) have that form: the others are a product's last
        // rows, and each form is another copy of the kernel to compile.
        // SAFETY (every arm): `rows` is 1 to 6, or to 8 where `tall` (the arms just below
        // take 7 and 8), so each arm's `R` is `rows`, and its `V` is two exactly when
        // `two`: this function's contract is `Tile::run`'s, and `UNIT` is set only where
        // `a_row_stride` is 1.
        debug_assert!((1..=if tall { WIDE_ROWS } else { ROWS }).contains(&rows));
        if tall {
            match (rows, two) {
                (8, true) => return unsafe { self.run::<S, 8, 2, false>(simd) },
                (7, true) => return unsafe { self.run::<S, 7, 2, false>(simd) },
                (8, false) => return unsafe { self.run::<S, 8, 1, false>(simd) },
                (7, false) => return unsafe { self.run::<S, 7, 1, false>(simd) },
                _ => {}
            }
        }
        if self.a_row_stride == 1 {
            match (rows, two) {
                (6, true) => return unsafe { self.run::<S, 6, 2, true>(simd) },
                (5, true) => return unsafe { self.run::<S, 5, 2, true>(simd) },
                (6, false) => return unsafe { self.run::<S, 6, 1, true>(simd) },
                (5, false) => return unsafe { self.run::<S, 5, 1, true>(simd) },
                _ => {}
            }
        }
        // A tile one vector wide where that covers the edge: less padding multiplied.
        match (rows, two) {
            (6, true) => unsafe { self.run::<S, 6, 2, false>(simd) },
            (5, true) => unsafe { self.run::<S, 5, 2, false>(simd) },
            (4, true) => unsafe { self.run::<S, 4, 2, false>(simd) },
            (3, true) => unsafe { self.run::<S, 3, 2, false>(simd) },
            (2, true) => unsafe { self.run::<S, 2, 2, false>(simd) },
            (_, true) => unsafe { self.run::<S, 1, 2, false>(simd) },
            (6, false) => unsafe { self.run::<S, 6, 1, false>(simd) },
            (5, false) => unsafe { self.run::<S, 5, 1, false>(simd) },
            (4, false) => unsafe { self.run::<S, 4, 1, false>(simd) },
            (3, false) => unsafe { self.run::<S, 3, 1, false>(simd) },
            (2, false) => unsafe { self.run::<S, 2, 1, false>(simd) },
            (_, false) => unsafe { self.run::<S, 1, 1, false>(simd) },
        }
    }

    /// `R` rows by `V` vectors of `C`.
    ///
    /// # Safety
    /// `a` and `b` hold `depth` steps as the fields describe (`b` at least `V` whole
    /// vectors per step), and `C`'s `R x width` elements are in bounds.
    #[inline(always)]
    unsafe fn run<S: Simd, const R: usize, const V: usize, const UNIT: bool>(&self, simd: S) {
        let lanes = S::F32_LANES;
        let zero = simd.splat_f32s(0.0);
        let mut acc = [[zero; V]; R];
        // Each row of `A` from its own pointer. Rows a stride apart go through
        // `black_box`, which hides that stride from the compiler: it otherwise rebuilt
        // each row's address from the one before on every step, a chain of additions
        // (and a reload of the stride from the stack) that ran the forward products 1-4%
        // slower on Zen 5. Adjacent rows (`UNIT`) stay visible: fixed offsets from one
        // pointer.
        let a_rows: [*const f32; R] = if UNIT {
            core::array::from_fn(|r| self.a.wrapping_add(r))
        } else {
            core::hint::black_box(core::array::from_fn(|r| {
                self.a.wrapping_add(r * self.a_row_stride)
            }))
        };
        // Each step's operands from its index: pointers advanced after every step would
        // point past the end of `A` or `B` after the last one.
        for p in 0..self.depth {
            // SAFETY: step `p < depth` of `B`'s panel is in bounds.
            let b = unsafe { self.b.add(p * self.b_step) };
            let mut bv = [zero; V];
            for (v, slot) in bv.iter_mut().enumerate() {
                // SAFETY: each step of `B`'s panel holds `V` whole vectors.
                *slot = unsafe { load::<S>(b.add(v * lanes)) };
            }
            for (row, acc) in a_rows.iter().zip(&mut acc) {
                // SAFETY: step `p < depth` of each of the tile's `R` rows of `A` is in
                // bounds, and `row` is one of them.
                let x = simd.splat_f32s(unsafe { *row.add(p * self.a_step) });
                for (acc, &b) in acc.iter_mut().zip(&bv) {
                    *acc = simd.mul_add_f32s(x, b, *acc);
                }
            }
        }
        if self.c_row_stride == 1 && self.c_col_stride != 1 && transpose8::fits::<S>() {
            // SAFETY: this function's contract, `c_row_stride == 1`, and `S` passes
            // `transpose8::fits`.
            return unsafe { self.store_transposed::<S, R, V>(acc) };
        }
        // Row by row with constant indices: a loop over `acc` here made the compiler keep
        // it in memory and store every accumulator on every step above.
        macro_rules! store_rows {
            ($($r:literal)*) => {$(
                if $r < R {
                    // SAFETY: this function's contract, and row `$r < R`.
                    unsafe { self.store_row::<S, V>(simd, $r, acc[$r]) };
                }
            )*};
        }
        store_rows!(0 1 2 3 4 5 6 7);
        // The rows `store_rows!` lists, and the most an 8 x 8 transposed store holds.
        const { assert!(R <= 8) };
    }

    /// The store of a tile of a transposed product, whose rows are `C`'s columns: each of
    /// the tile's columns is `R` adjacent floats of memory. Through 8 x 8 transposes, a
    /// register per column, and the same vector operations as [`Tile::store_row`], so
    /// every element rounds as it would there.
    ///
    /// # Safety
    /// As [`Tile::run`]; `c_row_stride` is 1 and `S` passes [`transpose8::fits`].
    #[inline(always)]
    unsafe fn store_transposed<S: Simd, const R: usize, const V: usize>(
        &self,
        // By value: behind a reference the compiler kept `acc` in memory, storing every
        // accumulator on every step of the product.
        acc: [[S::f32s; V]; R],
    ) {
        let lanes = S::F32_LANES;
        // `v` picks a register in every row of `acc`, across its first dimension.
        #[allow(clippy::needless_range_loop)]
        for v in 0..V {
            // Each 8-lane half of the registers (one with AVX2, two with AVX-512).
            for h in 0..lanes / 8 {
                let first = v * lanes + h * 8;
                if first + 8 <= self.skip || first >= self.width {
                    continue;
                }
                // SAFETY: `S` passes `transpose8::fits` (this function's contract), so its
                // registers are whole 8-lane halves, `h < lanes / 8` of them; and the
                // tile's columns `first..first + 8` that lie in `skip..width` are `R`
                // adjacent floats of `C` each (`c_row_stride == 1`), `c_col_stride` apart.
                unsafe {
                    transpose8::store_half::<S, R, V>(
                        &acc,
                        (v, h),
                        self.c.add(first * self.c_col_stride),
                        self.c_col_stride,
                        self.skip.saturating_sub(first)..(self.width - first).min(8),
                        (self.alpha, self.beta),
                    )
                };
            }
        }
    }

    /// Writes `alpha * sum + beta * C` (or `alpha * sum` when `beta` is zero) to row `r`.
    ///
    /// # Safety
    /// As [`Tile::run`], `r < R`.
    #[inline(always)]
    unsafe fn store_row<S: Simd, const V: usize>(&self, simd: S, r: usize, acc: [S::f32s; V]) {
        let lanes = S::F32_LANES;
        // SAFETY: row `r < R` of the tile, in `C`.
        let c = unsafe { self.c.add(r * self.c_row_stride) };
        if self.c_col_stride == 1 && self.width == V * lanes {
            for (v, &sum) in acc.iter().enumerate() {
                let first = v * lanes;
                if self.skip >= first + lanes {
                    continue;
                }
                // SAFETY: the row's columns `first..first + lanes`, adjacent and within the
                // tile's `width == V * lanes`, are in `C`.
                let out = unsafe { c.add(first) };
                // SAFETY: `out` points to a whole vector of the row.
                let mut value = unsafe { self.scaled(simd, sum, out) };
                if self.skip > first {
                    // The skipped lanes hold the earlier panel's results already: they are
                    // written back unchanged. Through a stack tile instead, whose element
                    // copies stall the vector loads behind them, a weight update of ragged
                    // width took about 15% longer than one a panel wider.
                    let fresh = simd.mask_between_m32s((self.skip - first) as u32, lanes as u32);
                    // SAFETY: as above.
                    let prior = unsafe { load::<S>(out) };
                    value = simd.select_f32s(fresh.mask(), value, prior);
                }
                // SAFETY: as above.
                unsafe { store::<S>(out, value) };
            }
        } else {
            // Through a stack tile, with the same vector operations as above, so an
            // element rounds alike wherever it falls.
            let mut tile = [0.0f32; 2 * MAX_LANES];
            if self.beta != 0.0 {
                for (q, slot) in tile.iter_mut().enumerate().take(self.width).skip(self.skip) {
                    // SAFETY: column `q < width` of the tile's row, in `C`.
                    *slot = unsafe { *c.add(q * self.c_col_stride) };
                }
            }
            // Taken after the loop above: its `iter_mut` borrow would invalidate a pointer
            // taken before it.
            let tile_ptr = tile.as_mut_ptr();
            for (v, &sum) in acc.iter().enumerate() {
                // SAFETY: vector `v < V <= 2` of `tile`, which holds two of the widest.
                let out = unsafe { tile_ptr.add(v * lanes) };
                // SAFETY: `out` points to a whole vector of `tile`.
                let value = unsafe { self.scaled(simd, sum, out) };
                // SAFETY: as above.
                unsafe { store::<S>(out, value) };
            }
            for (q, &value) in tile.iter().enumerate().take(self.width).skip(self.skip) {
                // SAFETY: column `q < width` of the tile's row, in `C`.
                unsafe { *c.add(q * self.c_col_stride) = value };
            }
        }
    }

    /// `alpha * sum + beta * prior` (`alpha * sum` when `beta` is zero, `prior` unread).
    ///
    /// # Safety
    /// Unless `beta` is zero, `prior` points to `S::F32_LANES` readable floats.
    #[inline(always)]
    unsafe fn scaled<S: Simd>(&self, simd: S, sum: S::f32s, prior: *const f32) -> S::f32s {
        let alpha = simd.splat_f32s(self.alpha);
        if self.beta == 0.0 {
            simd.mul_f32s(alpha, sum)
        } else {
            let beta = simd.splat_f32s(self.beta);
            // SAFETY: `beta` is not zero, so `prior` points to a whole vector (the contract).
            let prior = unsafe { load::<S>(prior) };
            simd.mul_add_f32s(alpha, sum, simd.mul_f32s(beta, prior))
        }
    }
}

/// # Safety
/// `ptr` points to `S::F32_LANES` readable floats.
#[inline(always)]
unsafe fn load<S: Simd>(ptr: *const f32) -> S::f32s {
    // SAFETY: `S::f32s` is `S::F32_LANES` floats, all readable (the contract); unaligned.
    unsafe { core::ptr::read_unaligned(ptr as *const S::f32s) }
}

/// # Safety
/// `ptr` points to `S::F32_LANES` writable floats.
#[inline(always)]
unsafe fn store<S: Simd>(ptr: *mut f32, value: S::f32s) {
    // SAFETY: `S::f32s` is `S::F32_LANES` floats, all writable (the contract); unaligned.
    unsafe { core::ptr::write_unaligned(ptr as *mut S::f32s, value) }
}

/// The 8 x 8 transposes of [`crate::transpose`], and the stores of transposed tiles
/// built on them.
mod transpose8 {
    pub(super) use crate::transpose::block8::{copy, fits};

    #[cfg(target_arch = "x86_64")]
    pub(super) use x86::store_half;

    #[cfg(not(target_arch = "x86_64"))]
    pub(super) use elsewhere::store_half;

    #[cfg(not(target_arch = "x86_64"))]
    mod elsewhere {
        //! Never called: [`super::fits`] is false on this architecture.
        use pulp::Simd;

        pub(in super::super) unsafe fn store_half<S: Simd, const R: usize, const V: usize>(
            _: &[[S::f32s; V]; R],
            _: (usize, usize),
            _: *mut f32,
            _: usize,
            _: core::ops::Range<usize>,
            _: (f32, f32),
        ) {
            unreachable!("no 8 x 8 transpose on this architecture")
        }
    }

    #[cfg(target_arch = "x86_64")]
    mod x86 {
        use crate::transpose::block8::x86::transpose;
        use core::arch::x86_64::*;
        use core::ops::Range;
        use pulp::Simd;

        /// Stores half `h` (lanes `8 h..8 h + 8`) of register `v` of each of the `R` rows
        /// of `acc`, transposed, as [`store_columns`] does: the columns `columns` of an
        /// 8-column tile at `c`, scaled by `(alpha, beta)`.
        ///
        /// # Safety
        /// As [`halves`] and [`store_columns`].
        #[inline(always)]
        pub(in super::super) unsafe fn store_half<S: Simd, const R: usize, const V: usize>(
            acc: &[[S::f32s; V]; R],
            (v, h): (usize, usize),
            c: *mut f32,
            c_col_stride: usize,
            columns: Range<usize>,
            (alpha, beta): (f32, f32),
        ) {
            // SAFETY: the caller's contract, which is these two functions'.
            unsafe {
                let rows = halves::<S, R, V>(acc, v, h);
                store_columns::<R>(rows, c, c_col_stride, columns, alpha, beta)
            }
        }

        /// Half `h` (lanes `8 h..8 h + 8`) of register `v` of each of the `R` rows of
        /// `acc`, and zeros for rows `R..8`.
        ///
        /// # Safety
        /// `S` passes [`super::fits`], `h < S::F32_LANES / 8`, `v < V`, `R <= 8`, and the
        /// CPU runs AVX.
        #[inline(always)]
        unsafe fn halves<S: Simd, const R: usize, const V: usize>(
            acc: &[[S::f32s; V]; R],
            v: usize,
            h: usize,
        ) -> [__m256; 8] {
            debug_assert!(super::fits::<S>() && h < S::F32_LANES / 8);
            core::array::from_fn(|r| {
                if r < R {
                    let register = &acc[r][v] as *const S::f32s as *const __m256;
                    // SAFETY: `S::f32s` is `S::F32_LANES` floats, whole 8-lane halves
                    // (`fits`), of which `h` is one; unaligned.
                    unsafe { register.add(h).read_unaligned() }
                } else {
                    // SAFETY: the CPU runs AVX (the contract).
                    unsafe { _mm256_setzero_ps() }
                }
            })
        }

        /// Stores `alpha * sum + beta * C` (`alpha * sum` where `beta` is zero, `C`
        /// unread) to the columns `columns` of an 8-column tile of a transposed product:
        /// column `i` of `rows`' transpose is the `R` adjacent floats at `c + i
        /// c_col_stride`. The same operations as the tiles' other stores, so that every
        /// element rounds alike wherever it falls.
        ///
        /// # Safety
        /// The CPU runs AVX and FMA; `R <= 8`; for each `i` in `columns` (within `0..8`),
        /// `R` floats at `c + i c_col_stride` are in bounds.
        #[inline]
        #[target_feature(enable = "avx,fma")]
        #[allow(unused_unsafe)]
        unsafe fn store_columns<const R: usize>(
            rows: [__m256; 8],
            c: *mut f32,
            c_col_stride: usize,
            columns: Range<usize>,
            alpha: f32,
            beta: f32,
        ) {
            // SAFETY: this function enables AVX and FMA, all these intrinsics need.
            unsafe {
                let columns_of = transpose(rows);
                let alpha = _mm256_set1_ps(alpha);
                for i in columns {
                    let out = c.add(i * c_col_stride);
                    // Staged through the stack: 128- and 64-bit partial loads and stores of
                    // the column's `R` floats made these products faster alone but a whole
                    // epoch about 2% slower.
                    let mut staged = [0.0f32; 8];
                    let value = if beta == 0.0 {
                        _mm256_mul_ps(alpha, columns_of[i])
                    } else {
                        core::ptr::copy_nonoverlapping(out, staged.as_mut_ptr(), R);
                        let prior =
                            _mm256_mul_ps(_mm256_set1_ps(beta), _mm256_loadu_ps(staged.as_ptr()));
                        _mm256_fmadd_ps(alpha, columns_of[i], prior)
                    };
                    _mm256_storeu_ps(staged.as_mut_ptr(), value);
                    core::ptr::copy_nonoverlapping(staged.as_ptr(), out, R);
                }
            }
        }
    }
}
