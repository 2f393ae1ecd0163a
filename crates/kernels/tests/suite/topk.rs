//! Top-k, batch top-k, threshold and masked selections against the references: the kept
//! sets must be identical (the selections are exact), on every instruction set.

use crate::common::*;
use crate::sae_data::gaussian_like;
use kernels::activation::{self, Activation};
use kernels::isa;
use kernels::sparse_rows::SparseRows;
use kernels::topk::{self, reference, SelectScratch, Threshold};
use kernels::Layout;
use proptest::prelude::*;

/// Row lengths that leave ragged tails on every SIMD width, and a few exact ones.
const AWKWARD_COLS: &[usize] = &[1, 7, 17, 33, 64, 65, 100, 512, 1000, 2049];

fn cols() -> impl Strategy<Value = usize> {
    prop_oneof![
        3 => proptest::sample::select(AWKWARD_COLS),
        1 => 0usize..300,
    ]
}

/// Kinds of pre-activation: moderate, heavy ties, all negative, all zero, extremes, tiny.
fn values_of_kind(kind: u8) -> BoxedStrategy<f32> {
    match kind {
        0 => (-3.0f32..3.0).boxed(),
        1 => proptest::sample::select(&[-1.0f32, 0.0, 0.25, 0.5, 1.0][..]).boxed(),
        2 => (-10.0f32..=-0.0).boxed(),
        3 => proptest::sample::select(&[0.0f32, -0.0][..]).boxed(),
        4 => bounded_f32().boxed(),
        5 => {
            proptest::sample::select(&[1e-45f32, 1e-40, -1e-40, f32::MIN_POSITIVE, 0.0, 1e-38][..])
                .boxed()
        }
        _ => finite_f32().boxed(),
    }
}

fn values(kind: u8, len: usize) -> impl Strategy<Value = Vec<f32>> {
    proptest::collection::vec(values_of_kind(kind), len)
}

/// How many to keep: the usual, everything, more than there is, anything.
fn k_for(cols: usize) -> impl Strategy<Value = usize> {
    prop_oneof![
        proptest::sample::select(&[0usize, 1, 3, 32][..]),
        Just(cols),
        Just(cols + 3),
        0..=cols,
    ]
}

/// `(layout, z, bias, k)` with a padded row stride and independent value kinds.
fn pre_activations(max_rows: usize) -> impl Strategy<Value = (Layout, Vec<f32>, Vec<f32>, usize)> {
    (0..=max_rows, cols(), 0usize..4, 0u8..7, 0u8..7).prop_flat_map(
        |(rows, cols, pad, z_kind, bias_kind)| {
            let layout = Layout::strided(rows, cols, cols + pad);
            (
                Just(layout),
                values(z_kind, layout.required_len()),
                values(bias_kind, cols),
                k_for(cols),
            )
        },
    )
}

/// Whether two batches of sparse rows are identical, naming the first difference.
fn same_rows(got: &SparseRows, want: &SparseRows, what: &str) -> Result<(), TestCaseError> {
    prop_assert_eq!(got.cols(), want.cols(), "{}: cols", what);
    prop_assert_eq!(got.rows(), want.rows(), "{}: rows", what);
    for i in 0..want.rows() {
        prop_assert_eq!(got.row(i), want.row(i), "{}: row {}", what, i);
    }
    prop_assert_eq!(got.nnz(), want.nnz(), "{}: entries", what);
    Ok(())
}

