//! Where the reference model's training step spends its time, phase by phase and part
//! by part, at 1 and 2 threads: `cargo bench -p benches --bench phases --features
//! phase-times` (add `-- --quick` for fewer epochs).
//!
//! Each thread count trains one warm-up epoch on 12,800 synthetic images (batch 32, 400
//! steps), then several more whose phases [`nn::phase_times`] adds up. For each phase it
//! prints microseconds a step for each part, and for the products GFLOP/s and the share
//! of the FMA peak (measured just before and just after, the higher taken), counting an
//! even share of each product per part (the team cuts layers to within 8 units of even),
//! timed on the slower part.
//!
//! Then it times each kernel of part 0's step alone, at the same shapes, with its
//! operands in cache, and prints their sum: the ceiling of the step's kernels as they are,
//! which the team's gathering, exchanges and waits only take away from.

use benches::{kl_model, sgd_trainer, synthetic_images, with_peak_around, THREADS};
use nn::phase_times::{self, PhaseKind, PhaseTime};
use nn::Activation;
use std::collections::BTreeMap;
use std::time::Instant;

const BATCH: usize = 32;
const SAMPLES: usize = 12_800;

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let epochs = if quick { 3 } else { 10 };
    let isa = benches::instruction_set();
    let config = kl_model(&[(100, Activation::Selu), (300, Activation::Sigmoid)]);
    let data = synthetic_images(SAMPLES);
    let steps = (SAMPLES / BATCH * epochs) as f64;
    for threads in THREADS {
        let mut trainer = sgd_trainer(&config, BATCH, threads);
        trainer.fit_epoch(&data, None, &mut ()).unwrap();
        let (peaks, (wall, times)) = with_peak_around(3, || {
            phase_times::take();
            let started = Instant::now();
            for _ in 0..epochs {
                trainer.fit_epoch(&data, None, &mut ()).unwrap();
            }
            let wall = started.elapsed().as_secs_f64() / steps * 1e6;
            (wall, phase_times::take())
        });
        let peak = peaks[THREADS.iter().position(|&t| t == threads).unwrap()];
        println!(
            "\n{threads} thread(s), {isa}: {wall:.1} us a step over {} steps; FMA peak {peak:.1} GFLOP/s, {:.1} a thread",
            steps as usize,
            peak / threads as f64
        );
        report(&times, &config, threads, steps, peak / threads as f64, wall);
        kernels_alone(&config, threads, peak);
    }
}

/// Part 0's share of `n` items cut into `parts`: the team's cut, to the multiple of 8
/// nearest an even share.
fn first_share(n: usize, parts: usize) -> usize {
    if parts == 1 {
        n
    } else {
        ((n / parts + 4) / 8 * 8).min(n)
    }
}

/// The fastest of several timed runs of `repetitions` calls of `kernel`, in
/// microseconds a call: its operands stay in cache, as nowhere in a step.
fn alone(mut kernel: impl FnMut()) -> f64 {
    let repetitions = 400;
    (0..7)
        .map(|_| {
            let started = Instant::now();
            for _ in 0..repetitions {
                kernel();
            }
            started.elapsed().as_secs_f64() / repetitions as f64 * 1e6
        })
        .fold(f64::MAX, f64::min)
}

/// [`alone`] for a kernel that rewrites its buffer in place, so that each call takes the
/// last one's result: the buffer starts over from `start` every 32 calls, which keeps
/// it away from infinity and the subnormals (slow on some CPUs) at a cost of one copy
/// in 32 calls.
fn alone_in_place(start: &[f32], mut kernel: impl FnMut(&mut [f32])) -> f64 {
    let (mut buffer, mut calls) = (start.to_vec(), 0u32);
    alone(|| {
        calls += 1;
        if calls % 32 == 0 {
            buffer.copy_from_slice(start);
        }
        kernel(&mut buffer)
    })
}

