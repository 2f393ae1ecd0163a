//! `gemm`, pinned to each SIMD instruction set the CPU has, against `matrixmultiply` at
//! every product of one training step of the reference model (784-100-300-100-784,
//! batch 32, or another with `--batch N`), one thread, and the time of all eleven.
//!
//! `cargo bench -p kernels --bench gemm_compare` (add `-- --quick` for fewer rounds,
//! `-- --batch 256` for that batch size, `-- --sae` for a sparse autoencoder's large
//! products instead, `-- --threads 2` to split each product's rows between that many
//! threads, each running its part of every product of a round, `-- --shape 2048x784x1000`
//! for that one product, `-- --kernel tiled` (or `packed`, `matrixmultiply`) to run
//! `gemm`'s columns on that kernel whatever the shape).
//!
//! The two are run in alternation, a few hundred products at a time, for several rounds,
//! and each keeps its fastest round: on a machine whose speed drifts from one second to
//! the next, a comparison of two long runs made one after the other measures the drift.

use kernels::gemm::{gemm, with_kernel, Kernel, MatMut, MatRef};
use kernels::isa;
use std::hint::black_box;
use std::time::Instant;

/// A product of the step: what it is, `m x k x n`, and which operand is stored
/// transposed (`A` as `k x m`, or `B` as `n x k`).
struct Product {
    name: String,
    m: usize,
    k: usize,
    n: usize,
    transposed_a: bool,
    transposed_b: bool,
}

fn step_products(batch: usize) -> Vec<Product> {
    let layers = [(784, 100), (100, 300), (300, 100), (100, 784)];
    let mut products = Vec::new();
    for (l, &(fan_in, fan_out)) in layers.iter().enumerate() {
        let product = |name: &str, m, k, n, transposed_a, transposed_b| Product {
            name: format!("{name} {fan_in}->{fan_out}"),
            m,
            k,
            n,
            transposed_a,
            transposed_b,
        };
        products.push(product("forward", batch, fan_in, fan_out, false, false));
        products.push(product("weight grad", fan_in, batch, fan_out, true, false));
        if l > 0 {
            products.push(product("input grad", batch, fan_out, fan_in, false, true));
        }
    }
    products
}

/// The products of a sparse autoencoder's step past the tiled kernel's shapes, as one
/// of two threads runs them at batch 4096 (its 2048 rows), `d` 512 and 8192 latents:
/// the encoder (the only large product of a TopK step), and the dense ReLU step's three
/// others.
fn sae_products() -> Vec<Product> {
    let (rows, d, n) = (2048, 512, 8192);
    let product = |name: &str, m, k, n, transposed_a, transposed_b| Product {
        name: name.to_string(),
        m,
        k,
        n,
        transposed_a,
        transposed_b,
    };
    vec![
        product("encoder forward", rows, d, n, false, false),
        product("decoder forward", rows, n, d, false, false),
        product("encoder weight grad", d, rows, n, true, false),
        product("latents' grad", rows, d, n, false, true),
    ]
}

fn fill(len: usize) -> Vec<f32> {
    (0..len)
        .map(|i| -1.0 + 2.0 * (i as f32 * 0.618_034).fract())
        .collect()
}

/// Prints one row: its label, then a value per column, `matrixmultiply`'s (the last) in
/// a narrower column, then `ratio`.
fn print_row(label: &str, shape: &str, values: &[f64], ratio: f64) {
    print!("{label:<24} {shape:>16}");
    for (which, value) in values.iter().enumerate() {
        let width = if which + 1 < values.len() { 22 } else { 16 };
        print!(" {value:>width$.1}");
    }
    println!(" {ratio:>7.2}x");
}

/// The positive number after `flag`, `default` without the flag; exits with a message
/// when the flag has no positive number after it.
fn positive_option(args: &[String], flag: &str, default: usize) -> usize {
    match args.iter().position(|a| a == flag) {
        Some(at) => match args.get(at + 1).and_then(|v| v.parse::<usize>().ok()) {
            Some(value) if value > 0 => value,
            _ => {
                eprintln!("{flag} takes a positive number");
                std::process::exit(2);
            }
        },
        None => default,
    }
}

/// The value after `flag`, if the flag is there; exits with a message when nothing
/// follows it.
fn option<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    let at = args.iter().position(|a| a == flag)?;
    match args.get(at + 1) {
        Some(value) => Some(value),
        None => {
            eprintln!("{flag} takes a value");
            std::process::exit(2);
        }
    }
}

