//! The training step's work split across threads. Every split depends only on the
//! thread count, never on timing, so a run is bit-for-bit reproducible for a given
//! seed and thread count.
//!
//! Plain SGD on batches of up to 1024 rows trains as a team whose threads own parts of
//! the weights for a whole epoch (`team.rs`, through `Threads::broadcast`). The
//! other training steps fork and join per product: the forward product of a layer with
//! many inputs as two halves over them ([`Threads::product_by_input_halves`]), of a
//! narrower one by output columns or batch rows ([`Threads::product_then`]), the
//! weight gradients by rows ([`Threads::gemm`]); larger batches split by rows. The
//! output step splits by rows. Inference splits coarser: each thread takes a
//! contiguous run of whole batches.

use crate::error::TrainError;
use kernels::output::OutputStats;
use kernels::{gemm, GemmError, MatMut, MatRef};
use std::ops::Range;
use std::sync::Arc;

/// Rows per part are rounded to this, so that no part is left with a sliver of rows too
/// short for a full register tile (a batch of 32 splits 16 + 16).
const ROW_ALIGN: usize = 8;

/// Columns per part are rounded to this, the widest register tile's width.
const COLUMN_ALIGN: usize = 16;

/// From this many rows on, [`Threads::product_then`] always splits rows.
const ROW_SPLIT_FROM: usize = 64;

/// The output step on whole rows: `(z, targets, grad) -> stats`.
pub type OutputStep<'a> = dyn Fn(&[f32], &[f32], &mut [f32]) -> OutputStats + Sync + 'a;

/// A thread count and, above one, the pool that runs the parts.
#[derive(Clone, Debug)]
pub struct Threads {
    count: usize,
    pool: Option<Arc<rayon::ThreadPool>>,
}

impl Threads {
    /// One thread: everything runs on the caller's thread.
    pub fn sequential() -> Self {
        Self {
            count: 1,
            pool: None,
        }
    }

    /// `count` threads (at least 1).
    pub fn new(count: usize) -> Result<Self, TrainError> {
        if count == 0 {
            return Err(TrainError::Invalid(
                "thread count must be at least 1".into(),
            ));
        }
        if count == 1 {
            return Ok(Self::sequential());
        }
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(count)
            .thread_name(|i| format!("sae-worker-{i}"))
            .build()
            .map_err(|e| TrainError::Invalid(format!("cannot start {count} threads: {e}")))?;
        pool.broadcast(|_| kernels::gemm::reserve_thread_buffer());
        Ok(Self {
            count,
            pool: Some(Arc::new(pool)),
        })
    }

