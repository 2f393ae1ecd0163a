//! The binary against a hostile file system: FIFOs and unreadable files where inputs are
//! expected, a disk that fills up during training, and SIGKILL at random moments. Every
//! case must end with a clear error (or a clean kill) and complete output files.

use crate::common::{command, data_dir, text, SAE};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Waits for `child` at most `limit`; a process still running then is killed and the
/// test fails, so a hang shows up as a failure rather than a stuck test run.
fn finish_within(mut child: Child, limit: Duration, what: &str) -> Output {
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} still running after {limit:?}: it hangs");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().unwrap()
}

fn spawn(mut command: Command) -> Child {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the command starts")
}

/// Runs `sae args` (through `wrapper` if given); it must fail within 30 s, without a
/// panic, with every one of `expected` in its error.
#[track_caller]
fn fails_within_time(wrapper: &[&str], args: &[&str], expected: &[&str]) {
    let mut cmd = command(wrapper.first().copied().unwrap_or(SAE));
    if !wrapper.is_empty() {
        cmd.args(&wrapper[1..]).arg(SAE);
    }
    cmd.args(args);
    let out = finish_within(spawn(cmd), Duration::from_secs(30), &format!("{args:?}"));
    let (_, stderr) = text(&out);
    assert!(!out.status.success(), "{args:?} succeeded");
    assert!(!stderr.contains("panicked"), "{args:?} panicked: {stderr}");
    for e in expected {
        assert!(stderr.contains(e), "{args:?}: expected {e:?} in {stderr:?}");
    }
    // The cache announces a decompression before it starts; the error is one more line.
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.starts_with("decompressing "))
        .collect();
    assert_eq!(lines.len(), 1, "not one line: {stderr}");
    assert!(lines[0].starts_with("error: "), "{stderr}");
}

fn mkfifo(path: &Path) {
    let status = Command::new("mkfifo")
        .arg(path)
        .status()
        .expect("mkfifo runs");
    assert!(status.success(), "mkfifo {}", path.display());
}

fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// A short run that leaves a resumable model in `run`.
fn train(data: &Path, run: &Path, epochs: &str) -> Output {
    let out = command(SAE)
        .args(["train", "--data", s(data), "--out", s(run)])
        .args(["--layers", "8:selu,6:sigmoid", "--batch-size", "8"])
        .args(["--valid", "20", "--epochs", epochs, "--quiet"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{:?}", text(&out));
    out
}

#[test]
fn a_fifo_where_a_file_is_expected_is_an_error_not_a_hang() {
    let data = data_dir(60);
    let run = tempfile::tempdir().unwrap();
    train(data.path(), run.path(), "1");
    let dir = tempfile::tempdir().unwrap();
    let fifo_model = dir.path().join("model.safetensors");
    let fifo_idx = dir.path().join("images-idx3-ubyte");
    mkfifo(&fifo_model);
    mkfifo(&fifo_idx);
    let fifo_data = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(data.path()).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), fifo_data.path().join(entry.file_name())).unwrap();
    }
    let images = fifo_data.path().join("train-images-idx3-ubyte");
    std::fs::remove_file(&images).unwrap();
    mkfifo(&images);
    let model = run.path().join("model.safetensors");
    let out = dir.path().join("codes.npy");

    let not_a_file = "not a regular file";
    fails_within_time(
        &[],
        &["info", s(&fifo_model)],
        &[s(&fifo_model), not_a_file],
    );
    fails_within_time(&[], &["info", s(&fifo_idx)], &[s(&fifo_idx), not_a_file]);
    fails_within_time(
        &[],
        &["eval", "--model", s(&fifo_model), "--data", s(data.path())],
        &[s(&fifo_model), not_a_file],
    );
    fails_within_time(
        &[],
        &[
            "encode",
            "--model",
            s(&model),
            "--input",
            s(&fifo_idx),
            "--output",
            s(&out),
        ],
        &[s(&fifo_idx), not_a_file],
    );
    fails_within_time(
        &[],
        &[
            "train",
            "--data",
            s(fifo_data.path()),
            "--out",
            s(&dir.path().join("run")),
        ],
        &[s(&images), not_a_file],
    );
    assert!(!out.exists());
}

