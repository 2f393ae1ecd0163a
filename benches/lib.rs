//! Shared pieces of the end-to-end benchmarks: the FLOP count of a model's training step
//! and inference pass, the machine's FMA peak they are compared with, measured when the
//! benchmark runs, and the timing of repetitions by turns.

use nn::{
    Activation, Autoencoder, Dataset, Loss, ModelConfig, Optimizer, Penalty, TrainConfig, Trainer,
};
use pulp::{Simd, WithSimd};
use std::time::Instant;

/// Pixels of a Fashion-MNIST image.
const FEATURES: usize = 784;

/// `samples` images of random 28x28 u8 pixels (training speed does not depend on their
/// content), from a fixed xorshift stream: reproducible without an RNG dependency.
pub fn synthetic_images(samples: usize) -> Dataset {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let bytes = (0..samples * FEATURES)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 56) as u8
        })
        .collect();
    Dataset::from_u8(bytes, FEATURES)
}

/// A trainer of a fresh `config` model (seed 1) by plain SGD at rate 1, one shuffled
/// epoch per `fit_epoch`: the team's engine, as the reference model trains.
pub fn sgd_trainer(config: &ModelConfig, batch_size: usize, threads: usize) -> Trainer {
    let model = Autoencoder::new(config.clone(), 1).unwrap();
    let settings = TrainConfig {
        epochs: 1,
        batch_size,
        shuffle: true,
        shuffle_window_bytes: None,
        seed: 1,
        optimizer: Optimizer::sgd(1.0),
        threads,
    };
    Trainer::new(model, settings).unwrap()
}

/// The reference model's kind: 784 pixels through `encoder` (and its mirror), a KL
/// sparsity penalty (target 0.1, weight 0.05) and binary cross-entropy.
pub fn kl_model(encoder: &[(usize, Activation)]) -> ModelConfig {
    ModelConfig::autoencoder(
        FEATURES,
        encoder,
        None,
        Penalty::Kl {
            target: 0.1,
            weight: 0.05,
        },
        Loss::Bce,
    )
}

/// Independent accumulators of [`FmaChains`]: more than FMA latency times FMA pipes on
/// current x86 cores (4 x 2), so the chains never wait on each other.
const CHAINS: usize = 12;

/// `iterations` rounds of one FMA on each of [`CHAINS`] registers, in the instruction set
/// the kernels use (the widest the CPU offers, unless `SAE_SIMD` narrows it).
struct FmaChains {
    iterations: u64,
}

impl WithSimd for FmaChains {
    /// The chains' sum (so the work cannot be dropped) and the f32 lanes per register.
    type Output = (f32, usize);

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) -> Self::Output {
        let mut acc = [simd.splat_f32s(0.0); CHAINS];
        let scale = simd.splat_f32s(0.999_999_9);
        let step = simd.splat_f32s(1e-7);
        for _ in 0..self.iterations {
            for acc in &mut acc {
                *acc = simd.mul_add_f32s(*acc, scale, step);
            }
        }
        let total = acc
            .iter()
            .fold(simd.splat_f32s(0.0), |s, &a| simd.add_f32s(s, a));
        (simd.reduce_sum_f32s(total), S::F32_LANES)
    }
}

/// GFLOP/s of one thread running FMA chains for `iterations` rounds.
fn fma_chains_gflops(iterations: u64) -> f64 {
    let started = Instant::now();
    let (sum, lanes) = kernels::isa::current().dispatch(FmaChains {
        iterations: std::hint::black_box(iterations),
    });
    std::hint::black_box(sum);
    let flops = 2.0 * (iterations * (CHAINS * lanes) as u64) as f64;
    flops / started.elapsed().as_secs_f64() / 1e9
}

/// The instruction set the kernels run on, for the reports; exits with a message when
/// `SAE_SIMD` asks for one this CPU lacks.
pub fn instruction_set() -> &'static str {
    if let Err(e) = kernels::isa::requested() {
        eprintln!("error: {e}");
        std::process::exit(2);
    }
    kernels::isa::name(kernels::isa::current())
}

/// Runs `case`, and the FMA peak of 1 and 2 threads ([`THREADS`]) just before and just
/// after it, of which it returns the higher for each count with the case's result: on a
/// shared machine whose speed swings within a minute, a peak taken once at the start can
/// fall in a slow spell and flatter every case after it. The peak used is printed.
pub fn with_peak_around<R>(rounds: usize, case: impl FnOnce() -> R) -> ([f64; 2], R) {
    let before = THREADS.map(|threads| measured_fma_peak(threads, rounds));
    let result = case();
    let after = THREADS.map(|threads| measured_fma_peak(threads, rounds));
    let peaks = [before[0].max(after[0]), before[1].max(after[1])];
    println!(
        "  FMA peak around the case (the higher of before and after): {:.1} GFLOP/s on {} thread, {:.1} on {}",
        peaks[0], THREADS[0], peaks[1], THREADS[1]
    );
    (peaks, result)
}

