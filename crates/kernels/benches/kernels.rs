//! Kernels at the shapes of the reference model (batch 32; widths 100, 300, 784), each
//! as the dispatched SIMD kernel, the same kernel pinned to pulp's scalar path, and the
//! plain scalar reference; and the GEMM at every product of one training step (the
//! `gemm_compare` bench sets it beside `matrixmultiply`).
//!
//! `cargo bench -p kernels` (add a filter such as `-- gemm` to run a part).
//! Throughput is in elements/s, and for the GEMM in FLOP/s (`2 m k n` per call).

use criterion::measurement::WallTime;
use criterion::{
    criterion_group, criterion_main, BenchmarkGroup, BenchmarkId, Criterion, Throughput,
};
use kernels::activation::{self, Activation};
use kernels::gemm::{gemm, MatMut, MatRef};
use kernels::isa::{self, Arch};
use kernels::output::{self, OutputLoss};
use kernels::{gather, reduce, sparsity, Layout};
use std::hint::black_box;
use std::time::Duration;

const BATCH: usize = 32;
const WIDTHS: [usize; 3] = [100, 300, 784];

fn data(len: usize, lo: f32, hi: f32) -> Vec<f32> {
    // A fixed low-discrepancy fill: reproducible, no RNG dependency.
    (0..len)
        .map(|i| lo + (hi - lo) * ((i as f32 * 0.618_034).fract()))
        .collect()
}

/// The dispatched kernel and the same kernel on pulp's scalar path.
fn variants() -> [(&'static str, Arch); 2] {
    [
        ("simd", *isa::available().last().unwrap()),
        ("scalar-path", Arch::Scalar),
    ]
}

/// Benches one step at `size` as each of the [`variants`] of `kernel`, then as
/// `reference`; both are handed `out`, the buffer they write.
fn bench_each<K, R>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    size: usize,
    out: &mut [f32],
    mut kernel: impl FnMut(&mut [f32]) -> K,
    mut reference: impl FnMut(&mut [f32]) -> R,
) {
    for (name, arch) in variants() {
        group.bench_function(BenchmarkId::new(name, size), |b| {
            isa::with_arch(arch, || b.iter(|| kernel(out)))
        });
    }
    group.bench_function(BenchmarkId::new("reference", size), |b| {
        b.iter(|| reference(out))
    });
}

/// [`bench_each`] for a step that works in place: every call first restores the buffer
/// to `start`.
fn bench_in_place<K, R>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    size: usize,
    start: &[f32],
    mut kernel: impl FnMut(&mut [f32]) -> K,
    mut reference: impl FnMut(&mut [f32]) -> R,
) {
    let mut buf = start.to_vec();
    bench_each(
        group,
        size,
        &mut buf,
        |buf| {
            buf.copy_from_slice(start);
            kernel(buf)
        },
        |buf| {
            buf.copy_from_slice(start);
            reference(buf)
        },
    );
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_millis(800))
        .sample_size(20)
}

fn elementwise(c: &mut Criterion) {
    for act in [Activation::Selu, Activation::Sigmoid] {
        let mut group = c.benchmark_group(format!("bias_{act:?}_forward").to_lowercase());
        for width in WIDTHS {
            let layout = Layout::contiguous(BATCH, width);
            let input = data(layout.len(), -3.0, 3.0);
            let bias = data(width, -0.5, 0.5);
            group.throughput(Throughput::Elements(layout.len() as u64));
            bench_in_place(
                &mut group,
                width,
                &input,
                |buf| activation::bias_activation_forward(act, layout, buf, &bias),
                |buf| activation::reference::bias_activation_forward(act, layout, buf, &bias),
            );
        }
        group.finish();

        let mut group = c.benchmark_group(format!("{act:?}_backward").to_lowercase());
        for width in WIDTHS {
            let layout = Layout::contiguous(BATCH, width);
            let out = data(layout.len(), -1.0, 1.0);
            let grad = data(layout.len(), -1.0, 1.0);
            group.throughput(Throughput::Elements(layout.len() as u64));
            bench_in_place(
                &mut group,
                width,
                &grad,
                |buf| activation::activation_backward(act, layout, &out, buf),
                |buf| activation::reference::activation_backward(act, layout, &out, buf),
            );
        }
        group.finish();
    }
}

/// The sparsity penalties, each fused with a sigmoid coding layer's backward.
#[derive(Clone, Copy)]
enum Penalty {
    Kl,
    L1,
    L2,
    Squared,
}

impl Penalty {
    fn name(self) -> &'static str {
        match self {
            Penalty::Kl => "kl",
            Penalty::L1 => "l1",
            Penalty::L2 => "l2",
            Penalty::Squared => "squared",
        }
    }

    /// The kernel's step (`scratch` is used by the penalties of the column means only).
    fn step(self, layout: Layout, a: &[f32], grad: &mut [f32], scratch: &mut [f32]) -> f64 {
        let act = Activation::Sigmoid;
        match self {
            Penalty::Kl => sparsity::kl_sparsity_backward(act, layout, a, grad, 0.1, 0.05, scratch),
            Penalty::L1 => sparsity::l1_sparsity_backward(act, layout, a, grad, 1e-3),
            Penalty::L2 => sparsity::l2_sparsity_backward(act, layout, a, grad, 1e-3),
            Penalty::Squared => {
                sparsity::squared_sparsity_backward(act, layout, a, grad, 0.1, 0.05, scratch)
            }
        }
    }

    /// The reference's step.
    fn reference(self, layout: Layout, a: &[f32], grad: &mut [f32]) -> f64 {
        let act = Activation::Sigmoid;
        match self {
            Penalty::Kl => {
                sparsity::reference::kl_sparsity_backward(act, layout, a, grad, 0.1, 0.05)
            }
            Penalty::L1 => sparsity::reference::l1_sparsity_backward(act, layout, a, grad, 1e-3),
            Penalty::L2 => sparsity::reference::l2_sparsity_backward(act, layout, a, grad, 1e-3),
            Penalty::Squared => {
                sparsity::reference::squared_sparsity_backward(act, layout, a, grad, 0.1, 0.05)
            }
        }
    }
}