/// A command prefix under which files with mode 000 really are unreadable. Root reads
/// them anyway, so as root the binary runs without the capabilities that allow it.
fn unprivileged() -> Vec<&'static str> {
    let probe = tempfile::NamedTempFile::new().unwrap();
    let is_root = probe.as_file().metadata().unwrap().uid() == 0;
    if is_root {
        vec![
            "setpriv",
            "--bounding-set",
            "-dac_override,-dac_read_search",
        ]
    } else {
        vec![]
    }
}

#[test]
fn an_unreadable_file_is_an_error_naming_it() {
    let data = data_dir(60);
    let run = tempfile::tempdir().unwrap();
    train(data.path(), run.path(), "1");
    let model = run.path().join("model.safetensors");
    let images = data.path().join("train-images-idx3-ubyte");
    for path in [&model, &images] {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o000)).unwrap();
    }
    let wrapper = unprivileged();
    // Without this the test would pass vacuously where mode 000 does not stop reading.
    let mut cat = Command::new(wrapper.first().copied().unwrap_or("cat"));
    if !wrapper.is_empty() {
        cat.args(&wrapper[1..]).arg("cat");
    }
    let cat = cat.arg(&model).output().expect("the wrapper runs");
    assert!(
        !cat.status.success(),
        "{wrapper:?} cat could read a file with mode 000"
    );

    let denied = "Permission denied";
    fails_within_time(&wrapper, &["info", s(&model)], &[s(&model), denied]);
    fails_within_time(&wrapper, &["info", s(&images)], &[s(&images), denied]);
    fails_within_time(
        &wrapper,
        &[
            "train",
            "--data",
            s(data.path()),
            "--out",
            s(&run.path().join("again")),
        ],
        &[s(&images), denied],
    );
    std::fs::set_permissions(&images, std::fs::Permissions::from_mode(0o644)).unwrap();
    fails_within_time(
        &wrapper,
        &["train", "--data", s(data.path()), "--resume", s(run.path())],
        &[s(&model), denied],
    );
}

#[test]
fn an_unwritable_output_directory_is_refused_before_training() {
    let data = data_dir(60);
    let parent = tempfile::tempdir().unwrap();
    let locked = parent.path().join("locked");
    std::fs::create_dir(&locked).unwrap();
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o555)).unwrap();
    fails_within_time(
        &unprivileged(),
        &[
            "train",
            "--data",
            s(data.path()),
            "--out",
            s(&locked),
            "--valid",
            "20",
        ],
        &[s(&locked), "not writable", "Permission denied"],
    );
    assert_eq!(std::fs::read_dir(&locked).unwrap().count(), 0);
}

/// The temporaries `write_atomic` leaves when killed mid-write, by file name.
fn temporaries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.') && n.contains(".tmp-"))
        .collect()
}

#[test]
fn a_full_disk_during_training_keeps_the_previous_checkpoint() {
    let data = data_dir(200);
    let run = tempfile::tempdir().unwrap();
    train(data.path(), run.path(), "2");
    let model = run.path().join("model.safetensors");
    let before = std::fs::read(&model).unwrap();
    let history = std::fs::metadata(run.path().join("history.json"))
        .unwrap()
        .len();
    // A file-size limit just below the current model: the history files still fit, the
    // next checkpoint (which carries one more epoch of history) does not. Writes past
    // the limit fail with EFBIG, as they would with ENOSPC on a full disk, once the
    // signal the kernel sends for it is ignored.
    let limit = before.len() as u64 - 1;
    assert!(history < limit);
    let fsize = format!("--fsize={limit}");
    let wrapper = [
        "sh",
        "-c",
        "trap '' XFSZ; exec prlimit \"$@\"",
        "sh",
        &fsize,
    ];
    fails_within_time(
        &wrapper,
        &[
            "train",
            "--data",
            s(data.path()),
            "--resume",
            s(run.path()),
            "--epochs",
            "6",
            "--checkpoint-every",
            "1",
            "--quiet",
        ],
        &[
            s(&model),
            "the previous checkpoint is intact",
            "File too large",
        ],
    );
    assert!(
        std::fs::read(&model).unwrap() == before,
        "the previous checkpoint changed"
    );
    assert_eq!(temporaries(run.path()), Vec::<String>::new());
    let info = command(SAE).args(["info", s(&model)]).output().unwrap();
    assert!(info.status.success(), "{:?}", text(&info));
}

