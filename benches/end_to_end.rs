//! Training and inference throughput of whole models, at 1 and 2 threads.
//!
//! `cargo bench -p benches` (add `-- --quick` for one repetition of each).
//!
//! Each case trains on a fixed slice of synthetic 28x28 u8 images (speed does not depend
//! on their content), after one warm-up run, with the repetitions at 1 and 2 threads
//! taken by turns, and reports the minimum and median over the repetitions: seconds,
//! samples/s, GFLOP/s, the share of the machine's FMA peak for the threads used
//! (measured just before and just after each case, the higher taken), and the projected time of one reference epoch
//! (55000 training samples plus 5000 validation samples).

use benches::{
    cached_product_gflops, inference_flops_per_sample, kl_model, measure, measured_fma_peak,
    sgd_trainer, synthetic_images, training_flops_per_sample, with_peak_around, Stats, THREADS,
};
use nn::parallel::Threads;
use nn::{Activation, Autoencoder, ModelConfig};
use std::time::Instant;

fn report(
    peaks: &[f64; 2],
    what: &str,
    samples: usize,
    flops_per_sample: f64,
    threads: usize,
    stats: &Stats,
    epoch_scale: Option<f64>,
) {
    let gflops = flops_per_sample * samples as f64 / stats.min / 1e9;
    let peak = peaks[THREADS
        .iter()
        .position(|&t| t == threads)
        .expect("a measured count")];
    let epoch = epoch_scale.map_or(String::new(), |s| {
        format!("  epoch ~{:.2} s", stats.min * s)
    });
    println!(
        "{what:<44} threads {threads}  min {:.3} s  median {:.3} s  {:>9.0} samples/s  {:>6.1} GFLOP/s  {:>4.0}% of peak{epoch}",
        stats.min,
        stats.median,
        samples as f64 / stats.min,
        gflops,
        100.0 * gflops / peak,
    );
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let reps = if quick { 1 } else { 5 };
    let isa = benches::instruction_set();
    let rounds = if quick { 2 } else { 6 };
    let peaks = THREADS.map(|threads| measured_fma_peak(threads, rounds));
    println!(
        "FMA peak measured now (independent FMA chains, best of several runs, {}): {:.1} GFLOP/s on {} thread, {:.1} on {}",
        isa, peaks[0], THREADS[0], peaks[1], THREADS[1]
    );
    let cached_before = cached_product_gflops(5);
    let reference = kl_model(&[(100, Activation::Selu), (300, Activation::Sigmoid)]);
    let wide = kl_model(&[(400, Activation::Selu), (1200, Activation::Sigmoid)]);
    let cases: [(&str, &ModelConfig, usize, usize); 3] = [
        (
            "train reference 784-100-300-100-784, batch 32",
            &reference,
            32,
            12_800,
        ),
        ("train reference, batch 256", &reference, 256, 12_800),
        (
            "train 4x wide 784-400-1200-400-784, batch 32",
            &wide,
            32,
            3_200,
        ),
    ];
    let data = synthetic_images(12_800);
    for (name, config, batch, samples) in cases {
        let train = data.slice(0..samples);
        let (peaks, stats) = with_peak_around(rounds, || {
            measure(reps, |threads| {
                let mut trainer = sgd_trainer(config, batch, threads);
                let started = Instant::now();
                trainer.fit_epoch(&train, None, &mut ()).unwrap();
                started.elapsed().as_secs_f64()
            })
        });
        for (threads, stats) in THREADS.into_iter().zip(&stats) {
            // One reference epoch: 55000 samples trained and 5000 evaluated (about a
            // third of a training sample's cost each).
            let epoch_samples = 55_000.0 + 5_000.0 / 3.0;
            report(
                &peaks,
                name,
                samples,
                training_flops_per_sample(config),
                threads,
                stats,
                Some(epoch_samples / samples as f64),
            );
        }
    }
    let model = Autoencoder::new(reference.clone(), 1).unwrap();
    let test = data.slice(0..10_000);
    let pools = THREADS.map(|threads| Threads::new(threads).unwrap());
    let (peaks, stats) = with_peak_around(rounds, || {
        measure(reps, |threads| {
            let pool = pools.iter().find(|pool| pool.count() == threads).unwrap();
            let started = Instant::now();
            let evaluation = pool.install(|| model.evaluate_with(pool, &test, 256));
            assert_eq!(evaluation.samples, 10_000);
            started.elapsed().as_secs_f64()
        })
    });
    for (threads, stats) in THREADS.into_iter().zip(&stats) {
        report(
            &peaks,
            "inference (evaluate) reference, batch 256",
            10_000,
            inference_flops_per_sample(&reference),
            threads,
            stats,
            None,
        );
    }
    println!(
        "A cached 32x64x64 product on one thread: {cached_before:.1} GFLOP/s before the cases, {:.1} after (it drops in the machine's slow spells, when the FMA peak does not)",
        cached_product_gflops(5)
    );
}