    /// The thread count.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Runs `f` on a pool thread, so the splits inside it start without a cross-thread
    /// hand-off each time.
    pub fn install<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        match &self.pool {
            Some(pool) => pool.install(f),
            None => f(),
        }
    }

    /// Runs `work(t)` on each thread `t` of the pool at the same time (on the caller's
    /// thread alone for one thread), and returns the results in thread order.
    pub(crate) fn broadcast<R: Send>(&self, work: &(dyn Fn(usize) -> R + Sync)) -> Vec<R> {
        match &self.pool {
            Some(pool) => pool.broadcast(|context| work(context.index())),
            None => vec![work(0)],
        }
    }

    /// `C <- alpha A B + beta C`, with the rows of `C` (and `A`) split across the threads.
    pub fn gemm(
        &self,
        alpha: f32,
        a: MatRef<'_>,
        b: MatRef<'_>,
        beta: f32,
        c: MatMut<'_>,
    ) -> Result<(), GemmError> {
        self.install(|| split_gemm(self.count, alpha, a, b, beta, c))
    }

    /// `out = input W` over `rows` row-major rows (a layer's forward product, or with
    /// `W^T` its input gradient), each thread then applying `epilogue` to its own rows
    /// while they are still in its cache (bias and activation forward, or the activation's
    /// derivative backward). `epilogue` gets the rows, the index of the first and their
    /// count.
    pub fn product_then(
        &self,
        input: &[f32],
        weight: MatRef<'_>,
        out: &mut [f32],
        rows: usize,
        epilogue: &(dyn Fn(&mut [f32], usize, usize) + Sync),
    ) -> Result<(), GemmError> {
        self.install(|| {
            let (inputs, units) = (weight.rows(), weight.cols());
            if self.count > 1 && rows < ROW_SPLIT_FROM && units >= inputs.max(2 * COLUMN_ALIGN) {
                // A batch of training rows times weights at least as wide as deep: halving
                // the columns has each thread read only its half of the weights, where row
                // halves would each read them all; it measured faster than row halves, with
                // `matrixmultiply` and with the tiled GEMM. (For deep, narrow weights,
                // 784 x 100, column halves of 50 ran no faster.) The epilogue goes by rows.
                let a = MatRef::row_major(&input[..rows * inputs], rows, inputs)?;
                let c = MatMut::row_major(&mut out[..rows * units], rows, units)?;
                split_columns(self.count, a, weight, c)?;
                split_rows_apply(
                    self.count,
                    &mut out[..rows * units],
                    units,
                    0..rows,
                    epilogue,
                );
                return Ok(());
            }
            split_product(self.count, input, weight, out, 0..rows, epilogue)
        })
    }

    /// `out = input W` for a training batch (`rows x inputs` times `inputs x units`),
    /// as the sum of two products over the halves of W's rows (the layer's input units,
    /// cut at an aligned half): the first half into
    /// `out`, the second into `partial`; then the halves are added and `epilogue` applied,
    /// split by rows. The halves are summed the same way whatever the thread count (one
    /// thread computes both), so results stay equal across counts.
    ///
    /// # Panics
    /// If `partial` holds fewer than `rows x units` values.
    pub fn product_by_input_halves(
        &self,
        input: &[f32],
        weight: MatRef<'_>,
        out: &mut [f32],
        partial: &mut [f32],
        rows: usize,
        epilogue: &(dyn Fn(&mut [f32], usize, usize) + Sync),
    ) -> Result<(), GemmError> {
        let (inputs, units) = (weight.rows(), weight.cols());
        let half = if inputs < 2 * ROW_ALIGN {
            inputs
        } else {
            cut(inputs, 1, 2)
        };
        let a = MatRef::row_major(&input[..rows * inputs], rows, inputs)?;
        let out = &mut out[..rows * units];
        let partial = &mut partial[..rows * units];
        let (a_first, w_first) = (a.cols_range(0..half), weight.rows_range(0..half));
        let (a_second, w_second) = (a.cols_range(half..inputs), weight.rows_range(half..inputs));
        self.install(|| {
            let first = MatMut::row_major(&mut *out, rows, units)?;
            let second = MatMut::row_major(&mut *partial, rows, units)?;
            if half == inputs {
                gemm(1.0, a_first, w_first, 0.0, first)?;
                split_rows_apply(self.count, out, units, 0..rows, epilogue);
                return Ok(());
            }
            let left = (self.count / 2).max(1);
            let right = (self.count - left).max(1);
            let (first_done, second_done) = if self.count > 1 {
                rayon::join(
                    || split_columns(left, a_first, w_first, first),
                    || split_columns(right, a_second, w_second, second),
                )
            } else {
                (
                    gemm(1.0, a_first, w_first, 0.0, first),
                    gemm(1.0, a_second, w_second, 0.0, second),
                )
            };
            first_done.and(second_done)?;
            let partial = &*partial;
            let add_then = |part: &mut [f32], first: usize, count: usize| {
                let other = &partial[first * units..(first + count) * units];
                for (sum, &value) in part.iter_mut().zip(other) {
                    *sum += value;
                }
                epilogue(part, first, count);
            };
            split_rows_apply(self.count, out, units, 0..rows, &add_then);
            Ok(())
        })
    }

    /// Runs `work` on one run of `out`'s columns per thread, cut where
    /// [`Threads::product_by_input_halves`] cuts a layer's inputs: for the batch's input
    /// columns, so that each thread writes the ones its half of the first layer reads.
    pub fn column_runs(&self, out: MatMut<'_>, work: &(dyn Fn(Range<usize>, MatMut<'_>) + Sync)) {
        let columns = out.cols();
        self.install(|| split_column_runs(self.count, 0..columns, out, work));
    }

    /// Splits `0..items` into one contiguous range per thread, cut at multiples of
    /// `align`, runs `work` on each range, and folds the results in range order with
    /// `combine`. For work made of many independent batches (inference), where each
    /// thread takes whole batches with its own buffers and meets the others once.
    pub fn split_range<R: Send>(
        &self,
        items: usize,
        align: usize,
        work: &(dyn Fn(Range<usize>) -> R + Sync),
        combine: &(dyn Fn(R, R) -> R + Sync),
    ) -> R {
        self.install(|| split_range(self.count, 0..items, align.max(1), work, combine))
    }

    /// `0..items` cut into one contiguous range per thread (fewer when there are fewer
    /// items), as equal as whole items allow, in order.
    pub fn ranges(&self, items: usize) -> Vec<Range<usize>> {
        let parts = self.count.min(items).max(1);
        (0..parts)
            .map(|p| items * p / parts..items * (p + 1) / parts)
            .collect()
    }

    /// Runs `work(i, part)` on every part at once, one thread each (in turn without a
    /// pool): for work the caller has already cut into disjoint pieces, such as the
    /// mutable slices of [`Threads::ranges`].
    pub fn each<T: Send>(&self, parts: Vec<T>, work: &(dyn Fn(usize, T) + Sync)) {
        if self.pool.is_none() || parts.len() <= 1 {
            for (i, part) in parts.into_iter().enumerate() {
                work(i, part);
            }
            return;
        }
        self.install(|| {
            rayon::scope(|scope| {
                for (i, part) in parts.into_iter().enumerate() {
                    scope.spawn(move |_| work(i, part));
                }
            })
        });
    }

    /// `step(z, targets, grad)` (the output step) over the rows of `width` values of
    /// `z`, split by rows, each part whole rows; the parts' statistics are added in row
    /// order.
    pub fn output_step(
        &self,
        z: &[f32],
        targets: &[f32],
        grad: &mut [f32],
        width: usize,
        step: &OutputStep<'_>,
    ) -> OutputStats {
        self.install(|| split_output(self.count, z, targets, grad, width, step))
    }
}

