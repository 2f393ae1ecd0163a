//! The GEMM wrapper against a naive triple loop, for the three products of a dense layer,
//! odd strides, and random alpha/beta; its refusal of bad shapes and strides; and that a
//! product writes nothing outside its own window of `C`.

use kernels::gemm::{gemm, reference, GemmError, MatMut, MatRef};
use proptest::prelude::*;

/// How a matrix is laid out in its buffer: row-major or column-major, with padding.
#[derive(Clone, Copy, Debug)]
struct Storage {
    column_major: bool,
    pad: usize,
}

impl Storage {
    fn strides(self, rows: usize, cols: usize) -> (usize, usize) {
        if self.column_major {
            (1, rows + self.pad)
        } else {
            (cols + self.pad, 1)
        }
    }
    fn len(self, rows: usize, cols: usize) -> usize {
        let (rs, cs) = self.strides(rows, cols);
        if rows == 0 || cols == 0 {
            0
        } else {
            (rows - 1) * rs + (cols - 1) * cs + 1
        }
    }
}

fn storage() -> impl Strategy<Value = Storage> {
    (any::<bool>(), 0usize..3).prop_map(|(column_major, pad)| Storage { column_major, pad })
}

#[derive(Clone, Copy, Debug)]
enum Pattern {
    /// Forward: `Z = X W`.
    Plain,
    /// Weight gradient: `dW = X^T dZ` (A stored as k x m).
    TransposeA,
    /// Input gradient: `dX = dZ W^T` (B stored as n x k).
    TransposeB,
}

impl Pattern {
    /// The shapes A and B are stored in for an `m x k` by `k x n` product, before the
    /// transposes the pattern applies.
    fn stored_shapes(self, m: usize, k: usize, n: usize) -> ((usize, usize), (usize, usize)) {
        match self {
            Pattern::Plain => ((m, k), (k, n)),
            Pattern::TransposeA => ((k, m), (k, n)),
            Pattern::TransposeB => ((m, k), (n, k)),
        }
    }

    /// The product's operands from views of the stored A and B.
    fn operands<'a>(self, a: MatRef<'a>, b: MatRef<'a>) -> (MatRef<'a>, MatRef<'a>) {
        match self {
            Pattern::Plain => (a, b),
            Pattern::TransposeA => (a.t(), b),
            Pattern::TransposeB => (a, b.t()),
        }
    }
}

fn values(len: usize) -> impl Strategy<Value = Vec<f32>> {
    proptest::collection::vec(-2.0f32..2.0, len)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn gemm_matches_naive_loop(
        m in 0usize..70, k in 0usize..70, n in 0usize..70,
        pattern in proptest::sample::select(&[Pattern::Plain, Pattern::TransposeA, Pattern::TransposeB][..]),
        (sa, sb, sc) in (storage(), storage(), storage()),
        alpha in prop_oneof![Just(1.0f32), Just(-0.01), -2.0f32..2.0],
        beta in prop_oneof![Just(0.0f32), Just(1.0), -2.0f32..2.0],
        seed in values(3 * 72 * 72),
    ) {
        let (a_shape, b_shape) = pattern.stored_shapes(m, k, n);
        let a_data = seed[..sa.len(a_shape.0, a_shape.1)].to_vec();
        let b_data = seed[5184..5184 + sb.len(b_shape.0, b_shape.1)].to_vec();
        let c_init = seed[2 * 5184..2 * 5184 + sc.len(m, n)].to_vec();
        let view = |data, (r, c): (usize, usize), s: Storage| {
            let (rs, cs) = s.strides(r, c);
            MatRef::new(data, r, c, rs, cs).unwrap()
        };
        let (a, b) = pattern.operands(view(&a_data, a_shape, sa), view(&b_data, b_shape, sb));
        let (rs, cs) = sc.strides(m, n);
        let mut want = c_init.clone();
        reference::gemm(alpha, a, b, beta, MatMut::new(&mut want, m, n, rs, cs).unwrap());
        let mut got = c_init.clone();
        if beta == 0.0 { got.fill(f32::NAN); }
        gemm(alpha, a, b, beta, MatMut::new(&mut got, m, n, rs, cs).unwrap()).unwrap();
        if let Err(e) = within_tolerance(alpha, a, b, beta, &c_init, (rs, cs), &got, &want) {
            prop_assert!(false, "{:?}: {}", pattern, e);
        }
    }
}