/// Every output file of `run` is complete: the model loads and is resumable, the JSON
/// history parses, and every CSV row has the header's number of fields.
fn assert_outputs_complete(run: &Path) {
    let model = run.join("model.safetensors");
    let info = command(SAE).args(["info", s(&model)]).output().unwrap();
    let (stdout, stderr) = text(&info);
    assert!(info.status.success(), "torn model: {stderr}");
    assert!(stdout.contains("resumable: yes"), "{stdout}");
    let json = std::fs::read(run.join("history.json")).unwrap();
    let history: serde_json::Value = serde_json::from_slice(&json).unwrap_or_else(|e| {
        panic!(
            "torn history.json ({e}): {}",
            String::from_utf8_lossy(&json)
        )
    });
    assert!(!history.as_array().unwrap().is_empty());
    let csv = std::fs::read_to_string(run.join("history.csv")).unwrap();
    assert!(csv.ends_with('\n'), "torn history.csv: {csv:?}");
    let mut rows = csv.lines();
    let fields = rows.next().unwrap().split(',').count();
    for row in rows {
        assert_eq!(
            row.split(',').count(),
            fields,
            "torn history.csv row {row:?}"
        );
    }
}

#[test]
fn sigkill_at_random_moments_never_leaves_a_torn_file() {
    let data = data_dir(200);
    let run = tempfile::tempdir().unwrap();
    train(data.path(), run.path(), "1");
    // Each epoch of this tiny model takes microseconds and ends with three atomic writes
    // (history.json, history.csv, the checkpoint), each flushed to disk, so most of
    // the run's time is spent writing and a random kill usually lands inside a write.
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut mid_write = 0;
    for trial in 0..15 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let delay = Duration::from_millis(40 + state % 360);
        let mut cmd = command(SAE);
        cmd.args(["train", "--data", s(data.path()), "--resume", s(run.path())])
            .args(["--epochs", "100000", "--checkpoint-every", "1", "--quiet"]);
        let mut child = spawn(cmd);
        std::thread::sleep(delay);
        let pid = child.id();
        child.kill().unwrap();
        let out = child.wait_with_output().unwrap();
        assert_eq!(
            out.status.signal(),
            Some(9),
            "trial {trial}: the run ended before the kill: {:?}",
            text(&out)
        );
        let left = temporaries(run.path());
        let own = format!(".tmp-{pid}");
        assert!(
            left.iter().all(|n| n.ends_with(&own)),
            "trial {trial}: temporaries of earlier runs were not cleaned up: {left:?}"
        );
        mid_write += usize::from(!left.is_empty());
        assert_outputs_complete(run.path());
    }
    eprintln!("{mid_write} of 15 kills interrupted a write");
}

/// A safetensors file from its JSON header and data bytes.
fn safetensors_file(header: &serde_json::Value, data: &[u8]) -> Vec<u8> {
    let mut header = header.to_string().into_bytes();
    while header.len() % 8 != 0 {
        header.push(b' ');
    }
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(&header);
    bytes.extend_from_slice(data);
    bytes
}

