//! Gather, reductions and optimizer updates against their scalar references.

use crate::common::*;
use kernels::isa;
use kernels::{gather, optim, reduce};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn gather_matches_reference_exactly(
        row_len in 0usize..900,
        source_rows in 1usize..20,
        picks in proptest::collection::vec(0usize..1000, 0..40),
        bytes in proptest::collection::vec(any::<u8>(), 900 * 20),
        scale in proptest::sample::select(&[1.0f32 / 255.0, 1.0, -0.5][..]),
    ) {
        let source = &bytes[..row_len * source_rows];
        let rows: Vec<usize> = picks.iter().map(|p| p % source_rows).collect();
        let mut want = vec![0.0; rows.len() * row_len];
        gather::reference::gather_u8_rows(source, row_len, &rows, scale, &mut want);
        for arch in arches() {
            let mut got = vec![f32::NAN; want.len()];
            isa::with_arch(arch, || gather::gather_u8_rows(source, row_len, &rows, scale, &mut got));
            prop_assert_eq!(&got, &want, "{}", isa::name(arch));
        }
    }

    #[test]
    fn column_sums_match_reference(
        (layout, m) in matrix(40, 900, bounded_f32().prop_map(|v| v.clamp(-1e6, 1e6))),
        out_seed in proptest::collection::vec(-1e3f32..1e3, 900),
        alpha in proptest::sample::select(&[1.0f32, -0.01, 0.5][..]),
        beta in proptest::sample::select(&[0.0f32, 1.0, 0.9][..]),
    ) {
        let initial = out_seed[..layout.cols].to_vec();
        let mut want = initial.clone();
        reduce::reference::column_sums(layout, &m, alpha, beta, &mut want);
        for arch in arches() {
            let mut got = initial.clone();
            if beta == 0.0 { got.fill(f32::NAN); }
            isa::with_arch(arch, || reduce::column_sums(layout, &m, alpha, beta, &mut got));
            for j in 0..layout.cols {
                let magnitude: f32 = (0..layout.rows).map(|i| m[i * layout.row_stride + j].abs()).sum::<f32>() * alpha.abs()
                    + (beta * initial[j]).abs();
                prop_assert!((got[j] - want[j]).abs() <= 1e-5 * magnitude + 1e-30,
                    "{} column {}: got {:e}, want {:e}", isa::name(arch), j, got[j], want[j]);
            }
        }
    }

    /// The bias gradient's bits are part of every model's: each column is its own chain
    /// of FMAs down the rows, in order, however the kernel walks the matrix.
    #[test]
    fn column_sums_are_each_column_s_chain_of_fmas_down_the_rows(
        (layout, m) in matrix(70, 900, bounded_f32().prop_map(|v| v.clamp(-1e6, 1e6))),
        out_seed in proptest::collection::vec(-1e3f32..1e3, 900),
        alpha in proptest::sample::select(&[1.0f32, -0.01, 0.5][..]),
        beta in proptest::sample::select(&[0.0f32, 1.0, 0.9][..]),
    ) {
        let initial = out_seed[..layout.cols].to_vec();
        let want: Vec<f32> = (0..layout.cols)
            .map(|j| {
                let start = if beta == 0.0 {
                    0.0
                } else if beta == 1.0 {
                    initial[j]
                } else {
                    initial[j] * beta
                };
                (0..layout.rows).fold(start, |o, i| alpha.mul_add(m[i * layout.row_stride + j], o))
            })
            .collect();
        for arch in arches() {
            let mut got = initial.clone();
            isa::with_arch(arch, || reduce::column_sums(layout, &m, alpha, beta, &mut got));
            for j in 0..layout.cols {
                prop_assert_eq!(got[j].to_bits(), want[j].to_bits(),
                    "{} column {} of {}x{}: got {:e}, want {:e}", isa::name(arch), j, layout.rows, layout.cols, got[j], want[j]);
            }
        }
    }

    #[test]
    fn sum_matches_reference(x in proptest::collection::vec(bounded_f32(), 0..5000)) {
        let want = reduce::reference::sum(&x);
        let magnitude: f64 = x.iter().map(|v| f64::from(v.abs())).sum();
        for arch in arches() {
            let got = isa::with_arch(arch, || reduce::sum(&x));
            prop_assert!((got - want).abs() <= 1e-6 * magnitude, "{}: {} vs {}", isa::name(arch), got, want);
        }
    }

    #[test]
    fn scaled_add_matches_reference(
        pairs in proptest::collection::vec((-1e3f32..1e3, -1e3f32..1e3), 0..3000),
        alpha in -2.0f32..2.0,
    ) {
        let x: Vec<f32> = pairs.iter().map(|p| p.0).collect();
        let y: Vec<f32> = pairs.iter().map(|p| p.1).collect();
        let mut want = y.clone();
        reduce::reference::scaled_add(alpha, &x, &mut want);
        for arch in arches() {
            let mut got = y.clone();
            isa::with_arch(arch, || reduce::scaled_add(alpha, &x, &mut got));
            assert_close(&got, &want, 1e-4, 1e-6, isa::name(arch));
        }
    }

    #[test]
    fn momentum_matches_reference(
        triples in proptest::collection::vec((-10.0f32..10.0, -1.0f32..1.0, -5.0f32..5.0), 0..2000),
        lr in 1e-4f32..1.0,
        momentum in 0.0f32..0.99,
        nesterov in any::<bool>(),
    ) {
        let step = optim::MomentumStep { lr, momentum, nesterov };
        let g: Vec<f32> = triples.iter().map(|t| t.0).collect();
        let v: Vec<f32> = triples.iter().map(|t| t.1).collect();
        let w: Vec<f32> = triples.iter().map(|t| t.2).collect();
        let (mut want_v, mut want_w) = (v.clone(), w.clone());
        optim::reference::momentum_update(step, &g, &mut want_v, &mut want_w);
        for arch in arches() {
            let (mut got_v, mut got_w) = (v.clone(), w.clone());
            isa::with_arch(arch, || optim::momentum_update(step, &g, &mut got_v, &mut got_w));
            assert_close(&got_v, &want_v, 1e-5, 1e-5, "velocity");
            assert_close(&got_w, &want_w, 1e-5, 1e-5, "param");
        }
    }

    #[test]
    fn adam_matches_reference(
        quads in proptest::collection::vec((-10.0f32..10.0, -1.0f32..1.0, 0.0f32..4.0, -5.0f32..5.0), 0..2000),
        lr in 1e-4f32..0.1,
        t in 1u64..10_000,
    ) {
        let step = optim::AdamStep::new(lr, 0.9, 0.999, 1e-7, t);
        let g: Vec<f32> = quads.iter().map(|q| q.0).collect();
        let m: Vec<f32> = quads.iter().map(|q| q.1).collect();
        let v: Vec<f32> = quads.iter().map(|q| q.2).collect();
        let w: Vec<f32> = quads.iter().map(|q| q.3).collect();
        let (mut want_m, mut want_v, mut want_w) = (m.clone(), v.clone(), w.clone());
        optim::reference::adam_update(step, &g, &mut want_m, &mut want_v, &mut want_w);
        for arch in arches() {
            let (mut got_m, mut got_v, mut got_w) = (m.clone(), v.clone(), w.clone());
            isa::with_arch(arch, || optim::adam_update(step, &g, &mut got_m, &mut got_v, &mut got_w));
            assert_close(&got_m, &want_m, 1e-6, 1e-5, "m");
            assert_close(&got_v, &want_v, 1e-6, 1e-5, "v");
            assert_close(&got_w, &want_w, 1e-5, 1e-5, "param");
        }
    }
}

#[test]
#[should_panic(expected = "out of range")]
fn gather_of_a_row_past_the_end_panics_with_a_message() {
    let mut out = [0.0; 4];
    gather::gather_u8_rows(&[1, 2, 3, 4, 5, 6, 7, 8], 4, &[2], 1.0, &mut out);
}

#[test]
fn adam_bias_correction_matches_keras_first_step() {
    // At t = 1, alpha = lr * sqrt(1 - b2) / (1 - b1) and the first step is lr * sign(g).
    let step = optim::AdamStep::new(0.001, 0.9, 0.999, 1e-7, 1);
    let (mut m, mut v, mut w) = ([0.0f32; 3], [0.0f32; 3], [1.0f32; 3]);
    optim::adam_update(step, &[0.5, -2.0, 0.1], &mut m, &mut v, &mut w);
    for (got, want) in w.iter().zip([0.999, 1.001, 0.999]) {
        assert!((got - want).abs() < 1e-6, "{got} vs {want}");
    }
}
