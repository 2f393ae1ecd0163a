//! The sparse autoencoder's kernels at its training shape: d 512 inputs, N 8192 latents,
//! k 32 kept a row, batch 256 (and k_aux 256 over half the latents for AuxK). Each runs
//! as the dispatched SIMD kernel, the same kernel pinned to pulp's scalar path where that
//! is informative, and the scalar reference. The encoder's dense product at the same
//! shape (`gemm`, 256 x 512 x 8192) is timed alongside as the yardstick the selection
//! must stay far below.
//!
//! `cargo bench -p kernels --bench sparse` (add a filter such as `-- top_k` to run a
//! part, `--quick` for fewer rounds).
//! The dense step of the ReLU SAE (whose codes are dense until the L1 penalty thins them)
//! runs its four products through the GEMM with transposed operands; they are timed at
//! the same shape, with its pass over the codes between them (the ReLU's mask, the L1
//! term, the per-latent sums), the encoder gradient's transpose into `W_enc`'s layout, and
//! Adam's update over a tensor of `W_dec`'s size.
//! Throughput: elements/s for the selections (`B x N` pre-activations read), the
//! row-norm kernels (`N x d`), the transpose (`N x d` copied) and Adam (`N x d`
//! parameters); FLOP/s for the products (`2 d`
//! per kept entry) and the GEMMs.

use criterion::measurement::WallTime;
use criterion::{
    criterion_group, criterion_main, BenchmarkGroup, BenchmarkId, Criterion, Throughput,
};
use kernels::gemm::{gemm, MatMut, MatRef};
use kernels::isa::{self, Arch};
use kernels::optim::{self, AdamStep};
use kernels::sparse_rows::{LatentIndex, SparseRows};
use kernels::topk::{self, SelectScratch, Threshold};
use kernels::{sparse, transpose, unit_norm, Layout};
use std::hint::black_box;
use std::ops::Range;
use std::time::Duration;

#[path = "../tests/suite/sae_data/mod.rs"]
mod sae_data;

use sae_data::gaussian;

const D: usize = 512;
const N: usize = 8192;
const K: usize = 32;
const BATCH: usize = 256;
const K_AUX: usize = 256;

/// The dispatched kernel and the same kernel on pulp's scalar path.
fn variants() -> [(&'static str, Arch); 2] {
    [
        ("simd", *isa::available().last().unwrap()),
        ("scalar-path", Arch::Scalar),
    ]
}

/// The dispatched kernel only.
fn simd_only() -> [(&'static str, Arch); 1] {
    [variants()[0]]
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_millis(1000))
        .sample_size(10)
}

/// A benchmark group whose throughput is `elements` a run.
fn throughput_group<'c>(
    c: &'c mut Criterion,
    name: &str,
    elements: usize,
) -> BenchmarkGroup<'c, WallTime> {
    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::Elements(elements as u64));
    group
}

/// Which implementation a benchmark runs.
#[derive(Clone, Copy)]
enum Impl {
    Kernel,
    Reference,
}