/// Each kernel of part 0's step alone, at its shapes in a team of `parts`, and their
/// sum: what a step would take with no gathering, no partial sums exchanged, no waiting
/// and every operand in cache. Against the peak of `peak` GFLOP/s for all the parts,
/// the share a step at that time would reach: the ceiling of the step's kernels as they
/// are, whatever the team does between them.
fn kernels_alone(config: &nn::ModelConfig, parts: usize, peak: f64) {
    use kernels::activation::{activation_backward, bias_activation_forward};
    use kernels::output::{output_backward, OutputLoss};
    use kernels::reduce::column_sums;
    use kernels::sparsity::kl_sparsity_backward;
    use kernels::{gemm, Layout, MatMut, MatRef};

    let fill = |len: usize, scale: f32| -> Vec<f32> {
        (0..len)
            .map(|i| scale * ((i as f32 * 0.618_034).fract() - 0.3))
            .collect()
    };
    let product = |m: usize, k: usize, n: usize, a_by_columns: bool, b_by_columns: bool| {
        let (a, b) = (fill(m * k, 1.0), fill(k * n, 0.01));
        let mut c = fill(m * n, 0.01);
        let beta = if a_by_columns { 1.0 } else { 0.0 };
        alone(|| {
            let a = if a_by_columns {
                MatRef::row_major(&a, k, m).unwrap().t()
            } else {
                MatRef::row_major(&a, m, k).unwrap()
            };
            let b = if b_by_columns {
                MatRef::row_major(&b, n, k).unwrap().t()
            } else {
                MatRef::row_major(&b, k, n).unwrap()
            };
            gemm(-1e-3, a, b, beta, MatMut::row_major(&mut c, m, n).unwrap()).unwrap();
        })
    };
    let epilogue = |act: Activation, width: usize| {
        let layout = Layout::contiguous(BATCH, width);
        let bias = fill(width, 0.1);
        alone_in_place(&fill(layout.len(), 4.0), |out| {
            bias_activation_forward(act, layout, out, &bias)
        })
    };
    let derivative = |act: Activation, width: usize| {
        let layout = Layout::contiguous(BATCH, width);
        let a = fill(layout.len(), 1.0);
        alone_in_place(&fill(layout.len(), 1e-3), |grad| {
            activation_backward(act, layout, &a, grad)
        })
    };
    let bias_gradient = |width: usize| {
        let layout = Layout::contiguous(BATCH, width);
        let (dz, mut bias) = (fill(layout.len(), 1e-3), fill(width, 0.1));
        alone(|| column_sums(layout, &dz, -1e-3, 1.0, &mut bias))
    };
    let coding_derivative = |width: usize| {
        let layout = Layout::contiguous(BATCH, width);
        let a: Vec<f32> = fill(layout.len(), 0.5).iter().map(|v| v + 0.2).collect();
        let (mut grad, mut scratch) = (fill(layout.len(), 1e-3), vec![0.0; width]);
        alone(|| {
            kl_sparsity_backward(
                Activation::Sigmoid,
                layout,
                &a,
                &mut grad,
                0.1,
                0.05,
                &mut scratch,
            );
        })
    };
    let output_step = |width: usize| {
        let len = BATCH * width;
        let (z, x, mut dz) = (fill(len, 12.0), fill(len, 1.0), vec![0.0; len]);
        let x: Vec<f32> = x.iter().map(|v| v.abs()).collect();
        alone(|| {
            output_backward(
                OutputLoss::SigmoidBinaryCrossEntropy,
                &z,
                &x,
                &mut dz,
                1.0 / len as f32,
            );
        })
    };

    let layers = &config.layers;
    let last = layers.len() - 1;
    let (mut products, mut rest) = (0.0, 0.0);
    // Each product's time alone, named as its phase in the table above.
    let mut each = String::new();
    let mut time_product = |name: &str, l: usize, time: f64| {
        products += time;
        each.push_str(&format!(" {name} {l} {time:.2};"));
    };
    for (l, layer) in layers.iter().enumerate() {
        let by_inputs = l % 2 == 0;
        let (rows, cols) = if by_inputs {
            (first_share(layer.inputs, parts), layer.units)
        } else {
            (layer.inputs, first_share(layer.units, parts))
        };
        time_product("Forward", l, product(BATCH, rows, cols, false, false));
        time_product("WeightGradient", l, product(rows, BATCH, cols, true, false));
        if l > 0 {
            time_product("InputGradient", l, product(BATCH, cols, rows, false, true));
        }
        let stored = if l == last {
            Activation::Linear
        } else {
            layer.activation
        };
        rest += epilogue(stored, cols) + bias_gradient(cols);
        if l == last {
            rest += output_step(cols);
        }
        if l < last {
            // This layer's `dZ` from its `dA`: whole below a layer split by outputs (the
            // next one), its own columns below one split by inputs.
            rest += if l == 1 {
                coding_derivative(cols)
            } else {
                derivative(layer.activation, cols)
            };
        }
    }
    println!("part 0's products alone, us:{each}");
    let flops = benches::training_flops_per_sample(config) * BATCH as f64 / parts as f64;
    let total = products + rest;
    let rate = flops / total / 1e3;
    println!(
        "part 0's kernels alone: products {products:.1} us, the rest {rest:.1} us; a step of \
         only these: {total:.1} us, {:.1} GFLOP/s a part, {:.0}% of the peak",
        rate,
        100.0 * rate * parts as f64 / peak
    );
}

/// Multiply-adds of layer `l`'s product of `kind` for a whole batch.
fn product_macs(config: &nn::ModelConfig, kind: PhaseKind, layer: Option<usize>) -> Option<f64> {
    let spec = &config.layers[layer?];
    matches!(
        kind,
        PhaseKind::Forward | PhaseKind::InputGradient | PhaseKind::WeightGradient
    )
    .then(|| (BATCH * spec.inputs * spec.units) as f64)
}

fn report(
    times: &[PhaseTime],
    config: &nn::ModelConfig,
    parts: usize,
    steps: f64,
    peak_per_thread: f64,
    wall: f64,
) {
    let mut rows: BTreeMap<(usize, Option<usize>), Vec<f64>> = BTreeMap::new();
    for time in times {
        let order = PhaseKind::ALL.iter().position(|&k| k == time.kind).unwrap();
        rows.entry((order, time.layer))
            .or_insert_with(|| vec![0.0; parts])[time.part.min(parts - 1)] +=
            time.seconds / steps * 1e6;
    }
    let mut totals = vec![0.0; parts];
    println!(
        "{:<22} {}  {:>14}",
        "phase",
        (0..parts)
            .map(|p| format!("{:>10}", format!("part {p}")))
            .collect::<String>(),
        "GFLOP/s, peak"
    );
    for ((order, layer), micros) in &rows {
        let kind = PhaseKind::ALL[*order];
        let name = match layer {
            Some(l) => format!("{kind:?} {l}"),
            None => format!("{kind:?}"),
        };
        let rate = product_macs(config, kind, *layer).map_or(String::new(), |macs| {
            let slowest = micros.iter().cloned().fold(0.0, f64::max);
            let gflops = 2.0 * macs / parts as f64 / slowest / 1e3;
            format!("{gflops:>7.1}, {:>3.0}%", 100.0 * gflops / peak_per_thread)
        });
        print!("{name:<22} ");
        for (total, &value) in totals.iter_mut().zip(micros) {
            *total += value;
            print!("{value:>10.2}");
        }
        println!("  {rate:>14}");
    }
    print!("{:<22} ", "sum of phases");
    for total in &totals {
        print!("{total:>10.1}");
    }
    println!("  (wall {wall:.1} us a step)");
}