/// `len` values in [-1, 1) in a fixed pattern that `salt` shifts.
fn patterned(len: usize, salt: usize) -> Vec<f32> {
    (0..len)
        .map(|i| (((i * 7919 + salt) % 1013) as f32 / 1013.0 - 0.5) * 2.0)
        .collect()
}

/// Patterned A and B of an `m x k` by `k x n` product, stored by rows in the shapes
/// `pattern` gives them.
struct Operands {
    pattern: Pattern,
    a_shape: (usize, usize),
    b_shape: (usize, usize),
    a: Vec<f32>,
    b: Vec<f32>,
}

impl Operands {
    fn new(pattern: Pattern, m: usize, k: usize, n: usize) -> Self {
        let (a_shape, b_shape) = pattern.stored_shapes(m, k, n);
        Self {
            pattern,
            a_shape,
            b_shape,
            a: patterned(a_shape.0 * a_shape.1, 1),
            b: patterned(b_shape.0 * b_shape.1, 2),
        }
    }

    /// The product's operands, `m x k` and `k x n`.
    fn views(&self) -> (MatRef<'_>, MatRef<'_>) {
        let a = MatRef::row_major(&self.a, self.a_shape.0, self.a_shape.1).unwrap();
        let b = MatRef::row_major(&self.b, self.b_shape.0, self.b_shape.1).unwrap();
        self.pattern.operands(a, b)
    }
}

/// `alpha A B + beta C` by the f64 reference, `C` starting as `c_init` stored with
/// strides `(rs, cs)`.
fn reference_product(
    alpha: f32,
    a: MatRef<'_>,
    b: MatRef<'_>,
    beta: f32,
    c_init: &[f32],
    (rs, cs): (usize, usize),
) -> Vec<f32> {
    let mut c = c_init.to_vec();
    let out = MatMut::new(&mut c, a.rows(), b.cols(), rs, cs).unwrap();
    reference::gemm(alpha, a, b, beta, out);
    c
}

/// The same product by `gemm` pinned to `arch`; where `beta` is zero `C` starts as NaN,
/// so a kernel that reads it shows.
fn gemm_on(
    arch: kernels::isa::Arch,
    alpha: f32,
    a: MatRef<'_>,
    b: MatRef<'_>,
    beta: f32,
    c_init: &[f32],
    (rs, cs): (usize, usize),
) -> Vec<f32> {
    let mut c = c_init.to_vec();
    if beta == 0.0 {
        c.fill(f32::NAN);
    }
    let out = MatMut::new(&mut c, a.rows(), b.cols(), rs, cs).unwrap();
    kernels::isa::with_arch(arch, || gemm(alpha, a, b, beta, out)).unwrap();
    c
}

/// Every element of `got` within f32 rounding of `want`, relative to the magnitude of
/// the terms that were summed.
#[allow(clippy::too_many_arguments)]
fn within_tolerance(
    alpha: f32,
    a: MatRef<'_>,
    b: MatRef<'_>,
    beta: f32,
    c_init: &[f32],
    (rs, cs): (usize, usize),
    got: &[f32],
    want: &[f32],
) -> Result<(), String> {
    for i in 0..a.rows() {
        for j in 0..b.cols() {
            let idx = i * rs + j * cs;
            let magnitude: f32 = (0..a.cols())
                .map(|p| (a.get(i, p) * b.get(p, j)).abs())
                .sum::<f32>()
                * alpha.abs()
                + (beta * c_init[idx]).abs();
            if (got[idx] - want[idx]).abs() > 1e-5 * magnitude + 1e-30 || got[idx].is_nan() {
                return Err(format!("({i},{j}): got {}, want {}", got[idx], want[idx]));
            }
        }
    }
    Ok(())
}

