//! Training throughput of the sparse autoencoders of interpretability research, at 1 and
//! 2 threads: `cargo bench -p benches --bench sae` (add `-- --quick` for one repetition,
//! and words such as `topk` or `8192` to run only the cases whose label holds one).
//!
//! Every case is d_in 512, batch 4096, Adam, on synthetic activations (sparse
//! combinations of 4096 unit directions; the speed does not depend on them): TopK,
//! BatchTopK and JumpReLU at an L0 of 32 of 8192 latents, ReLU+L1 (dense), and TopK at
//! 32768 latents. Each run times three steps of a fresh model after one untimed step, after one warm-up
//! run;
//! repetitions at 1 and 2 threads are taken by turns. A row's FLOPs are counted as the
//! step needs them: `2 d N` for the dense encoder product and `8 d L0` for the decoder, its
//! gradient, the codes' gradient and the encoder's gradient on the active latents only
//! (`10 d N` for ReLU, whose codes are dense), plus Adam's ten per parameter and step
//! spread over the batch's rows. The share of peak is over the FMA peak of the same
//! number of threads measured just before and just after each case, the higher taken.

use benches::{measured_fma_peak, Stats, THREADS};
use nn::sae::{input_scale, SaeConfig};
use nn::synthetic::{superposition, SuperpositionSpec};
use nn::{Autoencoder, Dataset, ModelConfig, Optimizer, TrainConfig, Trainer};
use std::time::Instant;

const D: usize = 512;
const K: usize = 32;
const BATCH: usize = 4096;
const STEPS: usize = 3;
/// Adam's FLOPs per parameter and step (two moments, the bias corrections folded in,
/// the square root and the division).
const ADAM_FLOPS: f64 = 10.0;

struct Case {
    name: &'static str,
    sae: SaeConfig,
    latents: usize,
    /// Whether the codes are dense (ReLU+L1), so that every FLOP counts.
    dense: bool,
}

/// An SAE of `case` for `rows`, with its input scale estimated on the first batch, and
/// for JumpReLU the thresholds set so that `K` latents a row fire at the start.
fn model(case: &Case, rows: &[f32]) -> Autoencoder {
    let sample = &rows[..BATCH * D];
    let mut sae = case.sae;
    sae.input_scale = input_scale(sample, D);
    let config = ModelConfig::sae(D, case.latents, sae);
    let mut model = Autoencoder::new_sae(config, 1, sample).expect("a valid SAE");
    if let Some(name) = sae.threshold_tensor().filter(|&n| n == "log_threshold") {
        let set = |model: &mut Autoencoder, theta: f32| {
            for t in model.parameters_mut().iter_mut() {
                if t.name() == name {
                    t.values.fill(theta.ln());
                }
            }
        };
        // Every positive pre-activation of 256 rows, then the threshold above which
        // K a row lie.
        set(&mut model, 1e-30);
        let probe = Dataset::from_f32(rows[..256 * D].to_vec(), D);
        let mut codes: Vec<f32> = model
            .encode(&probe, 256)
            .into_iter()
            .filter(|&v| v > 0.0)
            .collect();
        codes.sort_by(|a, b| b.total_cmp(a));
        set(&mut model, codes[(K * 256).min(codes.len() - 1)]);
    }
    model
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    // Arguments other than flags pick the cases whose label holds one of them.
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with("--")).collect();
    let reps = if quick { 1 } else { 3 };
    let isa = benches::instruction_set();
    let rounds = if quick { 2 } else { 6 };
    let peaks = THREADS.map(|threads| measured_fma_peak(threads, rounds));
    println!(
        "FMA peak measured now (independent FMA chains, best of several runs, {}): {:.1} GFLOP/s on {} thread, {:.1} on {}",
        isa, peaks[0], THREADS[0], peaks[1], THREADS[1]
    );
    let rows = STEPS * BATCH;
    let data = superposition(SuperpositionSpec {
        dim: D,
        features: 4096,
        rows,
        active: 8.0,
        noise: 0.01,
        seed: 3,
    })
    .rows;
    let train = Dataset::from_f32(data.clone(), D);
    let cases = [
        Case {
            name: "topk",
            sae: SaeConfig::topk(K, D),
            latents: 8192,
            dense: false,
        },
        Case {
            name: "batchtopk",
            sae: SaeConfig::batchtopk(K, D),
            latents: 8192,
            dense: false,
        },
        Case {
            name: "jumprelu",
            sae: SaeConfig::jumprelu(1.0),
            latents: 8192,
            dense: false,
        },
        Case {
            name: "relu",
            sae: SaeConfig::relu(5.0, 0),
            latents: 8192,
            dense: true,
        },
        Case {
            name: "topk",
            sae: SaeConfig::topk(K, D),
            latents: 32768,
            dense: false,
        },
    ];
    for case in &cases {
        let label = format!("{} {}", case.name, case.latents);
        if !filters.is_empty() && !filters.iter().any(|f| label.contains(f.as_str())) {
            continue;
        }
        let mut l0 = 0.0;
        let (peaks, stats) = benches::with_peak_around(rounds, || {
            benches::measure(reps, |threads| {
                let model = model(case, &data);
                let settings = TrainConfig {
                    epochs: 1,
                    batch_size: BATCH,
                    shuffle: false,
                    shuffle_window_bytes: None,
                    seed: 1,
                    optimizer: Optimizer::adam(2e-4),
                    threads,
                };
                let mut trainer = Trainer::new(model, settings).expect("an SAE trains");
                // One untimed step first: the buffers and Adam's moments are allocated and
                // first touched in it, once per run however long.
                let first = train.slice(0..BATCH);
                trainer
                    .fit_epoch(&first, None, &mut ())
                    .expect("no divergence");
                let started = Instant::now();
                trainer
                    .fit_epoch(&train, None, &mut ())
                    .expect("no divergence");
                let seconds = started.elapsed().as_secs_f64();
                let probe = train.slice(0..BATCH);
                l0 = trainer.model().evaluate(&probe, 256).l0;
                seconds
            })
        });
        let n = case.latents as f64;
        let d = D as f64;
        let params = 2.0 * d * n + n + d;
        let active = if case.dense { n } else { l0.max(1.0) };
        let flops_per_row = if case.dense {
            10.0 * d * n
        } else {
            2.0 * d * n + 8.0 * d * active
        } + ADAM_FLOPS * params / BATCH as f64;
        for (threads, stats) in THREADS.into_iter().zip(&stats) {
            report(case, threads, stats, rows, flops_per_row, l0, &peaks);
        }
    }
}

fn report(
    case: &Case,
    threads: usize,
    stats: &Stats,
    rows: usize,
    flops_per_row: f64,
    l0: f64,
    peaks: &[f64; 2],
) {
    let gflops = flops_per_row * rows as f64 / stats.min / 1e9;
    let peak = peaks[THREADS
        .iter()
        .position(|&t| t == threads)
        .expect("a measured count")];
    println!(
        "{:<10} d {D} N {:<5} L0 {:>6.1} batch {BATCH}  threads {threads}  min {:.3} s  median {:.3} s  {:>7.0} rows/s  {:>6.1} GFLOP/s  {:>4.0}% of peak",
        case.name,
        case.latents,
        l0,
        stats.min,
        stats.median,
        rows as f64 / stats.min,
        gflops,
        100.0 * gflops / peak,
    );
}