#[test]
fn absurd_model_shapes_are_refused_without_allocating_them() {
    let dir = tempfile::tempdir().unwrap();
    let layer = |inputs: u64, units: u64, activation: &str| serde_json::json!({"inputs": inputs, "units": units, "activation": activation});
    let config = |wide: u64| {
        serde_json::json!({
            "layers": [layer(16, wide, "selu"), layer(wide, 16, "sigmoid")],
            "coding_layer": 0,
            "penalty": {"kind": "none"},
            "loss": "bce",
        })
        .to_string()
    };
    let tensor = |shape: &[u64], end: u64| serde_json::json!({"dtype": "F32", "shape": shape, "data_offsets": [0, end]});
    // A config that asks for 16 x 3e9 weights, carried by a 100-byte file.
    let huge_config = dir.path().join("huge-config.safetensors");
    let header = serde_json::json!({
        "__metadata__": {"config": config(3_000_000_000)},
        "layers.0.weight": tensor(&[16, 1], 64),
    });
    std::fs::write(&huge_config, safetensors_file(&header, &[0; 64])).unwrap();
    // A sane config, and a tensor header claiming 1e18 elements.
    let huge_tensor = dir.path().join("huge-tensor.safetensors");
    let header = serde_json::json!({
        "__metadata__": {"config": config(4)},
        "layers.0.weight": tensor(&[1_000_000_000, 1_000_000_000], 64),
    });
    std::fs::write(&huge_tensor, safetensors_file(&header, &[0; 64])).unwrap();
    // A header length far past the end of the file.
    let huge_header = dir.path().join("huge-header.safetensors");
    let mut bytes = (1u64 << 60).to_le_bytes().to_vec();
    bytes.extend_from_slice(b"{}");
    std::fs::write(&huge_header, bytes).unwrap();

    // Any attempt to allocate what these files claim fails under this limit and aborts
    // the process, which `fails_within_time` reports as a missing one-line error.
    let wrapper = ["prlimit", "--as=2000000000"];
    fails_within_time(
        &wrapper,
        &["info", s(&huge_config)],
        &[s(&huge_config), "more than 268435456 weights"],
    );
    fails_within_time(
        &wrapper,
        &["info", s(&huge_tensor)],
        &[s(&huge_tensor), "not a safetensors file"],
    );
    fails_within_time(
        &wrapper,
        &["info", s(&huge_header)],
        &[s(&huge_header), "not a safetensors file"],
    );
}

/// A copy of `data` with `name` replaced by `bytes`.
fn data_with(data: &Path, name: &str, bytes: &[u8]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(data).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
    }
    std::fs::write(dir.path().join(name), bytes).unwrap();
    dir
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