/// `--shape MxKxN`: that one product, `A` and `B` stored by rows.
fn shape_product(shape: &str) -> Product {
    let sizes: Vec<usize> = shape
        .split('x')
        .map(|v| v.parse().ok().filter(|&v: &usize| v > 0))
        .collect::<Option<_>>()
        .filter(|sizes: &Vec<usize>| sizes.len() == 3)
        .unwrap_or_else(|| {
            eprintln!("--shape takes MxKxN, three positive numbers (2048x784x1000)");
            std::process::exit(2);
        });
    Product {
        name: "--shape".to_string(),
        m: sizes[0],
        k: sizes[1],
        n: sizes[2],
        transposed_a: false,
        transposed_b: false,
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let rounds = if quick { 3 } else { 15 };
    let batch = positive_option(&args, "--batch", 32);
    let threads = positive_option(&args, "--threads", 1);
    let kernel = option(&args, "--kernel").map(|name| match name {
        "tiled" => Kernel::Tiled,
        "packed" => Kernel::Packed,
        "matrixmultiply" => Kernel::Matrixmultiply,
        _ => {
            eprintln!("--kernel takes tiled, packed or matrixmultiply");
            std::process::exit(2);
        }
    });
    let products = if let Some(shape) = option(&args, "--shape") {
        vec![shape_product(shape)]
    } else if args.iter().any(|a| a == "--sae") {
        sae_products()
    } else {
        step_products(batch)
    };
    if let Some(kernel) = kernel {
        println!("gemm's columns run on the {kernel:?} kernel, whatever the shape");
    }
    // `gemm` on every SIMD instruction set this CPU has, widest last.
    let arches: Vec<isa::Arch> = isa::available().into_iter().skip(1).collect();
    print!("{:<24} {:>16}", "product", "m x k x n");
    for &arch in &arches {
        print!(" {:>22}", format!("gemm {}", isa::name(arch)));
    }
    println!(" {:>16} {:>8}", "matrixmultiply", "ratio");
    // Seconds of one run of every product, per column.
    let mut totals = vec![0.0; arches.len() + 1];
    for p in products {
        let (m, k, n) = (p.m, p.k, p.n);
        let a = fill(m * k);
        let b = fill(k * n);
        let mut c = vec![0.0f32; m * n];
        let (a_view, (a_rs, a_cs)) = if p.transposed_a {
            (MatRef::row_major(&a, k, m).unwrap().t(), (1, m))
        } else {
            (MatRef::row_major(&a, m, k).unwrap(), (k, 1))
        };
        let (b_view, (b_rs, b_cs)) = if p.transposed_b {
            (MatRef::row_major(&b, n, k).unwrap().t(), (1, k))
        } else {
            (MatRef::row_major(&b, k, n).unwrap(), (n, 1))
        };
        // The weight gradient adds into the weights (the fused SGD step); the others
        // overwrite their output.
        let beta = if p.transposed_a { 1.0 } else { 0.0 };
        // About 0.4 GFLOP a round: 200 of the reference model's products, one of the SAE's.
        let per_round = (4e8 / (2 * m * k * n) as f64).clamp(1.0, 200.0) as usize;
        // One slot per instruction set, then `matrixmultiply`.
        let mut best = vec![f64::MAX; arches.len() + 1];
        // Each thread's rows of `C`, a contiguous run of whole rows.
        let parts: Vec<std::ops::Range<usize>> = (0..threads)
            .map(|t| m * t / threads..m * (t + 1) / threads)
            .collect();
        for _ in 0..rounds {
            for (which, slot) in best.iter_mut().enumerate() {
                let started = Instant::now();
                std::thread::scope(|scope| {
                    let mut rest = c.as_mut_slice();
                    for rows in parts.iter().cloned() {
                        let (c_part, after) =
                            std::mem::take(&mut rest).split_at_mut(rows.len() * n);
                        rest = after;
                        let (a, b, arch) = (&a, &b, arches.get(which).copied());
                        scope.spawn(move || {
                            let a_part = a_view.rows_range(rows.clone());
                            for _ in 0..per_round {
                                if let Some(arch) = arch {
                                    let mut run = || {
                                        let out = MatMut::row_major(c_part, rows.len(), n).unwrap();
                                        gemm(-1e-6, a_part, b_view, beta, out).unwrap();
                                    };
                                    isa::with_arch(arch, || match kernel {
                                        Some(kernel) => with_kernel(kernel, run),
                                        None => run(),
                                    });
                                } else {
                                    // SAFETY: the strides describe the buffers above (or
                                    // their transposes) exactly, the part's rows start
                                    // `rows.start` rows into `A`, and `c_part` is this
                                    // thread's own `rows.len() x n` slice of `C`.
                                    unsafe {
                                        matrixmultiply::sgemm(
                                            rows.len(),
                                            k,
                                            n,
                                            -1e-6,
                                            a.as_ptr().add(rows.start * a_rs),
                                            a_rs as isize,
                                            a_cs as isize,
                                            b.as_ptr(),
                                            b_rs as isize,
                                            b_cs as isize,
                                            beta,
                                            c_part.as_mut_ptr(),
                                            n as isize,
                                            1,
                                        )
                                    };
                                }
                                black_box(&mut *c_part);
                            }
                        });
                    }
                });
                *slot = slot.min(started.elapsed().as_secs_f64());
            }
        }
        let gflops: Vec<f64> = best
            .iter()
            .map(|&seconds| 2.0 * (m * k * n * per_round) as f64 / seconds / 1e9)
            .collect();
        for (total, &seconds) in totals.iter_mut().zip(&best) {
            *total += seconds / per_round as f64;
        }
        // The widest instruction set's `gemm`, as the library dispatches it, against
        // `matrixmultiply`.
        let ratio = best[best.len() - 1] / best[best.len() - 2];
        print_row(&p.name, &format!("{m} x {k} x {n}"), &gflops, ratio);
    }
    let micros: Vec<f64> = totals.iter().map(|seconds| seconds * 1e6).collect();
    let ratio = totals[totals.len() - 1] / totals[totals.len() - 2];
    print_row("all, microseconds", "", &micros, ratio);
}
