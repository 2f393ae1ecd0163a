//! Prints the worst error of the vectorised `exp`, `ln`, sigmoid and SELU on each
//! instruction set, over a sweep of the whole f32 range.
//!
//! `cargo run -p kernels --release --example accuracy`

use kernels::activation::{activation_forward, reference, Activation};
use kernels::isa;
use kernels::math;

fn ulp_distance(a: f32, b: f32) -> u64 {
    if a.is_nan() && b.is_nan() {
        return 0;
    }
    fn ordered(v: f32) -> i64 {
        let bits = v.to_bits() as i32;
        i64::from(if bits < 0 { i32::MIN - bits } else { bits })
    }
    (ordered(a) - ordered(b)).unsigned_abs()
}

fn worst(x: &[f32], got: &[f32], want: impl Fn(f32) -> f32) -> (u64, f32, f64, f32) {
    let mut worst_ulp = (0, 0.0);
    let mut worst_abs = (0.0f64, 0.0);
    for (&v, &g) in x.iter().zip(got) {
        let w = want(v);
        let d = ulp_distance(g, w);
        if d > worst_ulp.0 {
            worst_ulp = (d, v);
        }
        let a = (f64::from(g) - f64::from(w)).abs();
        if a > worst_abs.0 {
            worst_abs = (a, v);
        }
    }
    (worst_ulp.0, worst_ulp.1, worst_abs.0, worst_abs.1)
}

fn main() {
    let all: Vec<f32> = (0..=u32::MAX)
        .step_by(7)
        .map(f32::from_bits)
        .filter(|v| v.is_finite())
        .collect();
    let positive: Vec<f32> = all
        .iter()
        .copied()
        .filter(|v| v.is_normal() && *v > 0.0)
        .collect();
    let moderate: Vec<f32> = all.iter().copied().filter(|v| v.abs() < 100.0).collect();
    println!("{} finite inputs (every 7th bit pattern)", all.len());
    for arch in isa::available() {
        isa::with_arch(arch, || {
            let mut out = vec![0.0; all.len()];
            math::exp(&all, &mut out);
            let (u, at, _, _) = worst(&all, &out, f32::exp);
            println!(
                "{:>20}  exp      worst {u} ulp (x = {at:e}) vs f32::exp",
                isa::name(arch)
            );

            let mut out = vec![0.0; positive.len()];
            math::ln(&positive, &mut out);
            let (u, at, a, at_a) = worst(&positive, &out, f32::ln);
            println!(
                "{:>20}  ln       worst {u} ulp (x = {at:e}), worst abs {a:.2e} (x = {at_a:e}) vs f32::ln",
                isa::name(arch)
            );

            for act in [Activation::Sigmoid, Activation::Selu] {
                let mut out = moderate.clone();
                activation_forward(act, &mut out);
                let (u, at, a, at_a) = worst(&moderate, &out, |v| reference::forward(act, v));
                println!(
                    "{:>20}  {act:?}  worst {u} ulp (x = {at:e}), worst abs {a:.2e} (x = {at_a:e}) vs f64, |x| < 100",
                    isa::name(arch)
                );
            }
        });
    }
}