/// The eleven products of a training step of the reference model (784-100-300-100-784,
/// batch 32) and a wider, deeper one agree with the f64 loop.
#[test]
fn the_products_of_a_training_step_match_the_naive_loop() {
    let widths = [784, 100, 300, 100, 784];
    let mut shapes = vec![];
    for l in 0..4 {
        let (fan_in, fan_out) = (widths[l], widths[l + 1]);
        shapes.push((Pattern::Plain, 32, fan_in, fan_out));
        shapes.push((Pattern::TransposeA, fan_in, 32, fan_out));
        if l > 0 {
            shapes.push((Pattern::TransposeB, 32, fan_out, fan_in));
        }
    }
    shapes.push((Pattern::Plain, 37, 1200, 401));
    for (pattern, m, k, n) in shapes {
        let operands = Operands::new(pattern, m, k, n);
        let (a, b) = operands.views();
        let c_init = patterned(m * n, 3);
        let (alpha, beta) = (-0.01, 1.0);
        let mut want = c_init.clone();
        reference::gemm(
            alpha,
            a,
            b,
            beta,
            MatMut::row_major(&mut want, m, n).unwrap(),
        );
        let mut got = c_init.clone();
        gemm(
            alpha,
            a,
            b,
            beta,
            MatMut::row_major(&mut got, m, n).unwrap(),
        )
        .unwrap();
        within_tolerance(alpha, a, b, beta, &c_init, (n, 1), &got, &want)
            .unwrap_or_else(|e| panic!("{pattern:?} {m}x{k}x{n}: {e}"));
    }
}

/// Every instruction set's code path against the f64 loop, at the sizes where the
/// register tiles change shape: row counts around the six-row tile and AVX-512's
/// eight-row one (where `A`'s rows lie apart: 7 is one tile, 13 two of 7 and 6, 16 two
/// of 8), column counts around
/// one and two vectors (of every width), ragged edges of up to 8 columns past two 16-lane
/// vectors (33, 40, 100: AVX-512 runs them on an AVX2 register) and of 9 (41, on a
/// 16-lane one), depths around a block of `k`, all three layouts
/// of a dense layer's products, and `C` stored by rows or by columns.
#[test]
fn every_instruction_set_matches_the_naive_loop_at_tile_and_block_edges() {
    let mut checked = 0;
    for arch in kernels::isa::available() {
        for m in [1, 5, 7, 8, 13, 16, 32, 64] {
            for n in [1, 9, 16, 17, 33, 40, 41, 100] {
                for k in [1, 3, 128, 129, 1030] {
                    for pattern in [Pattern::Plain, Pattern::TransposeA, Pattern::TransposeB] {
                        for (c_column_major, alpha, beta) in [(false, -0.5, 1.0), (true, 1.5, 0.0)]
                        {
                            let operands = Operands::new(pattern, m, k, n);
                            let (a, b) = operands.views();
                            let c_init = patterned(m * n, 3);
                            let (rs, cs) = if c_column_major { (1, m) } else { (n, 1) };
                            let want = reference_product(alpha, a, b, beta, &c_init, (rs, cs));
                            let got = gemm_on(arch, alpha, a, b, beta, &c_init, (rs, cs));
                            within_tolerance(alpha, a, b, beta, &c_init, (rs, cs), &got, &want)
                                .unwrap_or_else(|e| {
                                    panic!(
                                        "{}: {pattern:?} {m}x{k}x{n}, C by {}: {e}",
                                        kernels::isa::name(arch),
                                        if c_column_major { "columns" } else { "rows" }
                                    )
                                });
                            checked += 1;
                        }
                    }
                }
            }
        }
    }
    assert!(
        checked >= 2 * 8 * 8 * 5 * 3 * 2,
        "only {checked} products checked"
    );
}

/// Products past the tiled kernel's reach (more than 64 deep, and taller than
/// `TILED_MAX_ROWS` or wider than `TILED_MAX_COLUMNS`) on every instruction set: the
/// packed kernel with AVX2 and AVX-512, `matrixmultiply` otherwise. The shapes cross the
/// packed kernel's six-row tiles, its panels of two or four vectors, its blocks of 512
/// steps of `k`, its blocks of rows of `A` (510 rows at 512 steps) and its blocks of 4096
/// columns of `B`. The SIMD instruction sets agree to the bit, as they do on the tiled
/// kernel's products: each element is the same chain of FMAs over the same blocks.
#[test]
fn large_products_match_the_naive_loop_at_block_edges_on_every_instruction_set() {
    let arches = kernels::isa::available();
    let mut checked = 0;
    let mut compared = 0;
    for (m, k, n) in [
        (1031, 513, 70),
        (65, 70, 4166),
        (70, 1030, 801),
        (1100, 65, 5),
    ] {
        for (pattern, c_column_major, alpha, beta) in [
            (Pattern::Plain, false, 1.0, 0.0),
            (Pattern::TransposeA, true, -0.5, 1.0),
            (Pattern::TransposeB, false, 1.5, -0.25),
        ] {
            let operands = Operands::new(pattern, m, k, n);
            let (a, b) = operands.views();
            let c_init = patterned(m * n, 3);
            let (rs, cs) = if c_column_major { (1, m) } else { (n, 1) };
            let want = reference_product(alpha, a, b, beta, &c_init, (rs, cs));
            let mut simd_bits: Option<(kernels::isa::Arch, Vec<u32>)> = None;
            for &arch in &arches {
                let got = gemm_on(arch, alpha, a, b, beta, &c_init, (rs, cs));
                let context = format!("{}: {pattern:?} {m}x{k}x{n}", kernels::isa::name(arch));
                within_tolerance(alpha, a, b, beta, &c_init, (rs, cs), &got, &want)
                    .unwrap_or_else(|e| panic!("{context}: {e}"));
                checked += 1;
                if matches!(arch, kernels::isa::Arch::Scalar) {
                    continue;
                }
                let bits: Vec<u32> = got.iter().map(|v| v.to_bits()).collect();
                match &simd_bits {
                    None => simd_bits = Some((arch, bits)),
                    Some((first, first_bits)) => {
                        assert!(
                            bits == *first_bits,
                            "{context}: differs from {}",
                            kernels::isa::name(*first)
                        );
                        compared += 1;
                    }
                }
            }
        }
    }
    assert!(
        checked >= 4 * 3 * arches.len(),
        "only {checked} products checked"
    );
    if arches.len() > 2 {
        assert!(compared >= 12, "only {compared} comparisons");
    }
}

