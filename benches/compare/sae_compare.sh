#!/usr/bin/env bash
# Trains the same TopK sparse autoencoder with `sae train --arch topk` and with the dense
# PyTorch trainer pytorch_topk_sae.py, one after the other on this machine, on synthetic
# activations made once by sae_rows.py, and prints each one's rows per second, the
# speed-up, their final validation FVU and its relative difference.
#
#   benches/compare/sae_compare.sh [--python PYTHON] [--threads 2] [--latents 8192]
#       [--d 512] [--k 32] [--batch-size 4096] [--steps 10 | --rows ROWS] [--valid 8192]
#       [--epochs 3] [--lr-warmup 10] [--dead-after ROWS] [--features 4096] [--active 8]
#       [--seed 0] [--sae PATH] [--no-train-only] [--keep DIR]
#
# --steps is the training steps per epoch (training rows = steps * batch size); --rows
# gives the training rows instead. --valid more rows follow them in the file and
# validate. Both trainers use the same settings: lr 2e-4 / sqrt(latents / 16384) with a
# linear warm-up of --lr-warmup steps, Adam (0.9, 0.999, 1e-7), AuxK 1/32 on latents dead
# for --dead-after rows (default 10M, so none in a run this short), a fresh shuffle of
# the training rows every epoch. They start from different random decoders and shuffle
# differently, so their FVUs agree statistically, not to the bit.
#
# What the numbers include:
# - "rows/s incl. valid": training rows / an epoch's seconds, where the epoch includes
#   its validation pass over the --valid rows (as `sae train` times its epochs: the
#   seconds column of its history.json, the "Epoch i/n - X s" lines), the mean over the
#   epochs after the first. Both trainers do the same work here; this is the like-for-
#   like figure.
# - "train rows/s": training only (gathering the batches, the steps, the bookkeeping).
#   For PyTorch its own timer around the training loop. For `sae`, whose epoch seconds
#   always include validation, a second `sae train` run with --valid 0 on the same file
#   (training on all its rows; its epoch seconds are then training only); skip it with
#   --no-train-only.
# - The "Done in ..." line of `sae train` (kept in the log) averages over all epochs,
#   the first included, and counts validation and the writing of history files.
# Set-up (reading the first batch, the input scale, b_dec's geometric median) is outside
# all of these.
#
# Without --python the script makes a virtual environment in benches/compare/.venv and
# installs NumPy and PyTorch there from PyPI (once). Without --sae it uses
# target/release/sae, building it first if it is missing.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
python=""
threads=2
latents=8192
d=512
k=32
batch=4096
steps=10
rows=""
valid=8192
epochs=3
warmup=10
dead_after=""
features=4096
active=8
seed=0
sae=""
train_only=1
keep=""
while [ $# -gt 0 ]; do
    case "$1" in
        --python) python="$2"; shift 2 ;;
        --threads) threads="$2"; shift 2 ;;
        --latents) latents="$2"; shift 2 ;;
        --d) d="$2"; shift 2 ;;
        --k) k="$2"; shift 2 ;;
        --batch-size) batch="$2"; shift 2 ;;
        --steps) steps="$2"; rows=""; shift 2 ;;
        --rows) rows="$2"; shift 2 ;;
        --valid) valid="$2"; shift 2 ;;
        --epochs) epochs="$2"; shift 2 ;;
        --lr-warmup) warmup="$2"; shift 2 ;;
        --dead-after) dead_after="$2"; shift 2 ;;
        --features) features="$2"; shift 2 ;;
        --active) active="$2"; shift 2 ;;
        --seed) seed="$2"; shift 2 ;;
        --sae) sae="$2"; shift 2 ;;
        --no-train-only) train_only=0; shift ;;
        --keep) keep="$2"; shift 2 ;;
        -h|--help) sed -n '2,39p' "$0"; exit 0 ;;
        *) echo "unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
train_rows="${rows:-$((steps * batch))}"
total=$((train_rows + valid))

