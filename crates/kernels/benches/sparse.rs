//! The sparse autoencoder's kernels at its training shape: d 512 inputs, N 8192 latents,
//! k 32 kept a row, batch 256 (and k_aux 256 over half the latents for AuxK). Each runs
//! as the dispatched SIMD kernel, the same kernel pinned to pulp's scalar path where that
//! is informative, and the scalar reference. The encoder's dense product at the same
//! shape (`gemm`, 256 x 512 x 8192) is timed alongside as the yardstick the selection
//! must stay far below.
//!
//! `cargo bench -p kernels --bench sparse` (add a filter such as `-- top_k` to run a
//! part, `--quick` for fewer rounds).
//! Throughput: elements/s for the selections (`B x N` pre-activations read) and the
//! row-norm kernels (`N x d`); FLOP/s for the products (`2 d` per kept entry) and the GEMM.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use kernels::gemm::{gemm, MatMut, MatRef};
use kernels::isa::{self, Arch};
use kernels::sparse_rows::{LatentIndex, SparseRows};
use kernels::topk::{self, SelectScratch, Threshold};
use kernels::{sparse, unit_norm, Layout};
use std::hint::black_box;
use std::time::Duration;

const D: usize = 512;
const N: usize = 8192;
const K: usize = 32;
const BATCH: usize = 256;
const K_AUX: usize = 256;

/// Reproducible roughly Gaussian values (a sum of four uniforms from a xorshift stream).
fn gaussian(len: usize, seed: u64, mean: f32, sd: f32) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut uniform = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 40) as f32 / (1u64 << 24) as f32
    };
    (0..len)
        .map(|_| mean + sd * 1.7 * (uniform() + uniform() + uniform() + uniform() - 2.0))
        .collect()
}