/// A product large enough for the packed kernel, split between two threads by rows or by
/// columns at places that cut its tiles and panels, computes the whole product's bits on
/// every instruction set: the team's split of the encoder's product relies on it.
#[test]
fn splits_of_a_large_product_between_threads_compute_the_same_bits() {
    let (m, k, n) = (1100, 130, 900);
    let operands = Operands::new(Pattern::TransposeB, m, k, n);
    let (a, b) = operands.views();
    for arch in kernels::isa::available() {
        let name = kernels::isa::name(arch);
        let mut whole = patterned(m * n, 5);
        kernels::isa::with_arch(arch, || {
            gemm(0.5, a, b, 1.0, MatMut::row_major(&mut whole, m, n).unwrap())
        })
        .unwrap();
        let run = |c: MatMut<'_>, a: MatRef<'_>, b: MatRef<'_>| {
            kernels::isa::with_arch(arch, || gemm(0.5, a, b, 1.0, c)).unwrap()
        };
        let mut by_rows = patterned(m * n, 5);
        let (top, bottom) = MatMut::row_major(&mut by_rows, m, n)
            .unwrap()
            .split_rows(517)
            .unwrap();
        std::thread::scope(|s| {
            s.spawn(|| run(top, a.rows_range(0..517), b));
            s.spawn(|| run(bottom, a.rows_range(517..m), b));
        });
        assert!(whole == by_rows, "{name}: rows split at 517 differ");
        let mut by_columns = patterned(m * n, 5);
        let (left, right) = MatMut::row_major(&mut by_columns, m, n)
            .unwrap()
            .split_cols(450);
        std::thread::scope(|s| {
            s.spawn(|| run(left, a, b.cols_range(0..450)));
            s.spawn(|| run(right, a, b.cols_range(450..n)));
        });
        assert!(whole == by_columns, "{name}: columns split at 450 differ");
    }
}

#[test]
fn non_finite_inputs_propagate() {
    for (position, value) in [(5, f32::NAN), (40, f32::INFINITY)] {
        let (m, k, n) = (7, 9, 37);
        let mut a = vec![0.5f32; m * k];
        a[position] = value;
        let b = vec![1.0f32; k * n];
        let mut c = vec![0.0f32; m * n];
        gemm(
            1.0,
            MatRef::row_major(&a, m, k).unwrap(),
            MatRef::row_major(&b, k, n).unwrap(),
            0.0,
            MatMut::row_major(&mut c, m, n).unwrap(),
        )
        .unwrap();
        let row = position / k;
        for (j, &v) in c[row * n..(row + 1) * n].iter().enumerate() {
            assert!(
                !v.is_finite() && (v.is_nan() == value.is_nan()),
                "({row},{j}) is {v}"
            );
        }
        assert!(c[..row * n].iter().all(|v| *v == 4.5));
    }
}

