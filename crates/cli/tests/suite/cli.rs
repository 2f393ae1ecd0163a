//! The `sae` binary on small generated IDX files: a short training run writes every
//! output file with the right contents, the trained model is usable by every other
//! command, and bad arguments or files exit non-zero with one clear line and no panic.

use crate::common::{data_dir, fails_with, idx_u8, sae, text};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn train_small(data: &Path, out: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["--layers", "8:selu,6:sigmoid", "--epochs", "3"];
    args.extend_from_slice(extra);
    train_with(data, out, &args)
}

/// `sae train` on `data` into `out`, in batches of 8 with 12 validation samples.
fn train_with(data: &Path, out: &Path, flags: &[&str]) -> Output {
    let mut args = vec![
        "train",
        "--data",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--batch-size",
        "8",
        "--valid",
        "12",
    ];
    args.extend_from_slice(flags);
    sae(&args)
}

fn png_size(path: &Path) -> (u32, u32) {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(
        &bytes[..8],
        b"\x89PNG\r\n\x1a\n",
        "{} is not a PNG",
        path.display()
    );
    let be = |i: usize| u32::from_be_bytes(bytes[i..i + 4].try_into().unwrap());
    (be(16), be(20))
}

#[test]
fn short_training_run_writes_every_file() {
    let data = data_dir(60);
    let out = tempfile::tempdir().unwrap();
    let run = out.path().join("run");
    let result = train_small(data.path(), &run, &["--checkpoint-every", "1"]);
    let (stdout, stderr) = text(&result);
    assert!(
        result.status.success(),
        "stdout: {stdout}\nstderr: {stderr}"
    );
    assert!(stdout.contains("Epoch 3/3 - "), "{stdout}");
    assert!(stdout.contains("val_rounded_accuracy: "), "{stdout}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    let history: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("history.json")).unwrap()).unwrap();
    let epochs = history.as_array().unwrap();
    assert_eq!(epochs.len(), 3);
    for (i, e) in epochs.iter().enumerate() {
        assert_eq!(e["epoch"], i + 1);
        for key in [
            "loss",
            "rounded_accuracy",
            "val_loss",
            "val_rounded_accuracy",
            "mean_coding_activation",
            "seconds",
        ] {
            assert!(
                e[key].as_f64().is_some_and(f64::is_finite),
                "epoch {i}: {key} = {}",
                e[key]
            );
        }
    }
    let csv = std::fs::read_to_string(run.join("history.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "epoch,loss,rounded_accuracy,val_loss,val_rounded_accuracy,mean_coding_activation,seconds"
    );
    assert_eq!(lines.len(), 4);
    assert!(lines[3].starts_with("3,"));

    // Five validation images above their reconstructions, 3x zoom with 6 px gaps.
    assert_eq!(
        png_size(&run.join("reconstructions.png")),
        (5 * (12 + 6) + 6, 2 * (12 + 6) + 6)
    );
    assert_eq!(png_size(&run.join("activations.png")), (840, 320));
    let (w, h) = png_size(&run.join("features.png"));
    assert!(w > 0 && h > 0);

    let info = sae(&["info", run.join("model.safetensors").to_str().unwrap()]);
    let (stdout, _) = text(&info);
    assert!(info.status.success());
    assert!(
        stdout.contains("layers.1: 8 -> 6 sigmoid  <- coding layer"),
        "{stdout}"
    );
    assert!(stdout.contains("layers.3: 8 -> 16 sigmoid"), "{stdout}");
    assert!(stdout.contains("epochs_done: 3"), "{stdout}");
    // No temporary files left behind by the atomic writes.
    let leftovers: Vec<_> = std::fs::read_dir(&run)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn every_penalty_trains_and_the_penalty_is_saved() {
    let data = data_dir(60);
    let out = tempfile::tempdir().unwrap();
    for penalty in ["kl", "l1", "l2", "squared", "none"] {
        let run = out.path().join(penalty);
        let result = train_small(data.path(), &run, &["--sparsity", penalty]);
        let (stdout, stderr) = text(&result);
        assert!(result.status.success(), "{penalty}: {stdout}\n{stderr}");
        let info = sae(&["info", run.join("model.safetensors").to_str().unwrap()]);
        let (info, _) = text(&info);
        let kind = match penalty {
            "kl" => "Kl {",
            "l1" => "L1 {",
            "l2" => "L2 {",
            "squared" => "Squared {",
            _ => "None",
        };
        assert!(
            info.contains(&format!("penalty: {kind}")),
            "{penalty}: {info}"
        );
    }
}

#[test]
fn an_mse_model_reports_fvu_l0_and_dead_latents_instead_of_rounded_accuracy() {
    let data = data_dir(60);
    let out = tempfile::tempdir().unwrap();
    let run = out.path().join("run");
    let flags = [
        "--loss",
        "mse",
        "--layers",
        "8:relu",
        "--sparsity",
        "l1",
        "--epochs",
        "2",
    ];
    let result = train_with(data.path(), &run, &flags);
    let (stdout, stderr) = text(&result);
    assert!(result.status.success(), "{stdout}\n{stderr}");
    for key in ["val_loss: ", "mse: ", "fvu: ", "l0: ", "dead_latents: "] {
        assert!(stdout.contains(key), "{key} missing: {stdout}");
    }
    assert!(!stdout.contains("rounded_accuracy"), "{stdout}");
    let csv = std::fs::read_to_string(run.join("history.csv")).unwrap();
    assert!(
        csv.starts_with("epoch,loss,val_loss,mse,fvu,l0,dead_latents,seconds\n"),
        "{csv}"
    );
    let history: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("history.json")).unwrap()).unwrap();
    let last = &history.as_array().unwrap()[1];
    let fvu = last["fvu"].as_f64().unwrap();
    assert!(fvu > 0.0 && fvu < 1.5, "{fvu}");
    let l0 = last["l0"].as_f64().unwrap();
    assert!((0.0..=8.0).contains(&l0), "{l0}");
    assert!(last["dead_latents"].as_u64().unwrap() <= 8);
    assert!(
        last.get("val_rounded_accuracy").is_none_or(|v| v.is_null()),
        "{last}"
    );
}

#[test]
fn a_top_k_coding_layer_keeps_at_most_k_active_units() {
    let data = data_dir(60);
    let out = tempfile::tempdir().unwrap();
    let run = out.path().join("run");
    let base = |run: &Path, layers: &'static str, k: &'static str| -> Output {
        let flags = [
            "--loss", "mse", "--layers", layers, "--top-k", k, "--epochs", "2",
        ];
        train_with(
            data.path(),
            run,
            &[&flags[..], &["--threads", "2"]].concat(),
        )
    };
    let result = base(&run, "12:relu", "3");
    let (stdout, stderr) = text(&result);
    assert!(result.status.success(), "{stdout}\n{stderr}");
    let history: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("history.json")).unwrap()).unwrap();
    let l0 = history[1]["l0"].as_f64().unwrap();
    assert!(l0 > 0.0 && l0 <= 3.0, "{l0}");
    let info = text(&sae(&[
        "info",
        run.join("model.safetensors").to_str().unwrap(),
    ]))
    .0;
    assert!(info.contains("keeps the 3 largest"), "{info}");
    // The codes written by `encode` hold at most k nonzero values a row.
    let model = run.join("model.safetensors");
    let images = data.path().join("train-images-idx3-ubyte");
    let encode = |output: &Path, extra: &[&str]| {
        let mut args = vec![
            "encode",
            "--model",
            model.to_str().unwrap(),
            "--input",
            images.to_str().unwrap(),
            "--output",
            output.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let r = sae(&args);
        assert!(r.status.success(), "{:?}", text(&r));
    };
    let codes = out.path().join("codes.npy");
    encode(&codes, &[]);
    let codes = nn::Dataset::open(&codes, None).unwrap();
    let mut row = vec![0.0; 12];
    for i in 0..codes.len() {
        codes.gather_range(i..i + 1, &mut row);
        assert!(row.iter().filter(|v| **v != 0.0).count() <= 3, "{row:?}");
    }

    // --top: each row's active codes, largest first, the same values as the dense codes.
    encode(&out.path().join("top"), &["--top"]);
    // A version 1.0 .npy: the header's length at bytes 8-9, the data after it.
    let npy = |suffix: &str| -> (String, Vec<[u8; 4]>) {
        let bytes = std::fs::read(out.path().join(format!("top{suffix}"))).unwrap();
        let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
        let header = String::from_utf8(bytes[10..10 + header_len].to_vec()).unwrap();
        let data = bytes[10 + header_len..]
            .chunks_exact(4)
            .map(|c| c.try_into().unwrap())
            .collect();
        (header, data)
    };
    let (index_header, indices) = npy(".indices.npy");
    let (value_header, values) = npy(".values.npy");
    assert!(index_header.contains("'<i4'"), "{index_header}");
    assert!(value_header.contains("'<f4'"), "{value_header}");
    let width = indices.len() / codes.len();
    assert!(
        width <= 3 && indices.len() == values.len(),
        "{index_header}"
    );
    for i in 0..codes.len() {
        codes.gather_range(i..i + 1, &mut row);
        let mut previous = f32::INFINITY;
        for slot in 0..width {
            let index = i32::from_le_bytes(indices[i * width + slot]);
            let value = f32::from_le_bytes(values[i * width + slot]);
            if index < 0 {
                assert_eq!(value, 0.0);
                continue;
            }
            assert_eq!(value, row[index as usize], "row {i}");
            assert!(value <= previous && value != 0.0);
            previous = value;
        }
        let active = row.iter().filter(|v| **v != 0.0).count();
        let listed = (0..width)
            .filter(|&s| i32::from_le_bytes(indices[i * width + s]) >= 0)
            .count();
        assert_eq!(active, listed, "row {i}");
    }

    for (layers, k, message) in [
        ("12:sigmoid", "3", "must be relu"),
        ("12:relu", "13", "keeps 13 of 12"),
    ] {
        let r = base(&out.path().join("bad"), layers, k);
        let (_, stderr) = text(&r);
        assert!(!r.status.success() && stderr.contains(message), "{stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    }
}

#[test]
fn trained_model_encodes_reconstructs_and_evaluates() {
    let data = data_dir(40);
    let out = tempfile::tempdir().unwrap();
    let run = out.path().join("run");
    assert!(train_small(data.path(), &run, &["--quiet"])
        .status
        .success());
    let model = run.join("model.safetensors");
    let model = model.to_str().unwrap();
    let input = data.path().join("t10k-images-idx3-ubyte");
    let input = input.to_str().unwrap();

    let npy = out.path().join("codes.npy");
    let r = sae(&[
        "encode",
        "--model",
        model,
        "--input",
        input,
        "--output",
        npy.to_str().unwrap(),
    ]);
    assert!(r.status.success(), "{:?}", text(&r));
    let bytes = std::fs::read(&npy).unwrap();
    assert_eq!(&bytes[..6], b"\x93NUMPY");
    let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let header = std::str::from_utf8(&bytes[10..10 + header_len]).unwrap();
    assert!(
        header.contains("'descr': '<f4'") && header.contains("'shape': (40, 6)"),
        "{header}"
    );
    let values: Vec<f32> = bytes[10 + header_len..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(values.len(), 40 * 6);
    assert!(
        values.iter().all(|v| (0.0..=1.0).contains(v)),
        "sigmoid codings in [0, 1]"
    );

    let idx = out.path().join("codes.idx");
    assert!(sae(&[
        "encode",
        "--model",
        model,
        "--input",
        input,
        "--output",
        idx.to_str().unwrap()
    ])
    .status
    .success());
    let bytes = std::fs::read(&idx).unwrap();
    assert_eq!(&bytes[..4], &[0, 0, 0x0D, 2]);
    assert_eq!(bytes.len(), 4 + 8 + 40 * 6 * 4);

    let png = out.path().join("rec.png");
    let r = sae(&[
        "reconstruct",
        "--model",
        model,
        "--input",
        input,
        "--output",
        png.to_str().unwrap(),
        "--count",
        "3",
    ]);
    assert!(r.status.success(), "{:?}", text(&r));
    assert_eq!(png_size(&png), (3 * 18 + 6, 2 * 18 + 6));

    let r = sae(&[
        "eval",
        "--model",
        model,
        "--data",
        data.path().to_str().unwrap(),
    ]);
    let (stdout, stderr) = text(&r);
    assert!(r.status.success(), "{stderr}");
    for key in [
        "loss:",
        "rounded_accuracy:",
        "mean coding activation:",
        "dead coding units:",
    ] {
        assert!(stdout.contains(key), "{stdout}");
    }
}

#[test]
fn bad_arguments_are_rejected_before_training() {
    let data = data_dir(30);
    let out = tempfile::tempdir().unwrap();
    let d = data.path().to_str().unwrap();
    let o = out.path().join("run");
    let o = o.to_str().unwrap();
    let base = ["train", "--data", d, "--out", o];
    let with = |extra: &[&'static str]| -> Vec<String> {
        base.iter().chain(extra).map(|s| s.to_string()).collect()
    };
    let cases: &[(&[&str], &str)] = &[
        (&["--batch-size", "0"], "--batch-size"),
        (&["--epochs", "0"], "--epochs"),
        (&["--lr", "-1"], "learning rate -1"),
        (&["--lr", "0"], "learning rate 0"),
        (&["--sparsity-target", "1.5"], "--sparsity-target 1.5"),
        (&["--sparsity-target", "0"], "--sparsity-target 0"),
        (&["--sparsity-weight", "-2"], "--sparsity-weight -2"),
        (&["--layers", "100:tanh"], "unknown activation \"tanh\""),
        (&["--layers", "garbage"], "not units:activation"),
        (&["--layers", ""], "empty layer list"),
        (&["--decoder", "5"], "--decoder"),
        (&["--optimizer", "rmsprop"], "rmsprop"),
        (&["--valid", "30"], "--valid 30 leaves no training samples"),
        (
            &[
                "--loss",
                "mse",
                "--layers",
                "8:relu,4:sigmoid",
                "--decoder",
                "8:relu",
            ],
            "",
        ),
    ];
    for (extra, expected) in cases {
        let args = with(extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        fails_with(&args, expected);
    }
    assert!(!Path::new(o).join("model.safetensors").exists());
    fails_with(
        &["train", "--data", "/nonexistent-dir"],
        "apt-get install -y dataset-fashion-mnist",
    );
    fails_with(&["frobnicate"], "unrecognized subcommand");
}

#[test]
fn sae_simd_narrows_the_instruction_set_or_is_refused() {
    let data = data_dir(30);
    let out = tempfile::tempdir().unwrap();
    let run = |simd: &str, dir: &str| {
        let o = out.path().join(dir);
        let r = crate::common::command(crate::common::SAE)
            .env("SAE_SIMD", simd)
            .args(["train", "--data", data.path().to_str().unwrap()])
            .args(["--out", o.to_str().unwrap(), "--layers", "8:selu,6:sigmoid"])
            .args(["--epochs", "2", "--batch-size", "8", "--valid", "12"])
            .output()
            .unwrap();
        (r, o)
    };
    let (refused, dir) = run("sse4", "refused");
    let (_, stderr) = text(&refused);
    assert!(!refused.status.success());
    assert!(
        stderr.contains("SAE_SIMD=sse4: expected scalar, avx2 or avx512"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!dir.exists());
    // The scalar path trains the same model to within rounding of the widest one.
    let (scalar, scalar_dir) = run("scalar", "scalar");
    assert!(scalar.status.success(), "{:?}", text(&scalar));
    let (best, best_dir) = run("", "best");
    assert!(best.status.success(), "{:?}", text(&best));
    let (a, b) = (
        weight_bits(&scalar_dir.join("model.safetensors")),
        weight_bits(&best_dir.join("model.safetensors")),
    );
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        let (x, y) = (f32::from_bits(*x), f32::from_bits(*y));
        assert!((x - y).abs() <= 1e-4 * (1.0 + y.abs()), "{x} against {y}");
    }
}

#[test]
fn bad_files_are_reported_with_their_name() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| -> PathBuf { dir.path().join(name) };
    std::fs::write(p("not-a-model.safetensors"), b"hello").unwrap();
    std::fs::write(p("truncated"), idx_u8(&[10, 4, 4], &[0; 100])).unwrap();
    std::fs::write(p("bad-magic"), [1u8, 2, 8, 1, 0, 0, 0, 1, 0]).unwrap();
    std::fs::write(
        p("huge-claim"),
        [
            0u8, 0, 0x0E, 3, 255, 255, 255, 255, 255, 255, 255, 255, 0, 0, 0, 9,
        ],
    )
    .unwrap();
    std::fs::write(
        p("petabyte-claim"),
        idx_u8(&[1_000_000, 1_000_000, 1000], &[0; 64]),
    )
    .unwrap();
    let s = |path: PathBuf| path.to_str().unwrap().to_string();
    fails_with(
        &["info", &s(p("not-a-model.safetensors"))],
        "not-a-model.safetensors: not a safetensors file",
    );
    fails_with(
        &["info", &s(p("truncated"))],
        "truncated: header says [10, 4, 4] of u8, which is 176 bytes with the header, but the file has 116 bytes",
    );
    fails_with(&["info", &s(p("bad-magic"))], "bad-magic: not an IDX file");
    fails_with(
        &["info", &s(p("huge-claim"))],
        "huge-claim: dimensions [4294967295, 4294967295, 9] overflow",
    );
    fails_with(
        &["info", &s(p("petabyte-claim"))],
        "petabyte-claim: header says [1000000, 1000000, 1000] of u8",
    );
    fails_with(&["info", &s(p("missing"))], "missing:");
    fails_with(
        &["info", dir.path().to_str().unwrap()],
        "not a regular file",
    );
}

/// Starts `sae train` on `data` into `run` with `extra` flags, waits for its first epoch
/// line, sends `signal` (as `kill` names it), and returns how the process ended.
fn signal_after_first_epoch(data: &Path, run: &Path, extra: &[&str], signal: &str) -> Output {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let mut child = Command::new(env!("CARGO_BIN_EXE_sae"))
        .args([
            "train",
            "--data",
            data.to_str().unwrap(),
            "--out",
            run.to_str().unwrap(),
        ])
        .args(["--layers", "8:selu,6:sigmoid", "--valid", "10"])
        .args(extra)
        .env(
            "XDG_CACHE_HOME",
            std::env::temp_dir().join("sae-cli-test-cache"),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first_epoch = lines
        .by_ref()
        .map(Result::unwrap)
        .any(|l| l.starts_with("Epoch 1/"));
    assert!(first_epoch, "no epoch line before the run ended");
    let kill = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    child.wait_with_output().unwrap()
}

/// Interrupts a long run with `signal`; checks the exit status and the saved files.
fn interrupt_with(signal: &str, status: i32) {
    let data = data_dir(2000);
    let out = tempfile::tempdir().unwrap();
    let run = out.path().join("run");
    let result = signal_after_first_epoch(
        data.path(),
        &run,
        &["--epochs", "100000", "--batch-size", "4"],
        signal,
    );
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert_eq!(result.status.code(), Some(status), "{stderr}");
    assert!(stderr.contains("interrupted by"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let history: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("history.json")).unwrap()).unwrap();
    assert!(!history.as_array().unwrap().is_empty());
    let info = sae(&["info", run.join("model.safetensors").to_str().unwrap()]);
    assert!(info.status.success(), "{:?}", text(&info));
}

#[test]
fn sigint_saves_the_run_and_exits_130() {
    interrupt_with("-INT", 130);
}

#[test]
fn sigterm_saves_the_run_and_exits_143() {
    interrupt_with("-TERM", 143);
}

/// The weights of a saved model, bit for bit.
fn weight_bits(path: &Path) -> Vec<u32> {
    let (model, _) = nn::checkpoint::load(path).unwrap();
    model
        .layers()
        .flat_map(|l| l.weight.iter().chain(l.bias).map(|v| v.to_bits()))
        .collect()
}

#[test]
fn a_resumed_run_ends_with_the_same_weights_as_an_uninterrupted_one() {
    let data = data_dir(80);
    let out = tempfile::tempdir().unwrap();
    let straight = out.path().join("straight");
    let split = out.path().join("split");
    let common = ["--optimizer", "adam", "--quiet"];
    let r = train_small(data.path(), &straight, &common);
    assert!(r.status.success(), "{:?}", text(&r));
    // train_small asks for 3 epochs; the split run trains 1 with the same settings, then
    // resumes to 3.
    let r = sae(&[
        "train",
        "--data",
        data.path().to_str().unwrap(),
        "--out",
        split.to_str().unwrap(),
        "--layers",
        "8:selu,6:sigmoid",
        "--epochs",
        "1",
        "--batch-size",
        "8",
        "--valid",
        "12",
        "--optimizer",
        "adam",
        "--quiet",
    ]);
    assert!(r.status.success(), "{:?}", text(&r));
    assert_ne!(
        weight_bits(&split.join("model.safetensors")),
        weight_bits(&straight.join("model.safetensors"))
    );
    let r = sae(&[
        "train",
        "--data",
        data.path().to_str().unwrap(),
        "--resume",
        split.to_str().unwrap(),
        "--epochs",
        "3",
    ]);
    let (stdout, stderr) = text(&r);
    assert!(r.status.success(), "{stderr}");
    assert!(stdout.contains("Resuming at epoch 2 of 3"), "{stdout}");
    assert!(stdout.contains("Epoch 3/3"), "{stdout}");
    assert_eq!(
        weight_bits(&split.join("model.safetensors")),
        weight_bits(&straight.join("model.safetensors"))
    );
    let history = |dir: &Path| -> Vec<(f64, f64)> {
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("history.json")).unwrap()).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .map(|e| (e["loss"].as_f64().unwrap(), e["val_loss"].as_f64().unwrap()))
            .collect()
    };
    assert_eq!(history(&split), history(&straight));

    fails_with(
        &[
            "train",
            "--data",
            data.path().to_str().unwrap(),
            "--resume",
            straight.to_str().unwrap(),
            "--epochs",
            "2",
        ],
        "already finished 3",
    );
    fails_with(
        &[
            "train",
            "--data",
            data.path().to_str().unwrap(),
            "--resume",
            "/nonexistent",
        ],
        "/nonexistent/model.safetensors",
    );
}

#[test]
fn a_run_interrupted_by_a_signal_can_be_resumed() {
    let data = data_dir(2000);
    let out = tempfile::tempdir().unwrap();
    let run = out.path().join("run");
    let first = signal_after_first_epoch(
        data.path(),
        &run,
        &["--epochs", "40", "--batch-size", "2"],
        "-INT",
    );
    // 0 if the run finished before the signal arrived; resuming is then a no-op.
    assert!(
        matches!(first.status.code(), Some(130) | Some(0)),
        "{:?}",
        first.status
    );
    let r = sae(&[
        "train",
        "--data",
        data.path().to_str().unwrap(),
        "--resume",
        run.to_str().unwrap(),
        "--quiet",
    ]);
    assert!(r.status.success(), "{:?}", text(&r));
    let history: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("history.json")).unwrap()).unwrap();
    let epochs: Vec<u64> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["epoch"].as_u64().unwrap())
        .collect();
    assert_eq!(epochs, (1..=40).collect::<Vec<u64>>());
}

