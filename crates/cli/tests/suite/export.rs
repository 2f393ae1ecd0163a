//! `sae export` against an independent reading of its files: small SAEs of every architecture
//! (with an input scale, non-zero biases and `W_enc != W_dec^T`, so that the folding is
//! exercised) are exported for SAELens and sparsify, and a Python script
//! (`export_check.py`, numpy + safetensors) encodes raw rows with the exported weights as
//! those tools do and compares with `sae encode`'s codes, and decodes them against the
//! model's reconstructions.
//!
//! The interpreter is `$SAE_TEST_PYTHON`, else `python3`; without numpy or safetensors
//! the test fails, saying how to install them (`.ci/run` makes a venv for it).

use crate::common::{fails_with, sae, text};
use nn::sae::{Arch, SaeConfig};
use nn::{Autoencoder, Dataset, ModelConfig};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;

const CHECK_SCRIPT: &str = include_str!("export_check.py");
const HOOK: &str = "blocks.3.hook_resid_post";
const HOOKPOINT: &str = "layers.3";

/// Uniform values in `[lo, hi)` from a SplitMix64 stream.
struct Uniform(u64);

impl Uniform {
    fn next(&mut self, lo: f32, hi: f32) -> f32 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        lo + (hi - lo) * ((z >> 40) as f32 / (1u64 << 24) as f32)
    }
}

struct Case {
    name: &'static str,
    arch: Arch,
    apply_b_dec_to_input: bool,
    d: usize,
    n: usize,
    k: usize,
    scale: f32,
}

const CASES: [Case; 6] = [
    Case {
        name: "topk",
        arch: Arch::TopK,
        apply_b_dec_to_input: true,
        d: 24,
        n: 96,
        k: 8,
        scale: 0.37,
    },
    Case {
        name: "topk-no-b_dec-subtraction",
        arch: Arch::TopK,
        apply_b_dec_to_input: false,
        d: 16,
        n: 48,
        k: 6,
        scale: 2.5,
    },
    Case {
        name: "relu",
        arch: Arch::Relu,
        apply_b_dec_to_input: false,
        d: 24,
        n: 64,
        k: 0,
        scale: 0.37,
    },
    Case {
        name: "relu-b_dec-subtracted",
        arch: Arch::Relu,
        apply_b_dec_to_input: true,
        d: 16,
        n: 40,
        k: 0,
        scale: 2.5,
    },
    Case {
        name: "batchtopk",
        arch: Arch::BatchTopK,
        apply_b_dec_to_input: true,
        d: 24,
        n: 64,
        k: 6,
        scale: 0.37,
    },
    Case {
        name: "jumprelu",
        arch: Arch::JumpRelu,
        apply_b_dec_to_input: false,
        d: 16,
        n: 48,
        k: 0,
        scale: 2.5,
    },
];

const ROWS: usize = 200;

/// Rows of raw activations: a mean per feature in `[1, 4)` plus noise in `[-2, 2)`.
fn rows(d: usize, rng: &mut Uniform) -> Vec<f32> {
    let means: Vec<f32> = (0..d).map(|_| rng.next(1.0, 4.0)).collect();
    (0..ROWS * d)
        .map(|e| means[e % d] + rng.next(-2.0, 2.0))
        .collect()
}