#[test]
fn mismatched_shapes_are_an_error_and_leave_c_untouched() {
    let a = [1.0; 6];
    let b = [1.0; 6];
    let mut c = [7.0; 4];
    let err = gemm(
        1.0,
        MatRef::row_major(&a, 2, 3).unwrap(),
        MatRef::row_major(&b, 2, 3).unwrap(),
        0.0,
        MatMut::row_major(&mut c, 2, 2).unwrap(),
    )
    .unwrap_err();
    assert!(matches!(err, GemmError::ShapeMismatch { .. }), "{err}");
    assert_eq!(c, [7.0; 4]);
}

#[test]
fn views_past_the_end_or_with_overflowing_strides_are_refused() {
    let data = [0.0f32; 10];
    assert!(matches!(
        MatRef::row_major(&data, 3, 4),
        Err(GemmError::OutOfBounds { .. })
    ));
    assert!(matches!(
        MatRef::new(&data, 2, 2, usize::MAX, 1),
        Err(GemmError::OutOfBounds { .. })
    ));
    assert!(MatRef::new(&data, 1, 10, 0, 1).is_ok());
    assert!(MatRef::new(&data, 0, 1000, 1000, 1).is_ok());
}

#[test]
fn aliasing_output_views_are_refused() {
    let mut data = [0.0f32; 16];
    assert!(matches!(
        MatMut::new(&mut data, 2, 2, 0, 1),
        Err(GemmError::AliasedOutput { .. })
    ));
    assert!(matches!(
        MatMut::new(&mut data, 3, 3, 2, 1),
        Err(GemmError::AliasedOutput { .. })
    ));
    assert!(MatMut::new(&mut data, 3, 3, 1, 3).is_ok());
    // A read-only view may broadcast a row.
    assert!(MatRef::new(&data, 3, 3, 0, 1).is_ok());
}

#[test]
fn empty_inner_dimension_scales_c_by_beta() {
    let mut c = [2.0f32, 4.0];
    gemm(
        1.0,
        MatRef::row_major(&[], 2, 0).unwrap(),
        MatRef::row_major(&[], 0, 1).unwrap(),
        0.5,
        MatMut::row_major(&mut c, 2, 1).unwrap(),
    )
    .unwrap();
    assert_eq!(c, [1.0, 2.0]);
}

#[test]
fn row_splits_are_disjoint_and_compute_the_same_product() {
    let (m, k, n) = (19, 6, 5);
    let a: Vec<f32> = (0..m * k).map(|i| i as f32 * 0.01).collect();
    let b: Vec<f32> = (0..k * n).map(|i| 1.0 - i as f32 * 0.02).collect();
    let av = MatRef::row_major(&a, m, k).unwrap();
    let bv = MatRef::row_major(&b, k, n).unwrap();
    let mut whole = vec![0.0; m * n];
    gemm(
        1.0,
        av,
        bv,
        0.0,
        MatMut::row_major(&mut whole, m, n).unwrap(),
    )
    .unwrap();
    let mut parts = vec![0.0; m * n];
    let (top, bottom) = MatMut::row_major(&mut parts, m, n)
        .unwrap()
        .split_rows(8)
        .unwrap();
    assert_eq!((top.rows(), bottom.rows()), (8, 11));
    gemm(1.0, av.rows_range(0..8), bv, 0.0, top).unwrap();
    gemm(1.0, av.rows_range(8..m), bv, 0.0, bottom).unwrap();
    assert_eq!(whole, parts);
    // A column-major output's rows interleave in memory: no split.
    let mut data = vec![0.0; m * n];
    assert!(MatMut::new(&mut data, m, n, 1, m)
        .unwrap()
        .split_rows(3)
        .is_none());
}

