#!/usr/bin/env bash
# Trains the reference model in PyTorch, in Keras and with `sae`, one after another on
# this machine, and prints each one's seconds per epoch, final val_loss and the speed-ups.
#
#   benches/compare/run.sh [--python PYTHON] [--epochs N] [--threads N]
#
# Without --python the script makes a virtual environment in benches/compare/.venv and
# installs NumPy, PyTorch and TensorFlow there from PyPI (several GB, once). With
# --python it uses an interpreter that already has numpy, torch and tensorflow.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
python=""
epochs=10
threads=2
while [ $# -gt 0 ]; do
    case "$1" in
        --python) python="$2"; shift 2 ;;
        --epochs) epochs="$2"; shift 2 ;;
        --threads) threads="$2"; shift 2 ;;
        -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
        *) echo "unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done

. "$here/python_env.sh"
python_with numpy torch tensorflow

(cd "$root" && cargo build --release -p cli --quiet)
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

echo "== sae ($threads threads)" >&2
"$root/target/release/sae" train --epochs "$epochs" --threads "$threads" --out "$work/sae" >&2
echo "== PyTorch ($threads threads)" >&2
"$python" "$here/pytorch_sae.py" --epochs "$epochs" --threads "$threads" | tee "$work/pytorch.log" >&2
echo "== Keras ($threads threads)" >&2
"$python" "$here/keras_sae.py" --epochs "$epochs" --threads "$threads" 2>&1 | tee "$work/keras.log" >&2

python3 - "$work" "$(nproc)" "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)" <<'PY'
import json, sys
work, cores, cpu = sys.argv[1], sys.argv[2], sys.argv[3].strip()
def summary(log):
    for line in open(f"{work}/{log}"):
        if line.startswith("SUMMARY "):
            return json.loads(line[len("SUMMARY "):])
    raise SystemExit(f"no SUMMARY line in {log}")
history = json.load(open(f"{work}/sae/history.json"))
seconds = [e["seconds"] for e in history]
steady = seconds[1:] or seconds
ours = {"name": "sae", "seconds_per_epoch": sum(steady) / len(steady),
        "val_loss": history[-1]["val_loss"]}
rows = [ours, summary("pytorch.log"), summary("keras.log")]
print(f"{cpu}, {cores} cores; mean seconds per epoch after the first, validation included")
print(f"{'':24} {'s/epoch':>8} {'val_loss':>9} {'sae is':>10}")
for r in rows:
    ratio = r["seconds_per_epoch"] / ours["seconds_per_epoch"]
    print(f"{r['name']:24} {r['seconds_per_epoch']:8.2f} {r['val_loss']:9.4f} {ratio:9.2f}x")
PY