#[test]
fn every_crafted_data_file_is_one_clear_error_naming_it() {
    let data = data_dir(60);
    let run = tempfile::tempdir().unwrap();
    train(data.path(), run.path(), "1");
    let model = run.path().join("model.safetensors");
    let images = "train-images-idx3-ubyte";
    let labels = "train-labels-idx1-ubyte";
    let test_images = "t10k-images-idx3-ubyte";
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, bytes: &[u8]| -> std::path::PathBuf {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    };
    let valid = crate::common::idx_u8(&[2, 4, 4], &[7; 32]);
    let mut trailing = valid.clone();
    trailing.push(0);
    let cases: Vec<(std::path::PathBuf, &str)> = vec![
        (file("trailing", &trailing), "header says [2, 4, 4] of u8, which is 48 bytes with the header, but the file has 49 bytes"),
        (file("unknown-type", &[0, 0, 0x07, 1, 0, 0, 0, 1, 0]), "unknown element type code 0x07"),
        (file("rank-0", &[0, 0, 0x08, 0]), "rank 0"),
        (file("corrupt.gz", &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3, 1, 2, 3, 4, 5, 6, 7, 8]), "corrupt or truncated gzip data"),
        (file("truncated.gz", &gzip(&valid)[..20]), "corrupt or truncated gzip data"),
    ];
    for (path, problem) in &cases {
        fails_within_time(&[], &["info", s(path)], &[s(path), problem]);
    }

    let d = |dir: &tempfile::TempDir| dir.path().to_str().unwrap().to_string();
    let train_on = |data: &str| {
        vec![
            "train",
            "--data",
            data,
            "--out",
            s(run.path()),
            "--valid",
            "5",
            "--epochs",
            "1",
        ]
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>()
    };
    let few_labels = data_with(data.path(), labels, &crate::common::idx_u8(&[10], &[1; 10]));
    let flat = data_with(data.path(), images, &crate::common::idx_u8(&[60], &[1; 60]));
    let empty = data_with(data.path(), images, &crate::common::idx_u8(&[0, 4, 4], &[]));
    let wide = data_with(
        data.path(),
        test_images,
        &crate::common::idx_u8(&[3, 5, 5], &[9; 75]),
    );
    let before = std::fs::read(&model).unwrap();
    for (data, file, problem) in [
        (&few_labels, labels, "holds 60 samples but"),
        (&flat, images, "rank"),
        (&empty, images, "holds no samples"),
    ] {
        let args = train_on(&d(data));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let path = data.path().join(file);
        fails_within_time(&[], &args, &[s(&path), problem]);
    }
    assert!(
        std::fs::read(&model).unwrap() == before,
        "a failed run touched the model"
    );
    let path = wide.path().join(test_images);
    fails_within_time(
        &[],
        &["eval", "--model", s(&model), "--data", &d(&wide)],
        &[s(&path), "samples have 25 values but the model takes 16"],
    );

    // A model whose tensors disagree with the architecture its config declares.
    let config = serde_json::json!({
        "layers": [
            {"inputs": 16, "units": 8, "activation": "selu"},
            {"inputs": 8, "units": 16, "activation": "sigmoid"},
        ],
        "coding_layer": 0,
        "penalty": {"kind": "none"},
        "loss": "bce",
    });
    let tensor = |shape: &[u64], from: u64, to: u64| serde_json::json!({"dtype": "F32", "shape": shape, "data_offsets": [from, to]});
    let header = serde_json::json!({
        "__metadata__": {"config": config.to_string()},
        "layers.0.weight": tensor(&[16, 4], 0, 256),
        "layers.0.bias": tensor(&[8], 256, 288),
        "layers.1.weight": tensor(&[8, 16], 288, 800),
        "layers.1.bias": tensor(&[16], 800, 864),
    });
    let lying = file("lying.safetensors", &safetensors_file(&header, &[0; 864]));
    fails_within_time(
        &[],
        &["info", s(&lying)],
        &[s(&lying), "layers.0.weight has shape [16, 4]"],
    );
}

#[test]
fn a_diverging_run_stops_at_once_and_keeps_the_last_good_checkpoint() {
    let data = data_dir(200);
    let run = tempfile::tempdir().unwrap();
    train(data.path(), run.path(), "1");
    let model = run.path().join("model.safetensors");
    let history = run.path().join("history.json");
    let (model_before, history_before) = (
        std::fs::read(&model).unwrap(),
        std::fs::read(&history).unwrap(),
    );
    fails_within_time(
        &[],
        &[
            "train",
            "--data",
            s(data.path()),
            "--out",
            s(run.path()),
            "--layers",
            "8:selu,6:sigmoid",
            "--batch-size",
            "8",
            "--valid",
            "20",
            "--epochs",
            "5",
            "--checkpoint-every",
            "1",
            "--lr",
            "1e12",
        ],
        &[
            "training diverged at epoch 1, step",
            "loss is NaN",
            "learning rate",
        ],
    );
    assert!(
        std::fs::read(&model).unwrap() == model_before,
        "the checkpoint changed"
    );
    assert!(
        std::fs::read(&history).unwrap() == history_before,
        "the history changed"
    );
}

/// A `.npy` file of format version 1.0 with the header text `dict` (padded as NumPy pads
/// it), then `data`.
fn npy_file(dict: &str, data: &[u8]) -> Vec<u8> {
    let unpadded = 10 + dict.len() + 1;
    let header_len = dict.len() + (64 - unpadded % 64) % 64 + 1;
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&(header_len as u16).to_le_bytes());
    bytes.extend_from_slice(format!("{dict:width$}\n", width = header_len - 1).as_bytes());
    bytes.extend_from_slice(data);
    bytes
}