fn sparsity_steps(c: &mut Criterion) {
    // The L2 and squared mean-target penalties at the reference model's coding layer only.
    for (penalty, widths) in [
        (Penalty::Kl, &WIDTHS[..]),
        (Penalty::L1, &WIDTHS[..]),
        (Penalty::L2, &[300][..]),
        (Penalty::Squared, &[300][..]),
    ] {
        let mut group = c.benchmark_group(format!("{}_sigmoid_backward", penalty.name()));
        for &width in widths {
            let layout = Layout::contiguous(BATCH, width);
            let a = data(layout.len(), 0.01, 0.3);
            let grad = data(layout.len(), -1e-3, 1e-3);
            let mut scratch = vec![0.0; width];
            group.throughput(Throughput::Elements(layout.len() as u64));
            bench_in_place(
                &mut group,
                width,
                &grad,
                |buf| penalty.step(layout, &a, buf, &mut scratch),
                |buf| penalty.reference(layout, &a, buf),
            );
        }
        group.finish();
    }
}

fn output_step(c: &mut Criterion) {
    let mut group = c.benchmark_group("sigmoid_bce_output");
    for width in WIDTHS {
        let len = BATCH * width;
        let z = data(len, -6.0, 6.0);
        let x = data(len, 0.0, 1.0);
        let mut grad = vec![0.0; len];
        let scale = 1.0 / len as f32;
        group.throughput(Throughput::Elements(len as u64));
        let loss = OutputLoss::SigmoidBinaryCrossEntropy;
        bench_each(
            &mut group,
            width,
            &mut grad,
            |grad| output::output_backward(loss, &z, &x, grad, scale),
            |grad| output::reference::output_backward(loss, &z, &x, Some(grad), scale),
        );
    }
    group.finish();
}

fn gather_and_reduce(c: &mut Criterion) {
    let mut group = c.benchmark_group("gather_u8_rows");
    let source: Vec<u8> = (0..60_000 * 784).map(|i| (i * 7 % 256) as u8).collect();
    let rows: Vec<usize> = (0..BATCH).map(|i| (i * 1871) % 60_000).collect();
    let mut out = vec![0.0; BATCH * 784];
    group.throughput(Throughput::Elements(out.len() as u64));
    bench_each(
        &mut group,
        784,
        &mut out,
        |out| gather::gather_u8_rows(&source, 784, &rows, 1.0 / 255.0, out),
        |out| gather::reference::gather_u8_rows(&source, 784, &rows, 1.0 / 255.0, out),
    );
    group.finish();

    let mut group = c.benchmark_group("column_sums");
    for width in WIDTHS {
        let layout = Layout::contiguous(BATCH, width);
        let m = data(layout.len(), -1.0, 1.0);
        let mut out = vec![0.0; width];
        group.throughput(Throughput::Elements(layout.len() as u64));
        bench_each(
            &mut group,
            width,
            &mut out,
            |out| reduce::column_sums(layout, &m, -0.01, 1.0, out),
            |out| reduce::reference::column_sums(layout, &m, -0.01, 1.0, out),
        );
    }
    group.finish();
}

/// `(name, m, k, n, transpose_a, transpose_b)` of every product in one training step.
fn step_products() -> Vec<(String, usize, usize, usize, bool, bool)> {
    let layers = [(784, 100), (100, 300), (300, 100), (100, 784)];
    let mut products = Vec::new();
    for (i, &(fan_in, fan_out)) in layers.iter().enumerate() {
        products.push((
            format!("forward_{fan_in}x{fan_out}"),
            BATCH,
            fan_in,
            fan_out,
            false,
            false,
        ));
        products.push((
            format!("weight_grad_{fan_in}x{fan_out}"),
            fan_in,
            BATCH,
            fan_out,
            true,
            false,
        ));
        if i > 0 {
            products.push((
                format!("input_grad_{fan_in}x{fan_out}"),
                BATCH,
                fan_out,
                fan_in,
                false,
                true,
            ));
        }
    }
    products
}

fn gemm_shapes(c: &mut Criterion) {
    let mut group = c.benchmark_group("gemm");
    for (name, m, k, n, transpose_a, transpose_b) in step_products() {
        let a_data = data(m * k, -1.0, 1.0);
        let b_data = data(k * n, -1.0, 1.0);
        let mut c_data = vec![0.0; m * n];
        let a = if transpose_a {
            MatRef::row_major(&a_data, k, m).unwrap().t()
        } else {
            MatRef::row_major(&a_data, m, k).unwrap()
        };
        let b = if transpose_b {
            MatRef::row_major(&b_data, n, k).unwrap().t()
        } else {
            MatRef::row_major(&b_data, k, n).unwrap()
        };
        // The weight gradient adds into the weights (fused SGD); the others overwrite.
        let beta = if transpose_a { 1.0 } else { 0.0 };
        group.throughput(Throughput::Elements((2 * m * k * n) as u64));
        group.bench_function(BenchmarkId::new("flops", &name), |bench| {
            bench.iter(|| {
                gemm(
                    -1e-6,
                    a,
                    b,
                    beta,
                    MatMut::row_major(&mut c_data, m, n).unwrap(),
                )
                .unwrap();
                black_box(&c_data);
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = config();
    targets = elementwise, sparsity_steps, output_step, gather_and_reduce, gemm_shapes
}
criterion_main!(benches);
