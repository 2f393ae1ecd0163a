//! Shared pieces of the end-to-end benchmarks: the FLOP count of a model's training step
//! and inference pass, and the machine's FMA peak they are compared with.

use nn::ModelConfig;

/// Peak f32 FMA throughput of one core of the reference machine (AMD EPYC Zen 4), from a
/// micro-benchmark of independent FMA chains (see the design notes), in GFLOP/s.
pub const PEAK_GFLOPS_PER_CORE: f64 = 116.0;

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

#[cfg(test)]
mod tests {
    #[test]
    fn reference_step_costs_what_the_design_notes_say() {
        // 36.6 MFLOP per step of 32 samples.
        let per_step = super::training_flops_per_sample(&nn::ModelConfig::reference()) * 32.0;
        assert!((per_step / 1e6 - 36.6).abs() < 0.1, "{per_step}");
    }
}