/// The dispatched kernel and the same kernel on pulp's scalar path.
fn variants() -> [(&'static str, Arch); 2] {
    [
        ("simd", *isa::available().last().unwrap()),
        ("scalar-path", Arch::Scalar),
    ]
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_millis(1000))
        .sample_size(10)
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

    let mut group = c.benchmark_group("encoder_product");
    let x = gaussian(BATCH * D, 3, 0.0, 1.0);
    let w_enc = gaussian(D * N, 4, 0.0, 0.05);
    let mut zz = vec![0.0; BATCH * N];
    group.throughput(Throughput::Elements((2 * BATCH * D * N) as u64));
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

    let mut group = c.benchmark_group("top_k_rows");
    group.throughput(Throughput::Elements(layout.len() as u64));
    for (name, arch) in variants() {
        group.bench_function(BenchmarkId::new(name, &shape), |b| {
            isa::with_arch(arch, || {
                b.iter(|| topk::top_k_rows(layout, &z, &bias, K, &mut scratch, &mut out))
            })
        });
    }
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
    group.bench_function(BenchmarkId::new("reference", &shape), |b| {
        b.iter(|| topk::reference::top_k_rows(layout, &z, &bias, K, &mut out))
    });
    group.finish();

    let mut group = c.benchmark_group("batch_top_k");
    group.throughput(Throughput::Elements(layout.len() as u64));
    group.bench_function(BenchmarkId::new("simd", &shape), |b| {
        b.iter(|| topk::batch_top_k(layout, &z, &bias, K, &mut scratch, &mut out))
    });
    group.bench_function(BenchmarkId::new("reference", &shape), |b| {
        b.iter(|| topk::reference::batch_top_k(layout, &z, &bias, K, &mut out))
    });
    group.finish();

    // A global threshold that keeps about 32 of the 8192 latents a row.
    let theta = Threshold::Global(2.3);
    let mut group = c.benchmark_group("threshold_rows");
    group.throughput(Throughput::Elements(layout.len() as u64));
    group.bench_function(BenchmarkId::new("simd", &shape), |b| {
        b.iter(|| topk::threshold_rows(layout, &z, &bias, theta, &mut scratch, &mut out))
    });
    group.bench_function(BenchmarkId::new("reference", &shape), |b| {
        b.iter(|| topk::reference::threshold_rows(layout, &z, &bias, theta, &mut out))
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
    let mut group = c.benchmark_group("top_k_rows_among");
    group.throughput(Throughput::Elements((BATCH * dead.len()) as u64));
    group.bench_function(BenchmarkId::new("simd", &aux_shape), |b| {
        b.iter(|| {
            topk::top_k_rows_among(layout, &activations, &dead, K_AUX, &mut scratch, &mut out)
        })
    });
    group.bench_function(BenchmarkId::new("reference", &aux_shape), |b| {
        b.iter(|| topk::reference::top_k_rows_among(layout, &activations, &dead, K_AUX, &mut out))
    });
    group.finish();
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
    let flops = (2 * codes.nnz() * D) as u64;
    let shape = format!("{BATCH}x{N}x{D}_k{K}");

    let mut group = c.benchmark_group("sparse_times_dense");
    group.throughput(Throughput::Elements(flops));
    let mut out = vec![0.0; x.len()];
    for (name, arch) in variants() {
        group.bench_function(BenchmarkId::new(name, &shape), |b| {
            isa::with_arch(arch, || {
                b.iter(|| {
                    sparse::sparse_times_dense(
                        &codes,
                        &w,
                        w_layout,
                        Some(&b_dec),
                        &mut out,
                        x_layout,
                    )
                })
            })
        });
    }
    group.bench_function(BenchmarkId::new("reference", &shape), |b| {
        b.iter(|| {
            sparse::reference::sparse_times_dense(
                &codes,
                &w,
                w_layout,
                Some(&b_dec),
                &mut out,
                x_layout,
            )
        })
    });
    group.finish();

    let mut group = c.benchmark_group("dots_at_entries");
    group.throughput(Throughput::Elements(flops));
    let mut grads = vec![0.0; codes.nnz()];
    for (name, arch) in variants() {
        group.bench_function(BenchmarkId::new(name, &shape), |b| {
            isa::with_arch(arch, || {
                b.iter(|| sparse::dots_at_entries(&codes, &x, x_layout, &w, w_layout, &mut grads))
            })
        });
    }
    group.bench_function(BenchmarkId::new("reference", &shape), |b| {
        b.iter(|| {
            sparse::reference::dots_at_entries(&codes, &x, x_layout, &w, w_layout, &mut grads)
        })
    });
    group.finish();

    let mut group = c.benchmark_group("scatter_outer_add");
    group.throughput(Throughput::Elements(flops));
    let mut g = vec![0.0; w.len()];
    for (name, arch) in variants() {
        group.bench_function(BenchmarkId::new(name, &shape), |b| {
            isa::with_arch(arch, || {
                b.iter(|| {
                    sparse::scatter_outer_add(
                        &index,
                        codes.values(),
                        &x,
                        x_layout,
                        1e-6,
                        0..N,
                        &mut g,
                        w_layout,
                    )
                })
            })
        });
    }
    group.bench_function(BenchmarkId::new("reference", &shape), |b| {
        b.iter(|| {
            sparse::reference::scatter_outer_add(
                &codes,
                codes.values(),
                &x,
                x_layout,
                1e-6,
                0..N,
                &mut g,
                w_layout,
            )
        })
    });
    group.finish();

    let mut group = c.benchmark_group("latent_index");
    group.throughput(Throughput::Elements(codes.nnz() as u64));
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

    let mut group = c.benchmark_group("row_norms");
    group.throughput(Throughput::Elements(layout.len() as u64));
    for (name, arch) in variants() {
        group.bench_function(BenchmarkId::new(name, &shape), |b| {
            isa::with_arch(arch, || {
                b.iter(|| unit_norm::row_norms(layout, &w, &mut norms))
            })
        });
    }
    group.bench_function(BenchmarkId::new("reference", &shape), |b| {
        b.iter(|| unit_norm::reference::row_norms(layout, &w, &mut norms))
    });
    group.finish();

    // Normalising unit rows again is what the step does after a small update.
    let mut group = c.benchmark_group("normalize_rows");
    group.throughput(Throughput::Elements(layout.len() as u64));
    buf.copy_from_slice(&unit);
    group.bench_function(BenchmarkId::new("simd", &shape), |b| {
        b.iter(|| unit_norm::normalize_rows(layout, &mut buf))
    });
    group.bench_function(BenchmarkId::new("reference", &shape), |b| {
        b.iter(|| unit_norm::reference::normalize_rows(layout, &mut buf))
    });
    group.finish();

    let mut group = c.benchmark_group("remove_parallel_component");
    group.throughput(Throughput::Elements(layout.len() as u64));
    buf.copy_from_slice(&g);
    group.bench_function(BenchmarkId::new("simd", &shape), |b| {
        b.iter(|| unit_norm::remove_parallel_component(layout, &unit, &mut buf))
    });
    group.bench_function(BenchmarkId::new("reference", &shape), |b| {
        b.iter(|| unit_norm::reference::remove_parallel_component(layout, &unit, &mut buf))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = config();
    targets = selections, products, unit_rows
}
criterion_main!(benches);