#[test]
fn column_splits_written_from_two_threads_compute_the_same_product() {
    for (m, k, n, at) in [
        (32, 100, 784, 392),
        (7, 5, 9, 4),
        (3, 4, 6, 0),
        (3, 4, 6, 6),
    ] {
        let a: Vec<f32> = (0..m * k).map(|i| (i % 13) as f32 * 0.1 - 0.6).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i % 7) as f32 * 0.2 - 0.5).collect();
        let av = MatRef::row_major(&a, m, k).unwrap();
        let bv = MatRef::row_major(&b, k, n).unwrap();
        let mut whole = vec![0.5; m * n];
        gemm(
            1.0,
            av,
            bv,
            1.0,
            MatMut::row_major(&mut whole, m, n).unwrap(),
        )
        .unwrap();
        let mut parts = vec![0.5; m * n];
        let (left, right) = MatMut::row_major(&mut parts, m, n).unwrap().split_cols(at);
        assert_eq!((left.cols(), right.cols()), (at, n - at));
        std::thread::scope(|s| {
            s.spawn(|| gemm(1.0, av, bv.cols_range(0..at), 1.0, left).unwrap());
            s.spawn(|| gemm(1.0, av, bv.cols_range(at..n), 1.0, right).unwrap());
        });
        assert_eq!(whole, parts, "{m}x{k}x{n} split at {at}");
    }
    // The columns of a transposed (column-major) view are contiguous runs.
    let mut data = vec![0.0; 12];
    let (left, right) = MatMut::new(&mut data, 3, 4, 1, 3).unwrap().split_cols(1);
    let ones = [1.0f32; 12];
    let row = |cols| MatRef::row_major(&ones[..cols], 1, cols).unwrap();
    let column = MatRef::row_major(&ones[..3], 3, 1).unwrap();
    gemm(1.0, column, row(1), 0.0, left).unwrap();
    gemm(2.0, column, row(3), 0.0, right).unwrap();
    assert_eq!(
        data,
        [1.0, 1.0, 1.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0]
    );
}

#[test]
fn rows_of_split_column_views_are_disjoint_slices_and_reborrows_write_through() {
    let (m, n, at) = (3, 7, 3);
    let mut data: Vec<f32> = (0..m * n).map(|i| i as f32).collect();
    let (mut left, mut right) = MatMut::row_major(&mut data, m, n).unwrap().split_cols(at);
    std::thread::scope(|s| {
        s.spawn(|| {
            for i in 0..m {
                let row = left.row_mut(i).unwrap();
                assert_eq!(row.len(), at);
                row.iter_mut().for_each(|x| *x = -*x);
            }
        });
        s.spawn(|| {
            for i in 0..m {
                let row = right.row_mut(i).unwrap();
                assert_eq!(row.len(), n - at);
                assert_eq!(row[0], (i * n + at) as f32);
                row.iter_mut().for_each(|x| *x += 100.0);
            }
        });
    });
    for (i, &x) in data.iter().enumerate() {
        let expected = if i % n < at {
            -(i as f32)
        } else {
            i as f32 + 100.0
        };
        assert_eq!(x, expected, "element {i}");
    }

    // A view used by `gemm` through a reborrow is still usable afterwards.
    let mut c = vec![0.0f32; 4];
    let mut view = MatMut::row_major(&mut c, 2, 2).unwrap();
    let ones = [1.0f32; 4];
    let one = MatRef::row_major(&ones, 2, 2).unwrap();
    gemm(1.0, one, one, 0.0, view.reborrow()).unwrap();
    view.row_mut(1).unwrap()[0] = 5.0;
    assert_eq!(c, [2.0, 2.0, 5.0, 2.0]);

    // Rows of a column-major view are not adjacent: no slice.
    let mut data = vec![0.0f32; 6];
    let mut column_major = MatMut::new(&mut data, 2, 3, 1, 2).unwrap();
    assert!(column_major.row_mut(0).is_none());
}

/// The register-tiled products give the same bits whichever instruction set runs them
/// and whichever way round they run (a ragged-width product may run transposed on some
/// instruction sets and not on others), and whatever register width a ragged edge takes
/// (AVX-512 runs an edge of up to 8 columns on an AVX2 register, or transposed, its
/// columns as a tile's rows): every element is the same chain of FMAs over the same
/// blocks of `k`. Thread splits rely on it.
#[test]
fn every_instruction_set_computes_the_same_bits() {
    let arches = kernels::isa::available();
    let mut compared = 0;
    for (m, k, n) in [
        (32, 392, 100),
        (32, 784, 100),
        (32, 152, 100),
        (16, 300, 100),
        (64, 129, 17),
        (32, 100, 152),
        (392, 32, 100),
        (32, 129, 40),
        (32, 129, 41),
        (32, 100, 392),
        (100, 32, 392),
        (152, 32, 100),
        (40, 129, 36),
    ] {
        for pattern in [Pattern::Plain, Pattern::TransposeA, Pattern::TransposeB] {
            for (alpha, beta) in [(1.0, 0.0), (-0.01, 1.0), (0.5, -1.5)] {
                let operands = Operands::new(pattern, m, k, n);
                let (a, b) = operands.views();
                let run = |arch| {
                    let mut c = patterned(m * n, 3);
                    kernels::isa::with_arch(arch, || {
                        gemm(alpha, a, b, beta, MatMut::row_major(&mut c, m, n).unwrap())
                    })
                    .unwrap();
                    c.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
                };
                let first = run(arches[0]);
                for &arch in &arches[1..] {
                    assert!(
                        run(arch) == first,
                        "{} and {} differ: {pattern:?} {m}x{k}x{n}, alpha {alpha}, beta {beta}",
                        kernels::isa::name(arches[0]),
                        kernels::isa::name(arch)
                    );
                    compared += 1;
                }
            }
        }
    }
    if arches.len() > 1 {
        assert!(compared >= 117, "only {compared} comparisons");
    } else {
        eprintln!("only the scalar instruction set runs here: nothing to compare");
    }
}