/// Training, evaluation, encoding and reconstruction read a single file of rows, of any
/// format, as they read the Fashion-MNIST directory; `info` says what such a file holds.
#[test]
fn a_single_npy_or_safetensors_file_of_rows_trains_and_is_used_by_every_command() {
    let dir = tempfile::tempdir().unwrap();
    let samples = 60;
    let rows = crate::common::bars_f32(samples);
    let file = |name: &str, bytes: &[u8]| -> String {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        path.to_str().unwrap().to_string()
    };
    let npy = file("rows.npy", &nn::npy::encode_f32(&[samples, 4, 4], &rows));
    let st = file(
        "acts.safetensors",
        &crate::common::safetensors_f32("acts", &[samples, 16], &rows),
    );
    let u8_npy = file(
        "pixels.npy",
        &nn::npy::encode("|u1", &[samples, 16], &crate::common::bars(samples)),
    );
    let mut models = Vec::new();
    for (data, name) in [(&npy, "npy"), (&st, "st"), (&u8_npy, "u8")] {
        let run = dir.path().join(format!("run-{name}"));
        let r = sae(&[
            "train",
            "--data",
            data,
            "--out",
            run.to_str().unwrap(),
            "--loss",
            "mse",
            "--layers",
            "16:relu",
            "--sparsity",
            "l1",
            "--epochs",
            "1",
            "--batch-size",
            "8",
            "--valid",
            "12",
        ]);
        let (stdout, stderr) = text(&r);
        assert!(r.status.success(), "{name}: {stderr}");
        assert!(
            stdout.contains("on 48 samples, validating on 12"),
            "{stdout}"
        );
        models.push(run.join("model.safetensors"));
    }
    // The same values from .npy f32 and from u8 divided by 255 train the same model.
    let bits = |path: &Path| -> Vec<u32> {
        let (model, _) = nn::checkpoint::load(path).unwrap();
        model
            .layers()
            .flat_map(|l| l.weight.iter().map(|v| v.to_bits()))
            .collect()
    };
    assert_eq!(bits(&models[0]), bits(&models[2]));
    let model = models[0].to_str().unwrap();

    let r = sae(&["eval", "--model", model, "--data", &st]);
    let (stdout, stderr) = text(&r);
    assert!(r.status.success(), "{stderr}");
    assert!(stdout.contains("samples:                 60"), "{stdout}");
    let codes = dir.path().join("codes.npy");
    let run_on = |command: &str, input: &str, output: &Path| {
        let r = sae(&[
            command,
            "--model",
            model,
            "--input",
            input,
            "--output",
            output.to_str().unwrap(),
        ]);
        assert!(r.status.success(), "{command}: {:?}", text(&r));
    };
    run_on("encode", &st, &codes);
    let codes = nn::Dataset::open(&codes, None).unwrap();
    assert_eq!((codes.len(), codes.features()), (60, 16));
    let png = dir.path().join("rec.png");
    run_on("reconstruct", &npy, &png);

    let r = sae(&["info", &npy]);
    let (stdout, _) = text(&r);
    assert!(r.status.success());
    assert!(stdout.contains(".npy <f4 of shape [60, 4, 4]"), "{stdout}");
    assert!(stdout.contains("samples: 60 of 16 values"), "{stdout}");
    assert!(stdout.contains("scaling: none"), "{stdout}");
    assert!(stdout.contains("read in place"), "{stdout}");
    let r = sae(&["info", &st]);
    let (stdout, _) = text(&r);
    assert!(
        stdout.contains("safetensors F32 of shape [60, 16]"),
        "{stdout}"
    );
    assert!(stdout.contains("tensor: acts"), "{stdout}");
    let r = sae(&["info", &u8_npy]);
    let (stdout, _) = text(&r);
    assert!(stdout.contains("scaling: divided by 255"), "{stdout}");
    // A model stays a model.
    let r = sae(&["info", model]);
    let (stdout, _) = text(&r);
    assert!(stdout.contains("safetensors model"), "{stdout}");

    // --valid must leave training samples, whatever the source; a tensor must exist.
    let out = dir.path().join("never");
    let o = out.to_str().unwrap();
    fails_with(
        &["train", "--data", &npy, "--out", o, "--valid", "60"],
        "--valid 60 leaves no training samples",
    );
    fails_with(
        &[
            "train", "--data", &st, "--out", o, "--tensor", "x", "--valid", "5",
        ],
        "no tensor named \"x\"; the file holds acts (F32 [60, 16])",
    );
    assert!(!out.exists());
}
