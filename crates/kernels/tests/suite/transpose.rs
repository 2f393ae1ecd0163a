//! The transpose copy against the element-by-element loop, bit for bit, over shapes with
//! and without whole 8 x 8 blocks, padded strides on both sides, and values whose bits a
//! copy must keep (NaN payloads, negative zero, infinities, subnormals).

use crate::common::*;
use crate::sae_data::fill;
use kernels::isa;
use kernels::transpose::transpose;
use kernels::Layout;
use proptest::prelude::*;

/// Values a copy must keep to the bit.
const SPECIAL: &[u32] = &[
    0x7fc0_1234, // a quiet NaN with a payload
    0xffa0_0001, // a signalling NaN, negative
    0x8000_0000, // -0.0
    0x7f80_0000, // +inf
    0xff80_0000, // -inf
    0x0000_0001, // the smallest subnormal
    0x7f7f_ffff, // f32::MAX
];

/// `src` for `layout`, each value distinct, with the special values sprinkled in.
fn source(layout: Layout, seed: u64) -> Vec<f32> {
    let mut src = fill(layout.required_len(), seed, 1.0);
    for (i, v) in src.iter_mut().enumerate() {
        if i % 5 == 3 {
            *v = f32::from_bits(SPECIAL[(i / 5) % SPECIAL.len()]);
        }
    }
    src
}

/// `dst` as the element-by-element reference leaves it, from a copy of `sentinel`.
fn reference(layout: Layout, src: &[f32], to_stride: usize, sentinel: &[f32]) -> Vec<f32> {
    let mut dst = sentinel.to_vec();
    kernels::transpose::reference::transpose(layout, src, to_stride, &mut dst);
    dst
}

fn bits(values: &[f32]) -> Vec<u32> {
    values.iter().map(|v| v.to_bits()).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn transpose_matches_the_element_loop(
        rows in prop_oneof![2 => 0usize..40, 1 => proptest::sample::select(&[64usize, 67, 128][..])],
        cols in prop_oneof![2 => 0usize..40, 1 => proptest::sample::select(&[64usize, 71, 256][..])],
        from_pad in 0usize..5,
        to_pad in 0usize..5,
        seed in any::<u64>(),
    ) {
        let layout = Layout::strided(rows, cols, cols + from_pad);
        let src = source(layout, seed);
        let to_stride = rows + to_pad;
        // Room for `cols` rows of the transpose; everything it must not write holds -7.
        let sentinel = vec![-7.0f32; cols * to_stride];
        let want = reference(layout, &src, to_stride, &sentinel);
        for arch in arches() {
            let mut got = sentinel.clone();
            isa::with_arch(arch, || transpose(layout, &src, to_stride, &mut got));
            prop_assert_eq!(bits(&got), bits(&want), "{} {}x{}", isa::name(arch), rows, cols);
        }
    }
}

#[test]
fn transpose_twice_is_the_identity_at_an_encoder_gradient_shape() {
    // A thread's share of a 512 x 8192 encoder: 8192 latents by 256 inputs, stride 512.
    let layout = Layout::strided(8192, 256, 512);
    let src = source(layout, 11);
    let mut once = vec![0.0f32; 256 * 8192];
    let mut twice = vec![0.0f32; 8192 * 512];
    for arch in arches() {
        transpose_on(arch, layout, &src, 8192, &mut once);
        transpose_on(arch, Layout::contiguous(256, 8192), &once, 512, &mut twice);
        for i in 0..8192 {
            assert_eq!(
                bits(&twice[i * 512..i * 512 + 256]),
                bits(&src[i * 512..i * 512 + 256]),
                "{} row {i}",
                isa::name(arch)
            );
        }
    }
}

fn transpose_on(arch: isa::Arch, layout: Layout, src: &[f32], to_stride: usize, dst: &mut [f32]) {
    isa::with_arch(arch, || transpose(layout, src, to_stride, dst));
}

#[test]
#[should_panic(expected = "transpose: dst holds")]
fn a_short_destination_panics_naming_the_kernel() {
    let src = vec![0.0f32; 12];
    let mut dst = vec![0.0f32; 11];
    transpose(Layout::contiguous(3, 4), &src, 3, &mut dst);
}

#[test]
#[should_panic(expected = "transpose: to_stride")]
fn a_narrow_destination_stride_panics_naming_the_kernel() {
    let src = vec![0.0f32; 12];
    let mut dst = vec![0.0f32; 100];
    transpose(Layout::contiguous(3, 4), &src, 2, &mut dst);
}

#[test]
#[should_panic(expected = "transpose: src holds")]
fn a_short_source_panics_naming_the_kernel() {
    let src = vec![0.0f32; 11];
    let mut dst = vec![0.0f32; 12];
    transpose(Layout::contiguous(3, 4), &src, 3, &mut dst);
}
