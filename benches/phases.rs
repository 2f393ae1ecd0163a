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
    }
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