/// The f32 FMA peak of `threads` cores of this machine right now, in GFLOP/s: the best of
/// `rounds` runs of independent FMA chains (about 0.05 s each) on `threads` threads at
/// once, summed over the threads. Only registers are touched, so this is the ceiling of
/// the arithmetic, whatever the memory and the caches do.
pub fn measured_fma_peak(threads: usize, rounds: usize) -> f64 {
    const ITERATIONS: u64 = 10_000_000;
    (0..rounds.max(1))
        .map(|_| {
            std::thread::scope(|scope| {
                let runs: Vec<_> = (0..threads.max(1))
                    .map(|_| scope.spawn(|| fma_chains_gflops(ITERATIONS)))
                    .collect();
                runs.into_iter()
                    .map(|run| run.join().expect("FMA chains do not panic"))
                    .sum::<f64>()
            })
        })
        .fold(0.0, f64::max)
}

/// Multiply-adds of one sample through every layer: `sum_l inputs_l * units_l`.
pub fn macs_per_sample(config: &ModelConfig) -> f64 {
    config
        .layers
        .iter()
        .map(|l| (l.inputs * l.units) as f64)
        .sum()
}

/// FLOPs of training one sample: the forward product, the weight gradient, and the input
/// gradient of every layer but the first (2 FLOPs per multiply-add).
pub fn training_flops_per_sample(config: &ModelConfig) -> f64 {
    let all = macs_per_sample(config);
    let first = (config.layers[0].inputs * config.layers[0].units) as f64;
    2.0 * (all + all + (all - first))
}

/// FLOPs of one sample's forward pass.
pub fn inference_flops_per_sample(config: &ModelConfig) -> f64 {
    2.0 * macs_per_sample(config)
}

/// GFLOP/s of one thread running our GEMM on a 32 x 64 by 64 x 64 product whose operands
/// stay in L1: the best of `rounds` runs of about 0.02 s. Unlike [`measured_fma_peak`] it
/// loads from cache, so it falls when the machine is in one of its slow spells (on this
/// shared virtual machine by a quarter or more) while the FMA peak stays: printed beside
/// the results, it tells a slow spell from a slow build.
pub fn cached_product_gflops(rounds: usize) -> f64 {
    use kernels::gemm::{gemm, MatMut, MatRef};
    const M: usize = 32;
    const K: usize = 64;
    const N: usize = 64;
    const REPS: usize = 2000;
    let a: Vec<f32> = (0..M * K).map(|i| (i % 7) as f32 * 0.1).collect();
    let b: Vec<f32> = (0..K * N).map(|i| (i % 5) as f32 * 0.1).collect();
    let mut c = vec![0.0f32; M * N];
    let a = MatRef::row_major(&a, M, K).expect("sized");
    let b = MatRef::row_major(&b, K, N).expect("sized");
    (0..rounds.max(1))
        .map(|_| {
            let started = Instant::now();
            for _ in 0..REPS {
                let c = MatMut::row_major(&mut c, M, N).expect("sized");
                gemm(1.0, a, b, 0.0, c).expect("shapes chain");
            }
            std::hint::black_box(&c);
            2.0 * (M * K * N * REPS) as f64 / started.elapsed().as_secs_f64() / 1e9
        })
        .fold(0.0, f64::max)
}

/// The fastest and the median of a case's repetitions, in seconds.
pub struct Stats {
    /// The fastest.
    pub min: f64,
    /// The median.
    pub median: f64,
}

/// Times `run` at each thread count of [`THREADS`], after one warm-up run each, with
/// the repetitions taken by turns (1, 2, 1, 2, ...): this machine's speed drifts over
/// seconds, and by turns a slow spell hits both thread counts alike rather than one.
pub fn measure(reps: usize, mut run: impl FnMut(usize) -> f64) -> [Stats; 2] {
    let mut times = [Vec::new(), Vec::new()];
    for rep in 0..=reps {
        for (slot, &threads) in THREADS.iter().enumerate() {
            let seconds = run(threads);
            if rep > 0 {
                times[slot].push(seconds);
            }
        }
    }
    times.map(|mut times| {
        times.sort_by(f64::total_cmp);
        Stats {
            min: times[0],
            median: times[times.len() / 2],
        }
    })
}

/// The thread counts every case runs at.
pub const THREADS: [usize; 2] = [1, 2];

#[cfg(test)]
mod tests {
    #[test]
    fn fma_chains_count_what_they_compute() {
        // 12 chains of one FMA per round: the sum after n rounds of `a <- a s + t` from 0
        // is t (1 - s^n) / (1 - s) per lane; the chains must really have run.
        let (sum, lanes) = pulp::Arch::new().dispatch(super::FmaChains { iterations: 1000 });
        let (s, t) = (0.999_999_9f32 as f64, 1e-7f32 as f64);
        let expected = (super::CHAINS * lanes) as f64 * t * (1.0 - s.powi(1000)) / (1.0 - s);
        assert!(
            ((sum as f64) - expected).abs() < 1e-3 * expected,
            "{sum} vs {expected}"
        );
        let peak = super::measured_fma_peak(1, 1);
        assert!(peak.is_finite() && peak > 0.0, "{peak}");
        let cached = super::cached_product_gflops(1);
        assert!(cached.is_finite() && cached > 0.0, "{cached}");
    }

    #[test]
    fn reference_step_costs_what_the_design_notes_say() {
        // 36.6 MFLOP per step of 32 samples.
        let per_step = super::training_flops_per_sample(&nn::ModelConfig::reference()) * 32.0;
        assert!((per_step / 1e6 - 36.6).abs() < 0.1, "{per_step}");
    }
}