/// The case's SAE, initialised on `sample` (so `b_dec` is its scaled geometric median),
/// then with `W_enc` moved off `W_dec^T`, `b_enc` made non-zero and thresholds that
/// differ per latent and cut some codes.
fn model(case: &Case, sample: &[f32], rng: &mut Uniform) -> Autoencoder {
    let mut sae = match case.arch {
        Arch::TopK => SaeConfig::topk(case.k, case.d),
        Arch::BatchTopK => SaeConfig::batchtopk(case.k, case.d),
        Arch::Relu => SaeConfig::relu(1.0, 0),
        Arch::JumpRelu => SaeConfig::jumprelu(1.0),
    };
    sae.input_scale = case.scale;
    sae.apply_b_dec_to_input = case.apply_b_dec_to_input;
    let config = ModelConfig::sae(case.d, case.n, sae);
    let mut model = Autoencoder::new_sae(config, 5, sample).unwrap();
    for t in model.parameters_mut().iter_mut() {
        match t.name() {
            "layers.0.weight" => t.values.iter_mut().for_each(|v| *v += rng.next(-0.2, 0.2)),
            "layers.0.bias" => t.values.iter_mut().for_each(|v| *v += rng.next(-0.5, 0.5)),
            "threshold" => t.values.iter_mut().for_each(|v| *v = rng.next(0.05, 1.0)),
            "log_threshold" => t.values.iter_mut().for_each(|v| *v = rng.next(-3.0, 0.0)),
            _ => {}
        }
    }
    model
}

fn path_str(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[track_caller]
fn succeeds(args: &[&str]) {
    let out = sae(args);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{args:?}: {stdout}{stderr}");
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn python() -> String {
    std::env::var("SAE_TEST_PYTHON").unwrap_or_else(|_| "python3".into())
}

#[test]
fn exports_encode_raw_rows_as_sae_encode_does() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let mut rng = Uniform(2024);
    let mut checks = Vec::new();
    for case in &CASES {
        let base = root.join(case.name);
        std::fs::create_dir(&base).unwrap();
        let x = rows(case.d, &mut rng);
        let model = model(case, &x[..64 * case.d], &mut rng);
        let model_path = base.join("model.safetensors");
        nn::checkpoint::save(&model, &model_path, &[]).unwrap();
        let rows_path = base.join("rows.npy");
        std::fs::write(&rows_path, nn::npy::encode_f32(&[ROWS, case.d], &x)).unwrap();
        // What `sae reconstruct` draws: the model's reconstructions in the input's units.
        let recon = model.reconstruct(&Dataset::from_f32(x.clone(), case.d), 64);
        let recon_path = base.join("recon.npy");
        std::fs::write(&recon_path, nn::npy::encode_f32(&[ROWS, case.d], &recon)).unwrap();
        let codes_path = base.join("codes.npy");
        succeeds(&[
            "encode",
            "--model",
            path_str(&model_path),
            "--input",
            path_str(&rows_path),
            "--output",
            path_str(&codes_path),
        ]);

        let lens = base.join("saelens");
        succeeds(&[
            "export",
            "--model",
            path_str(&model_path),
            "--format",
            "saelens",
            "--out",
            path_str(&lens),
            "--hook-name",
            HOOK,
            "--model-name",
            "gpt2",
            "--context-size",
            "128",
        ]);
        let cfg = read_json(&lens.join("cfg.json"));
        let arch = match case.arch {
            Arch::TopK => "topk",
            Arch::Relu => "standard",
            Arch::BatchTopK | Arch::JumpRelu => "jumprelu",
        };
        assert_eq!(cfg["architecture"], arch);
        assert_eq!(
            (cfg["d_in"].as_u64(), cfg["d_sae"].as_u64()),
            (Some(case.d as u64), Some(case.n as u64))
        );
        assert_eq!(cfg["apply_b_dec_to_input"], case.apply_b_dec_to_input);
        assert_eq!(cfg["dtype"], "float32");
        assert_eq!(cfg["metadata"]["hook_name"], HOOK);
        assert_eq!(cfg["metadata"]["model_name"], "gpt2");
        assert_eq!(cfg["metadata"]["context_size"], 128);
        assert_eq!(cfg["metadata"]["sae_training_tool"], "sae");
        assert!(cfg["metadata"]["sae_lens_version"]
            .as_str()
            .unwrap()
            .starts_with("6."));
        let mut entry = |format: &str, dir: PathBuf| {
            checks.push(json!({
                "name": format!("{} {format}", case.name),
                "format": format,
                "dir": path_str(&dir),
                "rows": path_str(&rows_path),
                "codes": path_str(&codes_path),
                "recon": path_str(&recon_path),
            }));
        };
        entry("saelens", lens);

        let sparsify = base.join("sparsify");
        let args = [
            "export",
            "--model",
            path_str(&model_path),
            "--format",
            "sparsify",
            "--out",
            path_str(&sparsify),
            "--hook-name",
            HOOKPOINT,
        ];
        if case.arch == Arch::TopK {
            succeeds(&args);
            let cfg = read_json(&sparsify.join(HOOKPOINT).join("cfg.json"));
            assert_eq!(cfg["k"], case.k);
            assert_eq!(cfg["num_latents"], case.n);
            assert_eq!(cfg["d_in"], case.d);
            entry("sparsify", sparsify.join(HOOKPOINT));
        } else {
            let refusal = format!("only loads TopK SAEs, and this one is {}", case.arch.name());
            fails_with(&args, &refusal);
            assert!(!sparsify.join(HOOKPOINT).exists(), "a refused export wrote");
        }
    }

    let cases_path = root.join("cases.json");
    std::fs::write(&cases_path, serde_json::to_string(&checks).unwrap()).unwrap();
    let script = root.join("export_check.py");
    std::fs::write(&script, CHECK_SCRIPT).unwrap();
    let python = python();
    let out = Command::new(&python)
        .arg(&script)
        .arg(&cases_path)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run the Python interpreter {python:?} ({e}): set SAE_TEST_PYTHON to \
                 one with numpy and safetensors (`pip install numpy safetensors`)"
            )
        });
    let (stdout, stderr) = text(&out);
    if out.status.code() == Some(3) {
        panic!(
            "the Python interpreter {python:?} lacks numpy or safetensors ({}): install them \
             with `pip install numpy safetensors`, or point SAE_TEST_PYTHON at one that has \
             them (.ci/run makes a venv in target/test-python)",
            stderr.trim()
        );
    }
    println!("{stdout}");
    assert!(
        out.status.success(),
        "the exports disagree with sae:\n{stdout}{stderr}"
    );
    // Every case was compared: codes and reconstructions of 4 SAELens and 2 sparsify exports.
    let compared = stdout.lines().filter(|l| l.contains("\"what\"")).count();
    assert_eq!(compared, 2 * checks.len(), "{stdout}");
}

