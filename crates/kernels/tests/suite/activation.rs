//! Fused dense epilogue and activation backward against the scalar reference.

use crate::common::*;
use kernels::activation::{self, reference};
use kernels::isa;
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn bias_activation_forward_matches_reference(
        act in any_activation(),
        (layout, data) in matrix(24, 700, finite_f32()),
        bias_seed in proptest::collection::vec(finite_f32(), 700),
    ) {
        let bias = &bias_seed[..layout.cols];
        let mut want = data.clone();
        reference::bias_activation_forward(act, layout, &mut want, bias);
        for arch in arches() {
            let mut got = data.clone();
            isa::with_arch(arch, || activation::bias_activation_forward(act, layout, &mut got, bias));
            for (k, (&g, &w)) in got.iter().zip(&want).enumerate() {
                prop_assert!(ulp_distance(g, w) <= 4 || (g - w).abs() <= 1e-44,
                    "{} {:?} at {}: got {:e}, want {:e}", isa::name(arch), act, k, g, w);
            }
            // Padding between rows is never written.
            for i in 0..if layout.is_empty() { 0 } else { layout.rows } {
                let end = layout.row(i).end;
                let pad_end = (end + layout.row_stride - layout.cols).min(got.len());
                prop_assert_eq!(&got[end..pad_end], &data[end..pad_end]);
            }
        }
    }

    #[test]
    fn activation_backward_matches_reference(
        act in any_activation(),
        (layout, output) in matrix(24, 700, finite_f32()),
        grad_seed in proptest::collection::vec(bounded_f32(), 24 * 704),
    ) {
        let grad = grad_seed[..output.len()].to_vec();
        let mut want = grad.clone();
        reference::activation_backward(act, layout, &output, &mut want);
        for arch in arches() {
            let mut got = grad.clone();
            isa::with_arch(arch, || activation::activation_backward(act, layout, &output, &mut got));
            for (k, (&g, &w)) in got.iter().zip(&want).enumerate() {
                prop_assert!(ulp_distance(g, w) <= 1,
                    "{} {:?} at {}: got {:e}, want {:e}", isa::name(arch), act, k, g, w);
            }
        }
    }
}

#[test]
#[should_panic(expected = "bias length != cols")]
fn bias_of_the_wrong_length_panics_with_a_message() {
    let layout = kernels::Layout::contiguous(2, 3);
    activation::bias_activation_forward(
        kernels::Activation::Selu,
        layout,
        &mut [0.0; 6],
        &[0.0; 2],
    );
}

#[test]
#[should_panic(expected = "too short")]
fn data_too_short_for_the_layout_panics_with_a_message() {
    let layout = kernels::Layout::contiguous(2, 3);
    activation::activation_backward(kernels::Activation::Selu, layout, &[0.0; 5], &mut [0.0; 6]);
}

/// Registers go through the activation in groups, the rest of a row one by one, and the
/// row's tail through partial loads: a value gives the same bits wherever in a row it
/// falls, and with every instruction set.
#[test]
fn every_position_of_a_row_computes_the_same_bits() {
    let values = [-100.0f32, -3.7, -0.3, -1e-6, 0.0, 2e-7, 0.45, 5.2, 90.0];
    let bias = [0.0f32; 61];
    for act in [
        activation::Activation::Selu,
        activation::Activation::Sigmoid,
        activation::Activation::Relu,
    ] {
        let mut first: Option<Vec<u32>> = None;
        for arch in arches() {
            let mut bits = Vec::new();
            for &value in &values {
                for cols in [1, 7, 8, 9, 16, 17, 24, 33, 61] {
                    let mut row = vec![value; cols];
                    let layout = kernels::Layout::contiguous(1, cols);
                    isa::with_arch(arch, || {
                        activation::bias_activation_forward(act, layout, &mut row, &bias[..cols])
                    });
                    assert!(
                        row.iter().all(|v| v.to_bits() == row[0].to_bits()),
                        "{} {act:?}: {value} gives {row:?} across a row of {cols}",
                        isa::name(arch)
                    );
                    bits.push(row[0].to_bits());
                }
            }
            match &first {
                None => first = Some(bits),
                Some(first) => assert_eq!(first, &bits, "{} {act:?}", isa::name(arch)),
            }
        }
    }
}