/// Where to cut `rows` so that the first part gets `left` of `parts` shares, aligned.
fn cut(rows: usize, left: usize, parts: usize) -> usize {
    let at = rows * left / parts;
    (at / ROW_ALIGN * ROW_ALIGN).max(ROW_ALIGN.min(rows))
}

fn split_gemm(
    parts: usize,
    alpha: f32,
    a: MatRef<'_>,
    b: MatRef<'_>,
    beta: f32,
    c: MatMut<'_>,
) -> Result<(), GemmError> {
    let rows = c.rows();
    if parts <= 1 || rows < 2 * ROW_ALIGN || a.rows() != rows {
        return gemm(alpha, a, b, beta, c);
    }
    let left = parts / 2;
    let at = cut(rows, left, parts);
    let Some((c_top, c_bottom)) = c.split_rows(at) else {
        unreachable!("row-major outputs split")
    };
    let (a_top, a_bottom) = (a.rows_range(0..at), a.rows_range(at..rows));
    let (top, bottom) = rayon::join(
        || split_gemm(left, alpha, a_top, b, beta, c_top),
        || split_gemm(parts - left, alpha, a_bottom, b, beta, c_bottom),
    );
    top.and(bottom)
}

fn split_columns(
    parts: usize,
    a: MatRef<'_>,
    b: MatRef<'_>,
    c: MatMut<'_>,
) -> Result<(), GemmError> {
    let n = c.cols();
    if parts <= 1 || n < 2 * COLUMN_ALIGN {
        return gemm(1.0, a, b, 0.0, c);
    }
    let left = parts / 2;
    let at = (n * left / parts / COLUMN_ALIGN * COLUMN_ALIGN).max(COLUMN_ALIGN);
    let (c_left, c_right) = c.split_cols(at);
    let (b_left, b_right) = (b.cols_range(0..at), b.cols_range(at..n));
    let (first, second) = rayon::join(
        || split_columns(left, a, b_left, c_left),
        || split_columns(parts - left, a, b_right, c_right),
    );
    first.and(second)
}

/// Runs `epilogue` on `rows` of `out` (`width` values each), split by rows.
fn split_rows_apply(
    parts: usize,
    out: &mut [f32],
    width: usize,
    rows: Range<usize>,
    epilogue: &(dyn Fn(&mut [f32], usize, usize) + Sync),
) {
    let count = rows.len();
    if parts <= 1 || count < 2 * ROW_ALIGN {
        epilogue(out, rows.start, count);
        return;
    }
    let left = parts / 2;
    let at = cut(count, left, parts);
    let (top, bottom) = out.split_at_mut(at * width);
    let middle = rows.start + at;
    rayon::join(
        || split_rows_apply(left, top, width, rows.start..middle, epilogue),
        || split_rows_apply(parts - left, bottom, width, middle..rows.end, epilogue),
    );
}