. "$here/python_env.sh"
python_with numpy torch
if [ -z "$sae" ]; then
    sae="$root/target/release/sae"
    if [ ! -x "$sae" ]; then
        (cd "$root" && cargo build --release -p cli --quiet)
    fi
fi
[ -x "$sae" ] || { echo "no sae binary at $sae" >&2; exit 1; }

if [ -n "$keep" ]; then
    work="$keep"
    mkdir -p "$work"
else
    work="$(mktemp -d)"
    trap 'rm -rf "$work"' EXIT
fi

"$python" "$here/sae_rows.py" --rows "$total" --d "$d" --features "$features" \
    --active "$active" --seed "$seed" --out "$work/rows.npy" >&2

settings=(--latents "$latents" --k "$k" --batch-size "$batch" --epochs "$epochs"
    --lr-warmup "$warmup" --threads "$threads" ${dead_after:+--dead-after "$dead_after"})
echo "== sae train --arch topk ($threads threads)" >&2
"$sae" train --arch topk --data "$work/rows.npy" --valid "$valid" "${settings[@]}" \
    --out "$work/sae" 2>&1 | tee "$work/sae.log" >&2
if [ "$train_only" = 1 ]; then
    echo "== sae train --arch topk --valid 0 (training only, all $total rows)" >&2
    "$sae" train --arch topk --data "$work/rows.npy" --valid 0 "${settings[@]}" \
        --out "$work/sae-train-only" 2>&1 | tee "$work/sae-train-only.log" >&2
fi
echo "== PyTorch ($threads threads)" >&2
"$python" "$here/pytorch_topk_sae.py" --data "$work/rows.npy" --valid "$valid" "${settings[@]}" \
    | tee "$work/pytorch.log" >&2

"$python" - "$work" "$train_rows" "$total" "$train_only" \
    "$(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')" \
    "d $d, $latents latents, k $k, batch $batch, $train_rows training rows ($(((train_rows + batch - 1) / batch)) steps) x $epochs epochs, $valid validation rows, $threads threads" <<'PY'
import json, sys
work, train_rows, total, train_only, machine, setting = sys.argv[1:]
train_rows, total = int(train_rows), int(total)

def steady(history):
    return history[1:] or history

history = json.load(open(f"{work}/sae/history.json"))
ours = {
    "with_valid": train_rows * len(steady(history)) / sum(e["seconds"] for e in steady(history)),
    "train": None,
    "fvu": history[-1]["fvu"],
    "l0": history[-1]["l0"],
}
if train_only == "1":
    alone = json.load(open(f"{work}/sae-train-only/history.json"))
    ours["train"] = total * len(steady(alone)) / sum(e["seconds"] for e in steady(alone))
torch = json.loads(open(f"{work}/pytorch.log").read().strip().splitlines()[-1])
theirs = {
    "with_valid": torch["rows_per_second_with_validation"],
    "train": torch["rows_per_second"],
    "fvu": torch["fvu"],
    "l0": torch["l0"],
}

def cell(v, width, fmt, suffix=""):
    return (format(v, fmt) + suffix if v is not None else "-").rjust(width)

print(f"{machine}")
print(f"{setting}; rows/s: mean over the epochs after the first")
print(f"{'':22} {'train rows/s':>13} {'rows/s incl. valid':>19} {'final fvu':>10} {'l0':>7}")
for name, r in (("sae", ours), (torch["name"], theirs)):
    print(f"{name:22} {cell(r['train'], 13, '.0f')} {cell(r['with_valid'], 19, '.0f')}"
          f" {r['fvu']:10.4f} {r['l0']:7.2f}")
speed = lambda key: (ours[key] / theirs[key]) if ours[key] and theirs[key] else None
print(f"{'sae speed-up':22} {cell(speed('train'), 13, '.2f', 'x')}"
      f" {cell(speed('with_valid'), 19, '.2f', 'x')}")
difference = abs(ours["fvu"] - theirs["fvu"]) / theirs["fvu"]
print(f"FVU relative difference |sae - PyTorch| / PyTorch: {100 * difference:.2f}%")
PY