/// A window of a larger matrix: rows `rows` and columns `cols` of a `size.0 x size.1`
/// buffer stored by rows or by columns, cut out as threads take their parts: columns by
/// [`MatMut::split_cols`], rows by the same through the transpose.
fn window(
    buffer: &mut [f32],
    size: (usize, usize),
    column_major: bool,
    rows: std::ops::Range<usize>,
    cols: std::ops::Range<usize>,
) -> MatMut<'_> {
    let whole = if column_major {
        MatMut::new(buffer, size.0, size.1, 1, size.0)
    } else {
        MatMut::row_major(buffer, size.0, size.1)
    }
    .unwrap();
    let (_, right) = whole.split_cols(cols.start);
    let (columns, _) = right.split_cols(cols.len());
    let (_, lower) = columns.t().split_cols(rows.start);
    let (view, _) = lower.split_cols(rows.len());
    view.t()
}

/// A product never writes outside its own columns and rows of `C` (callers split `C` by
/// columns and run the parts on different threads): `C` a window of a larger buffer whose
/// other elements hold a NaN of a payload no arithmetic makes, at widths and heights that
/// hit the register tiles' ragged edges, one vector, two, and whole vectors after them
/// (widths 1, 7, 17, 100, 300; rows 1, 5, 32), on every instruction set; and in products
/// too large for the tiled kernel (more than `TILED_MAX_ROWS` rows, or wider than
/// `TILED_MAX_COLUMNS`, both more than 64 deep). Every element outside the window keeps
/// its bits; the window holds the product.
#[test]
fn products_write_only_their_own_columns_and_rows_of_c() {
    use kernels::gemm::{TILED_MAX_COLUMNS, TILED_MAX_ROWS};
    const SENTINEL: u32 = 0x7fa5_5a5a;
    // Margins: rows above and below, columns left and right, none of them a whole vector.
    let (above, below, left, right) = (2, 3, 3, 5);
    let mut tiled_shapes = vec![];
    for m in [1, 5, 32] {
        for n in [1, 7, 17, 100, 300] {
            for k in [3, 129] {
                tiled_shapes.push((m, k, n));
            }
        }
    }
    // `gemm` hands a product to its packed kernel when it is more than 64 rows tall and
    // 64 deep, and has more than `TILED_MAX_ROWS` rows or more than `TILED_MAX_COLUMNS`
    // columns.
    let mut large_shapes: Vec<_> = [1, 7, 17, 100, 300]
        .into_iter()
        .map(|n| (TILED_MAX_ROWS + 1, 65, n))
        .collect();
    large_shapes.push((65, 65, TILED_MAX_COLUMNS + 1));
    let all_arches = kernels::isa::available();
    let mut checked = 0;
    for (shapes, arches) in [
        (tiled_shapes, all_arches.clone()),
        (large_shapes, all_arches),
    ] {
        for (m, k, n) in shapes {
            let size = (above + m + below, left + n + right);
            for pattern in [Pattern::Plain, Pattern::TransposeA, Pattern::TransposeB] {
                let operands = Operands::new(pattern, m, k, n);
                let (a, b) = operands.views();
                for column_major in [false, true] {
                    let (rs, cs) = if column_major {
                        (1, size.0)
                    } else {
                        (size.1, 1)
                    };
                    let inside = |idx: usize| {
                        let (i, j) = if column_major {
                            (idx % size.0, idx / size.0)
                        } else {
                            (idx / size.1, idx % size.1)
                        };
                        (above..above + m).contains(&i) && (left..left + n).contains(&j)
                    };
                    let offset = above * rs + left * cs;
                    for (alpha, beta) in [(1.5, 0.0), (-0.5, 1.0)] {
                        let mut c_init = vec![f32::from_bits(SENTINEL); size.0 * size.1];
                        if beta != 0.0 {
                            let values = patterned(c_init.len(), 3);
                            for (idx, (slot, v)) in c_init.iter_mut().zip(values).enumerate() {
                                if inside(idx) {
                                    *slot = v;
                                }
                            }
                        }
                        let mut want = c_init.clone();
                        reference::gemm(
                            alpha,
                            a,
                            b,
                            beta,
                            window(
                                &mut want,
                                size,
                                column_major,
                                above..above + m,
                                left..left + n,
                            ),
                        );
                        for &arch in &arches {
                            let mut got = c_init.clone();
                            kernels::isa::with_arch(arch, || {
                                let c = window(
                                    &mut got,
                                    size,
                                    column_major,
                                    above..above + m,
                                    left..left + n,
                                );
                                gemm(alpha, a, b, beta, c)
                            })
                            .unwrap();
                            let what = || {
                                format!(
                                    "{}: {pattern:?} {m}x{k}x{n}, C by {} in a {}x{} buffer, beta {beta}",
                                    kernels::isa::name(arch),
                                    if column_major { "columns" } else { "rows" },
                                    size.0,
                                    size.1
                                )
                            };
                            for (idx, &v) in got.iter().enumerate() {
                                if !inside(idx) {
                                    assert!(
                                        v.to_bits() == SENTINEL,
                                        "{}: element {idx} outside C was written ({v:e})",
                                        what()
                                    );
                                }
                            }
                            within_tolerance(
                                alpha,
                                a,
                                b,
                                beta,
                                &c_init[offset..],
                                (rs, cs),
                                &got[offset..],
                                &want[offset..],
                            )
                            .unwrap_or_else(|e| panic!("{}: {e}", what()));
                            checked += 1;
                        }
                    }
                }
            }
        }
    }
    let arches = kernels::isa::available().len();
    assert_eq!(checked, (30 + 6) * arches * 3 * 2 * 2);
}