fn split_product(
    parts: usize,
    input: &[f32],
    weight: MatRef<'_>,
    out: &mut [f32],
    rows: Range<usize>,
    epilogue: &(dyn Fn(&mut [f32], usize, usize) + Sync),
) -> Result<(), GemmError> {
    let (inputs, units) = (weight.rows(), weight.cols());
    let count = rows.len();
    if parts <= 1 || count < 2 * ROW_ALIGN {
        let (input, out) = (&input[..count * inputs], &mut out[..count * units]);
        gemm(
            1.0,
            MatRef::row_major(input, count, inputs)?,
            weight,
            0.0,
            MatMut::row_major(out, count, units)?,
        )?;
        epilogue(out, rows.start, count);
        return Ok(());
    }
    let left = parts / 2;
    let at = cut(count, left, parts);
    let (input_top, input_bottom) = input.split_at(at * inputs);
    let (out_top, out_bottom) = out.split_at_mut(at * units);
    let middle = rows.start + at;
    let (top, bottom) = rayon::join(
        || {
            split_product(
                left,
                input_top,
                weight,
                out_top,
                rows.start..middle,
                epilogue,
            )
        },
        || {
            split_product(
                parts - left,
                input_bottom,
                weight,
                out_bottom,
                middle..rows.end,
                epilogue,
            )
        },
    );
    top.and(bottom)
}

fn split_column_runs(
    parts: usize,
    range: Range<usize>,
    out: MatMut<'_>,
    work: &(dyn Fn(Range<usize>, MatMut<'_>) + Sync),
) {
    let count = range.len();
    if parts <= 1 || count < 2 * ROW_ALIGN {
        return work(range, out);
    }
    let left = parts / 2;
    let at = cut(count, left, parts);
    let (out_left, out_right) = out.split_cols(at);
    let middle = range.start + at;
    rayon::join(
        || split_column_runs(left, range.start..middle, out_left, work),
        || split_column_runs(parts - left, middle..range.end, out_right, work),
    );
}

fn split_range<R: Send>(
    parts: usize,
    range: Range<usize>,
    align: usize,
    work: &(dyn Fn(Range<usize>) -> R + Sync),
    combine: &(dyn Fn(R, R) -> R + Sync),
) -> R {
    if parts <= 1 || range.len() < 2 * align {
        return work(range);
    }
    let left = parts / 2;
    let share = range.len() * left / parts;
    let at = range.start + (share / align * align).max(align);
    let (first, second) = rayon::join(
        || split_range(left, range.start..at, align, work, combine),
        || split_range(parts - left, at..range.end, align, work, combine),
    );
    combine(first, second)
}

fn split_output(
    parts: usize,
    z: &[f32],
    targets: &[f32],
    grad: &mut [f32],
    width: usize,
    step: &OutputStep<'_>,
) -> OutputStats {
    let rows = z.len() / width.max(1);
    if parts <= 1 || rows < 2 * ROW_ALIGN {
        return step(z, targets, grad);
    }
    let left = parts / 2;
    let at = cut(rows, left, parts) * width;
    let (z_top, z_bottom) = z.split_at(at);
    let (x_top, x_bottom) = targets.split_at(at);
    let (g_top, g_bottom) = grad.split_at_mut(at);
    let (mut top, bottom) = rayon::join(
        || split_output(left, z_top, x_top, g_top, width, step),
        || split_output(parts - left, z_bottom, x_bottom, g_bottom, width, step),
    );
    top += bottom;
    top
}

/// `slice` cut into consecutive pieces of `lengths` (which must add up to at most its
/// length), for the threads to own one each.
pub(crate) fn cut_mut<T>(
    mut slice: &mut [T],
    lengths: impl Iterator<Item = usize>,
) -> Vec<&mut [T]> {
    lengths
        .map(|len| {
            let (piece, rest) = std::mem::take(&mut slice).split_at_mut(len);
            slice = rest;
            piece
        })
        .collect()
}

/// `slice` cut into consecutive pieces of `lengths`, as [`cut_mut`] cuts a mutable one.
pub(crate) fn cut_ref<'a, T>(
    mut slice: &'a [T],
    lengths: impl Iterator<Item = usize> + 'a,
) -> impl Iterator<Item = &'a [T]> {
    lengths.map(move |len| {
        let (piece, rest) = slice.split_at(len);
        slice = rest;
        piece
    })
}