/// Times `run(Impl::Kernel)` on each of `arches` (named after it), then
/// `run(Impl::Reference)` as "reference".
fn kernel_and_reference<R>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    arches: &[(&'static str, Arch)],
    shape: &str,
    mut run: impl FnMut(Impl) -> R,
) {
    for &(name, arch) in arches {
        group.bench_function(BenchmarkId::new(name, shape), |b| {
            isa::with_arch(arch, || b.iter(|| run(Impl::Kernel)))
        });
    }
    group.bench_function(BenchmarkId::new("reference", shape), |b| {
        b.iter(|| run(Impl::Reference))
    });
}

/// Pre-activations `z` (`B x N`, a third of them positive after the bias) and the bias.
fn pre_activations() -> (Layout, Vec<f32>, Vec<f32>) {
    let layout = Layout::contiguous(BATCH, N);
    (
        layout,
        gaussian(layout.len(), 1, -0.45, 1.0),
        gaussian(N, 2, 0.0, 0.1),
    )
}

fn selections(c: &mut Criterion) {
    let (layout, z, bias) = pre_activations();
    let mut scratch = SelectScratch::new();
    let mut out = SparseRows::new(N);
    let shape = format!("{BATCH}x{N}_k{K}");

    let mut group = throughput_group(c, "encoder_product", 2 * BATCH * D * N);
    let x = gaussian(BATCH * D, 3, 0.0, 1.0);
    let w_enc = gaussian(D * N, 4, 0.0, 0.05);
    let mut zz = vec![0.0; BATCH * N];
    group.bench_function(BenchmarkId::new("flops", format!("{BATCH}x{D}x{N}")), |b| {
        b.iter(|| {
            let a = MatRef::row_major(&x, BATCH, D).unwrap();
            let w = MatRef::row_major(&w_enc, D, N).unwrap();
            gemm(
                1.0,
                a,
                w,
                0.0,
                MatMut::row_major(&mut zz, BATCH, N).unwrap(),
            )
            .unwrap();
            black_box(&zz);
        })
    });
    group.finish();

    let mut group = throughput_group(c, "top_k_rows", layout.len());
    kernel_and_reference(&mut group, &variants(), &shape, |run| match run {
        Impl::Kernel => topk::top_k_rows(layout, &z, &bias, K, &mut scratch, &mut out),
        Impl::Reference => topk::reference::top_k_rows(layout, &z, &bias, K, &mut out),
    });
    // With a zero bias, writing relu(z) back is idempotent, so every iteration sees the
    // same values.
    let zero_bias = vec![0.0; N];
    let mut written = z.clone();
    group.bench_function(BenchmarkId::new("simd-relu-in-place", &shape), |b| {
        b.iter(|| {
            topk::top_k_rows_relu_in_place(
                layout,
                &mut written,
                &zero_bias,
                K,
                &mut scratch,
                &mut out,
            )
        })
    });
    group.finish();

    // A whole batch of pre-activations, 128 MiB, larger than any cache, on two threads
    // (a half each, as the training step splits it): each row comes from memory, whose
    // bandwidth the threads share (the rows above stay in L3 between iterations).
    let large = Layout::contiguous(16 * BATCH, N);
    let mut from_memory = gaussian(large.len(), 5, -0.45, 1.0);
    for v in &mut from_memory {
        *v = v.max(0.0);
    }
    let half = Layout::contiguous(large.rows / 2, N);
    let mut buffers = [
        (SelectScratch::new(), SparseRows::new(N)),
        (SelectScratch::new(), SparseRows::new(N)),
    ];
    let mut group = throughput_group(c, "top_k_rows_from_memory", large.len());
    group.bench_function(
        BenchmarkId::new(
            "simd-relu-in-place-2-threads",
            format!("{}x{N}_k{K}", large.rows),
        ),
        |b| {
            b.iter(|| {
                std::thread::scope(|scope| {
                    let halves = from_memory.chunks_mut(half.len());
                    for (z, (scratch, out)) in halves.zip(buffers.iter_mut()) {
                        let zero_bias = &zero_bias;
                        scope.spawn(move || {
                            topk::top_k_rows_relu_in_place(half, z, zero_bias, K, scratch, out)
                        });
                    }
                })
            })
        },
    );
    group.finish();
    drop(from_memory);

    let mut group = throughput_group(c, "batch_top_k", layout.len());
    kernel_and_reference(&mut group, &simd_only(), &shape, |run| match run {
        Impl::Kernel => topk::batch_top_k(layout, &z, &bias, K, &mut scratch, &mut out),
        Impl::Reference => topk::reference::batch_top_k(layout, &z, &bias, K, &mut out),
    });
    group.finish();

    // A global threshold that keeps about 32 of the 8192 latents a row.
    let theta = Threshold::Global(2.3);
    let mut group = throughput_group(c, "threshold_rows", layout.len());
    kernel_and_reference(&mut group, &simd_only(), &shape, |run| match run {
        Impl::Kernel => topk::threshold_rows(layout, &z, &bias, theta, &mut scratch, &mut out),
        Impl::Reference => topk::reference::threshold_rows(layout, &z, &bias, theta, &mut out),
    });
    group.finish();

    // JumpReLU's window about the same thresholds, at its default bandwidth.
    let thetas = vec![2.3f32; N];
    let mut group = throughput_group(c, "window_rows", layout.len());
    kernel_and_reference(&mut group, &simd_only(), &shape, |run| match run {
        Impl::Kernel => topk::window_rows(layout, &z, &bias, &thetas, 0.001, &mut out),
        Impl::Reference => {
            topk::reference::window_rows(layout, &z, &bias, &thetas, 0.001, &mut out)
        }
    });
    group.finish();

    let mut activations = z.clone();
    kernels::activation::bias_activation_forward(
        kernels::Activation::Relu,
        layout,
        &mut activations,
        &bias,
    );
    let dead: Vec<u32> = (0..N as u32).step_by(2).collect();
    let aux_shape = format!("{BATCH}x{}_k{K_AUX}", dead.len());
    let mut group = throughput_group(c, "top_k_rows_among", BATCH * dead.len());
    kernel_and_reference(&mut group, &simd_only(), &aux_shape, |run| {
        let a = &activations;
        match run {
            Impl::Kernel => topk::top_k_rows_among(layout, a, &dead, K_AUX, &mut scratch, &mut out),
            Impl::Reference => topk::reference::top_k_rows_among(layout, a, &dead, K_AUX, &mut out),
        }
    });
    group.finish();
}

/// `scatter_outer_add` or its reference, by what it reads the entries from: the kernel's
/// `LatentIndex` or the reference's `SparseRows`.
type Scatter<E> = fn(&E, &[f32], &[f32], Layout, f32, Range<usize>, &mut [f32], Layout);

/// `scatter` at the benchmark's shape: all the latents of `x`'s rows, into `g` (`N x D`).
fn scatter_with<E>(scatter: Scatter<E>, entries: &E, values: &[f32], x: &[f32], g: &mut [f32]) {
    let (x_layout, g_layout) = (Layout::contiguous(BATCH, D), Layout::contiguous(N, D));
    scatter(entries, values, x, x_layout, 1e-6, 0..N, g, g_layout)
}

fn products(c: &mut Criterion) {
    let (layout, z, bias) = pre_activations();
    let mut codes = SparseRows::new(N);
    topk::top_k_rows(layout, &z, &bias, K, &mut SelectScratch::new(), &mut codes);
    let index = LatentIndex::of(&codes);
    let w_layout = Layout::contiguous(N, D);
    let w = gaussian(w_layout.len(), 5, 0.0, 0.05);
    let x_layout = Layout::contiguous(BATCH, D);
    let x = gaussian(x_layout.len(), 6, 0.0, 1.0);
    let b_dec = gaussian(D, 7, 0.0, 0.1);
    let flops = 2 * codes.nnz() * D;
    let shape = format!("{BATCH}x{N}x{D}_k{K}");

    let mut group = throughput_group(c, "sparse_times_dense", flops);
    let mut out = vec![0.0; x.len()];
    kernel_and_reference(&mut group, &variants(), &shape, |run| {
        let product = match run {
            Impl::Kernel => sparse::sparse_times_dense,
            Impl::Reference => sparse::reference::sparse_times_dense,
        };
        product(&codes, &w, w_layout, Some(&b_dec), &mut out, x_layout)
    });
    group.finish();

    let mut group = throughput_group(c, "dots_at_entries", flops);
    let mut grads = vec![0.0; codes.nnz()];
    kernel_and_reference(&mut group, &variants(), &shape, |run| {
        let dots = match run {
            Impl::Kernel => sparse::dots_at_entries,
            Impl::Reference => sparse::reference::dots_at_entries,
        };
        dots(&codes, &x, x_layout, &w, w_layout, &mut grads)
    });
    group.finish();

    let mut group = throughput_group(c, "scatter_outer_add", flops);
    let mut g = vec![0.0; w.len()];
    kernel_and_reference(&mut group, &variants(), &shape, |run| {
        let (values, g) = (codes.values(), &mut g[..]);
        match run {
            Impl::Kernel => scatter_with(sparse::scatter_outer_add, &index, values, &x, g),
            Impl::Reference => {
                scatter_with(sparse::reference::scatter_outer_add, &codes, values, &x, g)
            }
        }
    });
    group.finish();

    let mut group = throughput_group(c, "latent_index", codes.nnz());
    let mut rebuilt = LatentIndex::new();
    group.bench_function(BenchmarkId::new("rebuild", &shape), |b| {
        b.iter(|| rebuilt.rebuild(&codes))
    });
    group.finish();
}

fn unit_rows(c: &mut Criterion) {
    let layout = Layout::contiguous(N, D);
    let w = gaussian(layout.len(), 8, 0.0, 0.05);
    let mut unit = w.clone();
    unit_norm::normalize_rows(layout, &mut unit);
    let g = gaussian(layout.len(), 9, 0.0, 1e-3);
    let shape = format!("{N}x{D}");
    let mut norms = vec![0.0; N];
    let mut buf = w.clone();

    let mut group = throughput_group(c, "row_norms", layout.len());
    kernel_and_reference(&mut group, &variants(), &shape, |run| {
        let row_norms = match run {
            Impl::Kernel => unit_norm::row_norms,
            Impl::Reference => unit_norm::reference::row_norms,
        };
        row_norms(layout, &w, &mut norms)
    });
    group.finish();

    // Normalising unit rows again is what the step does after a small update.
    let mut group = throughput_group(c, "normalize_rows", layout.len());
    buf.copy_from_slice(&unit);
    kernel_and_reference(&mut group, &simd_only(), &shape, |run| {
        let normalize = match run {
            Impl::Kernel => unit_norm::normalize_rows,
            Impl::Reference => unit_norm::reference::normalize_rows,
        };
        normalize(layout, &mut buf)
    });
    group.finish();

    let mut group = throughput_group(c, "remove_parallel_component", layout.len());
    buf.copy_from_slice(&g);
    kernel_and_reference(&mut group, &simd_only(), &shape, |run| {
        let remove = match run {
            Impl::Kernel => unit_norm::remove_parallel_component,
            Impl::Reference => unit_norm::reference::remove_parallel_component,
        };
        remove(layout, &unit, &mut buf)
    });
    group.finish();
}

/// The four products of the dense (ReLU) step, as the step calls them: decode `F W_dec`,
/// the decoder's gradient `F^T dX`, the codes' gradient `dX W_dec^T` and the encoder's
/// `X^T dF`.
fn dense_products(c: &mut Criterion) {
    let x = gaussian(BATCH * D, 10, 0.0, 1.0);
    let mut f = gaussian(BATCH * N, 11, -0.45, 1.0);
    f.iter_mut().for_each(|v| *v = v.max(0.0));
    let w_dec = gaussian(N * D, 12, 0.0, 0.05);
    let dx = gaussian(BATCH * D, 13, 0.0, 1e-3);
    let mut recon = vec![0.0; BATCH * D];
    let mut grad_dec = vec![0.0; N * D];
    let mut df = vec![0.0; BATCH * N];
    let mut grad_enc = vec![0.0; D * N];
    let flops = 2 * BATCH * D * N;
    let mut group = throughput_group(c, "dense_step_products", flops);
    let codes = MatRef::row_major(&f, BATCH, N).unwrap();
    let decoder = MatRef::row_major(&w_dec, N, D).unwrap();
    let dout = MatRef::row_major(&dx, BATCH, D).unwrap();
    let input = MatRef::row_major(&x, BATCH, D).unwrap();
    let shape = format!("{BATCH}x{D}x{N}");
    group.bench_function(BenchmarkId::new("decode_F_Wdec", &shape), |b| {
        b.iter(|| {
            let out = MatMut::row_major(&mut recon, BATCH, D).unwrap();
            gemm(1.0, codes, decoder, 0.0, out).unwrap();
            black_box(&recon);
        })
    });
    group.bench_function(BenchmarkId::new("grad_Wdec_Ft_dX", &shape), |b| {
        b.iter(|| {
            let out = MatMut::row_major(&mut grad_dec, N, D).unwrap();
            gemm(1.0, codes.t(), dout, 0.0, out).unwrap();
            black_box(&grad_dec);
        })
    });
    group.bench_function(BenchmarkId::new("grad_F_dX_Wdect", &shape), |b| {
        b.iter(|| {
            let out = MatMut::row_major(&mut df, BATCH, N).unwrap();
            gemm(1.0, dout, decoder.t(), 0.0, out).unwrap();
            black_box(&df);
        })
    });
    let dz = MatRef::row_major(&f, BATCH, N).unwrap();
    group.bench_function(BenchmarkId::new("grad_Wenc_Xt_dF", &shape), |b| {
        b.iter(|| {
            let out = MatMut::row_major(&mut grad_enc, D, N).unwrap();
            gemm(1.0, input.t(), dz, 0.0, out).unwrap();
            black_box(&grad_enc);
        })
    });
    group.finish();
}

/// The dense ReLU step's pass over its codes and their gradient (`B x N`, row by row):
/// the ReLU's mask with the L1 term, the per-latent sums and counts, the bias gradient.
fn relu_codes_pass(c: &mut Criterion) {
    let mut f = gaussian(BATCH * N, 11, -0.45, 1.0);
    f.iter_mut().for_each(|v| *v = v.max(0.0));
    let grad = gaussian(BATCH * N, 13, 0.0, 1e-3);
    let norms = gaussian(N, 18, 1.0, 0.1);
    let mut work = grad.clone();
    let (mut sums, mut counts, mut bias) = (vec![0.0f32; N], vec![0u32; N], vec![0.0f32; N]);
    let mut group = throughput_group(c, "relu_l1_codes_pass", BATCH * N);
    kernel_and_reference(&mut group, &variants(), &format!("{BATCH}x{N}"), |run| {
        let row = match run {
            Impl::Kernel => kernels::sparsity::relu_l1_codes_row,
            Impl::Reference => kernels::sparsity::reference::relu_l1_codes_row,
        };
        work.copy_from_slice(&grad);
        for (codes, g) in f.chunks_exact(N).zip(work.chunks_exact_mut(N)) {
            row(codes, g, &norms, 1e-3, &mut sums, &mut counts, &mut bias);
        }
        black_box(&bias);
    });
    group.finish();
}

/// The encoder gradient's copy from latent-major (`N x d`, as it is built) into `W_enc`'s
/// `d x N`.
fn transposes(c: &mut Criterion) {
    let from = Layout::contiguous(N, D);
    let src = gaussian(from.len(), 18, 0.0, 1.0);
    let mut dst = vec![0.0; from.len()];
    let mut group = throughput_group(c, "transpose", from.len());
    kernel_and_reference(&mut group, &variants(), &format!("{N}x{D}"), |run| {
        let transpose = match run {
            Impl::Kernel => transpose::transpose,
            Impl::Reference => transpose::reference::transpose,
        };
        transpose(from, &src, N, &mut dst)
    });
    group.finish();
}

/// Adam over a tensor the size of `W_dec`, at a late step (its bias corrections near 1).
fn updates(c: &mut Criterion) {
    let len = N * D;
    let grad = gaussian(len, 14, 0.0, 1e-3);
    let mut m = gaussian(len, 15, 0.0, 1e-4);
    let mut v: Vec<f32> = gaussian(len, 16, 0.0, 1e-3).iter().map(|g| g * g).collect();
    let mut param = gaussian(len, 17, 0.0, 0.05);
    let step = AdamStep::new(1e-4, 0.9, 0.999, 1e-8, 1000);
    let mut group = throughput_group(c, "adam_update", len);
    kernel_and_reference(&mut group, &variants(), &format!("{N}x{D}"), |run| {
        let update = match run {
            Impl::Kernel => optim::adam_update,
            Impl::Reference => optim::reference::adam_update,
        };
        update(step, &grad, &mut m, &mut v, &mut param)
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = config();
    targets = selections, products, unit_rows, dense_products, relu_codes_pass, transposes, updates
}
criterion_main!(benches);