#[test]
fn every_crafted_npy_file_is_one_clear_error_naming_it() {
    let data = data_dir(60);
    let run = tempfile::tempdir().unwrap();
    train(data.path(), run.path(), "1");
    let model = run.path().join("model.safetensors");
    let dir = tempfile::tempdir().unwrap();
    let rows = crate::common::bars_f32(20);
    let bytes: Vec<u8> = rows.iter().flat_map(|v| v.to_le_bytes()).collect();
    let good = nn::npy::encode_f32(&[20, 16], &rows);
    let dict = |descr: &str, fortran: &str, shape: &str| {
        format!("{{'descr': '{descr}', 'fortran_order': {fortran}, 'shape': {shape}, }}")
    };
    let mut bad_magic = good.clone();
    bad_magic[1] = b'n';
    let mut nan_rows = rows.clone();
    nan_rows[7 * 16 + 3] = f32::NAN;
    let mut inf_rows = rows.clone();
    inf_rows[19 * 16] = f32::NEG_INFINITY;
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "truncated.npy",
            good[..good.len() - 10].to_vec(),
            "header says shape [20, 16] of <f4, which is 1408 bytes with the header, but the file has 1398 bytes",
        ),
        (
            "lying-shape.npy",
            npy_file(&dict("<f4", "False", "(30, 16)"), &bytes),
            "header says shape [30, 16] of <f4",
        ),
        (
            "wrong-dtype.npy",
            npy_file(&dict("<f8", "False", "(20, 16)"), &bytes),
            "header says shape [20, 16] of <f8",
        ),
        (
            "int-dtype.npy",
            npy_file(&dict("<i4", "False", "(20, 16)"), &bytes),
            "dtype \"<i4\" is not read",
        ),
        (
            "fortran.npy",
            npy_file(&dict("<f4", "True", "(20, 16)"), &bytes),
            "fortran_order is True: only C-ordered arrays are read",
        ),
        ("bad-magic.npy", bad_magic, "not an IDX file"),
        (
            "garbled.npy",
            npy_file("{'descr': '<f4', 'shape': (20, 16)", &bytes),
            "malformed header",
        ),
        (
            "nan.npy",
            nn::npy::encode_f32(&[20, 16], &nan_rows),
            "row 7 (counting from 0) holds NaN or infinity",
        ),
        (
            "inf.npy.gz",
            gzip(&nn::npy::encode_f32(&[20, 16], &inf_rows)),
            "row 19 (counting from 0) holds NaN or infinity",
        ),
    ];
    let out = dir.path().join("out");
    let codes = dir.path().join("codes.npy");
    for (name, bytes, problem) in &cases {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let p = s(&path);
        let expected = [p, problem];
        let train = [
            "train",
            "--data",
            p,
            "--out",
            s(&out),
            "--valid",
            "5",
            "--epochs",
            "1",
        ];
        fails_within_time(&[], &train, &expected);
        fails_within_time(&[], &["eval", "--model", s(&model), "--data", p], &expected);
        let encode = [
            "encode",
            "--model",
            s(&model),
            "--input",
            p,
            "--output",
            s(&codes),
        ];
        fails_within_time(&[], &encode, &expected);
        let png = dir.path().join("rec.png");
        let reconstruct = [
            "reconstruct",
            "--model",
            s(&model),
            "--input",
            p,
            "--output",
            s(&png),
        ];
        fails_within_time(&[], &reconstruct, &expected);
        // Reading the header does not look at the values.
        if !problem.contains("NaN") {
            fails_within_time(&[], &["info", p], &expected);
        }
        assert!(!out.exists(), "{name}: a failed run created its output");
        assert!(!codes.exists() && !png.exists(), "{name}: output written");
    }
}