#[test]
fn refused_exports_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Uniform(7);
    let case = &CASES[0];
    let x = rows(case.d, &mut rng);
    // The same layers without the SAE config: a plain autoencoder.
    let mut config = ModelConfig::sae(case.d, case.n, SaeConfig::topk(case.k, case.d));
    config.sae = None;
    config.coding = nn::Coding::Plain;
    let plain = Autoencoder::new(config, 1).unwrap();
    let plain_path = dir.path().join("plain.safetensors");
    nn::checkpoint::save(&plain, &plain_path, &[]).unwrap();
    let out = dir.path().join("out");
    for format in ["saelens", "sparsify"] {
        fails_with(
            &[
                "export",
                "--model",
                path_str(&plain_path),
                "--format",
                format,
                "--out",
                path_str(&out),
                "--hook-name",
                HOOKPOINT,
            ],
            "not a sparse autoencoder",
        );
    }
    assert!(!out.exists(), "a refused export created {}", out.display());

    let sae_path = dir.path().join("sae.safetensors");
    nn::checkpoint::save(&model(case, &x, &mut rng), &sae_path, &[]).unwrap();
    let sparsify = |hook: Option<&'static str>| {
        let mut args = vec![
            "export",
            "--model",
            path_str(&sae_path),
            "--format",
            "sparsify",
            "--out",
            path_str(&out),
        ];
        if let Some(hook) = hook {
            args.extend(["--hook-name", hook]);
        }
        args
    };
    fails_with(&sparsify(None), "give --hook-name");
    for bad in ["../up", "a/b", "..", "."] {
        fails_with(&sparsify(Some(bad)), "must be a module name");
    }
    assert!(!out.exists(), "a refused export created {}", out.display());
}