/// `z` after an in-place variant must equal `relu(z + bias)` (with `-0 == 0`).
fn relu_written(
    layout: Layout,
    z: &[f32],
    bias: &[f32],
    written: &[f32],
) -> Result<(), TestCaseError> {
    let mut want = z.to_vec();
    activation::reference::bias_activation_forward(Activation::Relu, layout, &mut want, bias);
    for i in 0..layout.rows {
        for k in layout.row(i) {
            prop_assert!(
                written[k] == want[k],
                "relu at {}: {} vs {}",
                k,
                written[k],
                want[k]
            );
        }
    }
    // Padding between rows is not touched.
    for (k, (&w, &z)) in written.iter().zip(z).enumerate() {
        let in_row = layout.cols > 0 && k % layout.row_stride < layout.cols;
        prop_assert!(
            in_row || w.to_bits() == z.to_bits(),
            "padding at {} changed",
            k
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn top_k_rows_match_reference((layout, z, bias, k) in pre_activations(5)) {
        let mut want = SparseRows::new(0);
        reference::top_k_rows(layout, &z, &bias, k, &mut want);
        let mut scratch = SelectScratch::new();
        let mut got = SparseRows::with_capacity(3, 2, 2);
        got.push_row(&[0, 2], &[1.0, 2.0]);
        for arch in arches() {
            let name = isa::name(arch);
            isa::with_arch(arch, || topk::top_k_rows(layout, &z, &bias, k, &mut scratch, &mut got));
            same_rows(&got, &want, name)?;
            let mut written = z.clone();
            isa::with_arch(arch, || {
                topk::top_k_rows_relu_in_place(layout, &mut written, &bias, k, &mut scratch, &mut got)
            });
            same_rows(&got, &want, name)?;
            relu_written(layout, &z, &bias, &written)?;
        }
    }

    #[test]
    fn batch_top_k_matches_reference((layout, z, bias, k) in pre_activations(6)) {
        let k = k.min(40);
        let mut want = SparseRows::new(0);
        let want_threshold = reference::batch_top_k(layout, &z, &bias, k, &mut want);
        let mut scratch = SelectScratch::new();
        let mut got = SparseRows::new(0);
        for arch in arches() {
            let name = isa::name(arch);
            let threshold = isa::with_arch(arch, || {
                topk::batch_top_k(layout, &z, &bias, k, &mut scratch, &mut got)
            });
            same_rows(&got, &want, name)?;
            prop_assert_eq!(threshold, want_threshold, "{}", name);
            let mut written = z.clone();
            let threshold = isa::with_arch(arch, || {
                topk::batch_top_k_relu_in_place(layout, &mut written, &bias, k, &mut scratch, &mut got)
            });
            same_rows(&got, &want, name)?;
            prop_assert_eq!(threshold, want_threshold, "{}", name);
            relu_written(layout, &z, &bias, &written)?;
        }
    }

    #[test]
    fn threshold_rows_match_reference(
        (layout, z, bias, _) in pre_activations(5),
        theta_kind in 0u8..7,
        global in proptest::sample::select(&[0.0f32, -0.0, 0.5, -1.0, 1.0, 1e-40, 1e30][..]),
        theta_seed in proptest::collection::vec(any::<u32>(), 2049),
    ) {
        // Per-latent thresholds drawn from the same kinds as the values, so ties happen.
        let kinds: Vec<f32> = match theta_kind {
            1 => vec![-1.0, 0.0, 0.25, 0.5, 1.0],
            3 => vec![0.0, -0.0],
            5 => vec![1e-45, 1e-40, -1e-40, f32::MIN_POSITIVE, 0.0, 1e-38],
            _ => vec![-2.0, -0.5, 0.0, 0.1, 0.5, 1.5, 3.0],
        };
        let theta: Vec<f32> = (0..layout.cols)
            .map(|j| kinds[theta_seed[j] as usize % kinds.len()])
            .collect();
        let mut scratch = SelectScratch::new();
        let mut got = SparseRows::new(0);
        for threshold in [Threshold::Global(global), Threshold::PerLatent(&theta)] {
            let mut want = SparseRows::new(0);
            reference::threshold_rows(layout, &z, &bias, threshold, &mut want);
            for arch in arches() {
                isa::with_arch(arch, || {
                    topk::threshold_rows(layout, &z, &bias, threshold, &mut scratch, &mut got)
                });
                same_rows(&got, &want, isa::name(arch))?;
            }
        }
    }

    #[test]
    fn window_rows_match_reference(
        (layout, z, bias, _) in pre_activations(5),
        theta_seed in proptest::collection::vec(any::<u32>(), 2049),
        bandwidth in proptest::sample::select(&[1.0f32, 0.001, 0.5, 2.0, 1e-30, 3e38][..]),
    ) {
        // Thresholds of the values' own kinds, so that distances of exactly half a
        // bandwidth (left out) and of zero occur.
        let kinds = [-2.0f32, -0.5, 0.0, 0.1, 0.25, 0.5, 1.0, 1.5];
        let theta: Vec<f32> = (0..layout.cols)
            .map(|j| kinds[theta_seed[j] as usize % kinds.len()])
            .collect();
        let mut want = SparseRows::new(0);
        reference::window_rows(layout, &z, &bias, &theta, bandwidth, &mut want);
        let mut got = SparseRows::new(0);
        for arch in arches() {
            isa::with_arch(arch, || {
                topk::window_rows(layout, &z, &bias, &theta, bandwidth, &mut got)
            });
            same_rows(&got, &want, isa::name(arch))?;
        }
    }

    #[test]
    fn top_k_rows_among_match_reference(
        (layout, z, bias, k) in pre_activations(5),
        pick in proptest::collection::vec(any::<bool>(), 2049),
        k_aux in prop_oneof![Just(256usize), 0usize..40],
    ) {
        let mut activations = z.clone();
        activation::reference::bias_activation_forward(Activation::Relu, layout, &mut activations, &bias);
        let latents: Vec<u32> = (0..layout.cols as u32).filter(|&j| pick[j as usize]).collect();
        let mut scratch = SelectScratch::new();
        let mut got = SparseRows::new(0);
        for k in [k, k_aux] {
            let mut want = SparseRows::new(0);
            reference::top_k_rows_among(layout, &activations, &latents, k, &mut want);
            for arch in arches() {
                isa::with_arch(arch, || {
                    topk::top_k_rows_among(layout, &activations, &latents, k, &mut scratch, &mut got)
                });
                same_rows(&got, &want, isa::name(arch))?;
            }
        }
    }
}

/// The shapes of training (N in the thousands, k = 32 and k_aux = 256) with the bound
/// filtering most values away, including the case where it cannot (k = N).
#[test]
fn training_shapes_match_reference() {
    for &(rows, cols) in &[(4, 4096), (3, 8192), (2, 3001)] {
        let layout = Layout::contiguous(rows, cols);
        let z = gaussian_like(layout.len(), cols as u64, -0.5);
        let bias = gaussian_like(cols, 7, 0.0);
        let mut scratch = SelectScratch::new();
        let mut got = SparseRows::new(0);
        let mut want = SparseRows::new(0);
        for k in [1, 3, 32, 256, cols] {
            reference::top_k_rows(layout, &z, &bias, k, &mut want);
            let want_threshold = {
                let mut batch = SparseRows::new(0);
                let t = reference::batch_top_k(layout, &z, &bias, k, &mut batch);
                (batch, t)
            };
            let dead: Vec<u32> = (0..cols as u32).filter(|j| j % 3 != 1).collect();
            let mut activations = z.clone();
            activation::reference::bias_activation_forward(
                Activation::Relu,
                layout,
                &mut activations,
                &bias,
            );
            let mut want_among = SparseRows::new(0);
            reference::top_k_rows_among(layout, &activations, &dead, k, &mut want_among);
            for_each_arch(|name| {
                topk::top_k_rows(layout, &z, &bias, k, &mut scratch, &mut got);
                assert_eq!(got, want, "{name} top_k_rows {rows}x{cols} k {k}");
                let t = topk::batch_top_k(layout, &z, &bias, k, &mut scratch, &mut got);
                assert_eq!(
                    (&got, t),
                    (&want_threshold.0, want_threshold.1),
                    "{name} batch"
                );
                topk::top_k_rows_among(layout, &activations, &dead, k, &mut scratch, &mut got);
                assert_eq!(got, want_among, "{name} among {rows}x{cols} k {k}");
            });
        }
    }
}

#[test]
fn ties_keep_the_lower_indices_and_rows() {
    let layout = Layout::contiguous(3, 100);
    let z = vec![1.0f32; layout.len()];
    let bias = vec![0.0; 100];
    let mut scratch = SelectScratch::new();
    let mut out = SparseRows::new(0);
    for_each_arch(|name| {
        topk::top_k_rows(layout, &z, &bias, 5, &mut scratch, &mut out);
        for i in 0..3 {
            assert_eq!(
                out.row(i),
                (&[0u32, 1, 2, 3, 4][..], &[1.0f32; 5][..]),
                "{name}"
            );
        }
        // 3 rows x 40 = 120 kept: all 100 of row 0 and the first 20 of row 1.
        let t = topk::batch_top_k(layout, &z, &bias, 40, &mut scratch, &mut out);
        assert_eq!(t, Some(1.0), "{name}");
        assert_eq!(out.row(0).0.len(), 100, "{name}");
        assert_eq!(out.row(1).0, (0..20).collect::<Vec<u32>>(), "{name}");
        assert!(out.row(2).0.is_empty(), "{name}");
    });
}

#[test]
fn nothing_positive_keeps_nothing() {
    for cols in [1, 17, 512] {
        let layout = Layout::contiguous(2, cols);
        for (z, bias) in [
            (vec![0.0f32; 2 * cols], vec![0.0f32; cols]),
            (vec![-0.0f32; 2 * cols], vec![-0.0f32; cols]),
            (gaussian_like(2 * cols, 3, -50.0), vec![-1.0; cols]),
            (vec![1.0; 2 * cols], vec![-1.0; cols]),
        ] {
            let mut scratch = SelectScratch::new();
            let mut out = SparseRows::new(0);
            for_each_arch(|name| {
                topk::top_k_rows(layout, &z, &bias, 32, &mut scratch, &mut out);
                assert_eq!((out.rows(), out.nnz()), (2, 0), "{name}");
                let t = topk::batch_top_k(layout, &z, &bias, 32, &mut scratch, &mut out);
                assert_eq!((out.rows(), out.nnz(), t), (2, 0, None), "{name}");
                let theta = Threshold::Global(-5.0);
                topk::threshold_rows(layout, &z, &bias, theta, &mut scratch, &mut out);
                assert_eq!((out.rows(), out.nnz()), (2, 0), "{name}");
            });
        }
    }
}

#[test]
fn huge_and_tiny_values_rank_by_value() {
    let cols = 33;
    let layout = Layout::contiguous(1, cols);
    let mut z = vec![-1.0f32; cols];
    let picks = [
        (3, f32::MAX),
        (9, 1e30),
        (10, 1e-40),
        (20, f32::MIN_POSITIVE),
        (32, 1e-45),
    ];
    for &(j, v) in &picks {
        z[j] = v;
    }
    let bias = vec![0.0; cols];
    let mut scratch = SelectScratch::new();
    let mut out = SparseRows::new(0);
    for_each_arch(|name| {
        topk::top_k_rows(layout, &z, &bias, 3, &mut scratch, &mut out);
        assert_eq!(
            out.row(0),
            (&[3u32, 9, 20][..], &[f32::MAX, 1e30, f32::MIN_POSITIVE][..]),
            "{name}"
        );
        topk::top_k_rows(layout, &z, &bias, 10, &mut scratch, &mut out);
        assert_eq!(out.row(0).0, &[3u32, 9, 10, 20, 32][..], "{name}");
    });
}

#[test]
#[should_panic(expected = "bias length")]
fn top_k_rows_rejects_a_short_bias() {
    let mut out = SparseRows::new(0);
    topk::top_k_rows(
        Layout::contiguous(2, 8),
        &[0.0; 16],
        &[0.0; 7],
        1,
        &mut SelectScratch::new(),
        &mut out,
    );
}

#[test]
#[should_panic(expected = "strictly increasing")]
fn top_k_rows_among_rejects_unsorted_latents() {
    let mut out = SparseRows::new(0);
    topk::top_k_rows_among(
        Layout::contiguous(1, 8),
        &[0.0; 8],
        &[3, 1],
        1,
        &mut SelectScratch::new(),
        &mut out,
    );
}

#[test]
fn window_rows_keep_strictly_less_than_half_a_bandwidth() {
    // Distances from the threshold 1.0 with bandwidth 0.5: 0.25 is the edge (left out),
    // just below it is in, as is the threshold itself; across 37 latents, so that every
    // instruction set has a tail.
    let cols = 37;
    let offsets = [0.25f32, -0.25, 0.2499999, -0.2499999, 0.0, 0.3, -1.0];
    let z: Vec<f32> = (0..cols)
        .map(|j| 1.0 + offsets[j % offsets.len()])
        .collect();
    let (bias, theta) = (vec![0.0f32; cols], vec![1.0f32; cols]);
    let layout = Layout::contiguous(1, cols);
    let want: Vec<u32> = (0..cols as u32)
        .filter(|j| [2, 3, 4].contains(&(j % 7)))
        .collect();
    for arch in arches() {
        let mut got = SparseRows::new(0);
        isa::with_arch(arch, || {
            topk::window_rows(layout, &z, &bias, &theta, 0.5, &mut got)
        });
        assert_eq!(got.row(0).0, &want[..], "{}", isa::name(arch));
        assert!(got.row(0).1.iter().all(|&v| v == 1.0));
    }
}