/// Each kernel forced by `with_kernel` runs a product of any shape, and computes it: at a
/// shape `gemm` gives the tiled kernel (70 x 600 x 90) and one it gives the packed kernel
/// or `matrixmultiply` (1100 x 70 x 900), each of the three, on every instruction set,
/// is within rounding of the f64 loop. That the choice takes effect shows in the bits:
/// the three sum a 600-step product in different blocks of `k` (128, 512 and
/// `matrixmultiply`'s own), so no two agree on every element. `kernel_for` reports the
/// forced kernel, and the usual one again after `with_kernel` returns.
#[test]
fn every_kernel_can_be_forced_and_computes_the_product() {
    use kernels::gemm::{kernel_for, with_kernel, Kernel};
    let kernels = [Kernel::Tiled, Kernel::Packed, Kernel::Matrixmultiply];
    for arch in kernels::isa::available() {
        for (m, k, n) in [(70, 600, 90), (1100, 70, 900)] {
            let operands = Operands::new(Pattern::Plain, m, k, n);
            let (a, b) = operands.views();
            let c_init = patterned(m * n, 3);
            let strides = (n, 1);
            let want = reference_product(-0.5, a, b, 1.0, &c_init, strides);
            let usual = kernels::isa::with_arch(arch, || kernel_for(m, k, n));
            let mut results = Vec::new();
            for kernel in kernels {
                let got = with_kernel(kernel, || {
                    assert_eq!(
                        kernels::isa::with_arch(arch, || kernel_for(m, k, n)),
                        kernel
                    );
                    gemm_on(arch, -0.5, a, b, 1.0, &c_init, strides)
                });
                within_tolerance(-0.5, a, b, 1.0, &c_init, strides, &got, &want).unwrap_or_else(
                    |e| {
                        panic!(
                            "{kernel:?} on {}, {m}x{k}x{n}: {e}",
                            kernels::isa::name(arch)
                        )
                    },
                );
                results.push(got.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
            }
            assert_eq!(kernels::isa::with_arch(arch, || kernel_for(m, k, n)), usual);
            if k == 600 {
                for i in 0..kernels.len() {
                    for j in i + 1..kernels.len() {
                        assert!(
                            results[i] != results[j],
                            "{:?} and {:?} gave the same bits on {}: the choice did not take",
                            kernels[i],
                            kernels[j],
                            kernels::isa::name(arch)
                        );
                    }
                }
            }
        }
    }
    assert_eq!(kernel_for(70, 600, 90), Kernel::Tiled);
}
