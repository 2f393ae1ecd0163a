"""A TopK sparse autoencoder trained in PyTorch with the mathematics of `sae train --arch
topk`, written densely as SAELens, sparsify and dictionary_learning write it (dense codes
from torch.topk + scatter, dense decoder product, autograd for the gradients).

Data: an .npy of float32 rows [rows, d], opened with np.load(mmap_mode="r"); the last
--valid rows validate, the others train. Batches are gathered from the memory map one at a
time (never the whole file).

What is matched (crates/nn/src/sae, crates/cli/src/train.rs):
- input scale s = sqrt(d / mean |x|^2) over the first min(batch, rows) rows of the file
  (f64 sums); everything below is in the space of t = s x;
- b_dec = the geometric median of those scaled rows (Weiszfeld in f64 from their mean,
  at most 100 iterations, stop when a step moves less than 1e-5 * max(|estimate|, 1),
  weights 1 / max(distance, 1e-12));
- decoder rows Gaussian at unit norm, W_enc = W_dec^T, b_enc = 0 (the directions come
  from torch's generator, not the Rust trainer's ChaCha8: use --init-from to start from
  a `sae` model's weights instead);
- z = (t - b_dec) W_enc + b_enc; f = the k largest of relu(z) per row, scattered into a
  dense [B, N] code; x^ = f W_dec + b_dec; loss = mean over rows of |x^ - t|^2;
- AuxK: r = t - x^ (detached); e^ = the k_aux = min(d/2, N) largest relu(z) among the
  dead latents (capped at their number), times W_dec, no bias; loss += (1/32) |e^ - r|^2 /
  |r - mean_rows(r)|^2; dead = not fired in the last --dead-after rows (10M: none dead
  in a short run). `sae train` at present never clears its per-step firing counts
  (DeadLatents::record in crates/nn/src/sae/step.rs), so there a latent that has fired
  once is never dead again; --dead-only-if-never-fired reproduces that;
- the decoder gradient's component along each decoder row is removed, then Adam in
  Keras' form (the Rust trainer's: alpha = lr sqrt(1 - b2^t) / (1 - b1^t),
  w -= alpha m / (sqrt(v) + 1e-7), which torch.optim.Adam does not compute: its eps sits
  inside the bias correction), then the decoder rows are renormalised; no gradient
  clipping;
- lr = 2e-4 / sqrt(N / 16384), times min(t / warmup, 1) at step t (from 1);
- every epoch a fresh permutation of the training rows (numpy's from the seed, not the
  Rust trainer's ChaCha8 one), the last batch smaller if the rows do not divide;
- validation in batches of --batch-size: mse and fvu on raw rows (x^ / s against x; fvu
  = sum |x - x^|^2 / sum |x - mean x|^2 over the validation rows), val_loss the mean
  scaled |x^ - t|^2, l0 = mean #{f > 0}, dead_latents = latents never > 0 there.

Checking the mathematics against `sae`: `sae train --arch topk --epochs 1 --lr 1e-30 ...
--out init` saves (in effect) its initial weights; with --init-from init/model.safetensors
and as many training rows as one batch (so the shuffle cannot matter), this script's
per-epoch loss, val_loss and fvu follow a `sae train` run with the same seed and settings
to the printed digits (checked over 12 steps), and its weights stay within 1e-7 of that
run's (checked after 4).

Timing: an epoch's training seconds cover gathering the batches, the steps and the
bookkeeping, not the validation, which is timed apart. The last line printed is one JSON
object: rows_per_second (training rows / training seconds, mean over the epochs after the
first when there are several), rows_per_second_with_validation (the same, the validation
pass counted in each epoch's seconds, as `sae train` counts it), and the last epoch's fvu,
l0, mse, val_loss, dead_latents, and seconds (all epochs' training seconds)."""

import argparse
import json
import math
import struct
import time

import numpy as np
import torch

BETA1, BETA2, ADAM_EPSILON = 0.9, 0.999, 1e-7  # crates/nn/src/optimizer.rs (Keras)
AUXK_COEFFICIENT = 1.0 / 32.0
DEAD_AFTER_ROWS = 10_000_000
WEISZFELD_ITERATIONS, WEISZFELD_TOLERANCE = 100, 1e-5


def arguments():
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", required=True, help=".npy of float32 rows [rows, d]")
    parser.add_argument("--latents", type=int, default=8192)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--valid", type=int, default=8192, help="validation rows, the file's last")
    parser.add_argument("--lr", type=float, help="default 2e-4 / sqrt(latents / 16384)")
    parser.add_argument("--lr-warmup", type=int, default=1000, help="steps")
    parser.add_argument("--auxk-coefficient", type=float, default=AUXK_COEFFICIENT)
    parser.add_argument("--k-aux", type=int, help="default min(d / 2, latents)")
    parser.add_argument("--dead-after", type=int, default=DEAD_AFTER_ROWS, help="rows")
    parser.add_argument(
        "--dead-only-if-never-fired",
        action="store_true",
        help="a latent that has fired once is never dead again (what `sae train` does now)",
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--no-shuffle", action="store_true", help="batches in file order")
    parser.add_argument(
        "--init-from",
        help="start from the weights and input scale of a `sae train` model.safetensors",
    )
    parser.add_argument("--quiet", action="store_true", help="only the final JSON line")
    return parser.parse_args()


def read_sae_model(path):
    """(input_scale, {name: array}) of a `sae train` model.safetensors."""
    with open(path, "rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(length))
        data = f.read()
    metadata = header.pop("__metadata__", {})
    config = json.loads(metadata["config"])
    if config.get("sae", {}).get("arch") != "topk":
        raise SystemExit(f"{path}: not a topk SAE")
    tensors = {}
    for name, info in header.items():
        if info["dtype"] != "F32":
            continue
        start, end = info["data_offsets"]
        tensors[name] = np.frombuffer(data[start:end], "<f4").reshape(info["shape"]).copy()
    return config["sae"]["input_scale"], tensors


def input_scale(rows):
    """sqrt(d / mean |x|^2) over `rows`, f64 sums, as float32 (1 for all-zero rows)."""
    squares = float(np.square(rows, dtype=np.float64).sum())
    if len(rows) == 0 or squares <= 0:
        return np.float32(1.0)
    return np.float32(math.sqrt(rows.shape[1] / (squares / len(rows))))


def geometric_median(rows):
    """Weiszfeld's iteration in f64 from the mean, as crates/nn/src/geometric_median.rs."""
    rows = torch.as_tensor(rows, dtype=torch.float64)
    estimate = rows.mean(0)
    for _ in range(WEISZFELD_ITERATIONS):
        weights = 1.0 / (rows - estimate).norm(dim=1).clamp_min(1e-12)
        following = (weights[:, None] * rows).sum(0) / weights.sum()
        moved = float((following - estimate).norm())
        norm = float(estimate.norm())
        estimate = following
        if moved <= WEISZFELD_TOLERANCE * max(norm, 1.0):
            break
    return estimate.float()


class TopKSae:
    """The parameters, Adam's moments and the dead-latent counts."""

    def __init__(self, args, d, sample):
        n = args.latents
        if args.init_from:
            scale, t = read_sae_model(args.init_from)
            self.scale = np.float32(scale)
            w_enc, b_enc = t["layers.0.weight"], t["layers.0.bias"]
            w_dec, b_dec = t["layers.1.weight"], t["layers.1.bias"]
            if w_enc.shape != (d, n):
                raise SystemExit(f"{args.init_from}: W_enc {w_enc.shape}, expected {(d, n)}")
            tensors = [torch.from_numpy(a) for a in (w_enc, b_enc, w_dec, b_dec)]
        else:
            self.scale = input_scale(sample)
            generator = torch.Generator().manual_seed(args.seed)
            w_dec = torch.randn(n, d, dtype=torch.float64, generator=generator)
            w_dec = (w_dec / w_dec.norm(dim=1, keepdim=True)).float()
            b_dec = geometric_median(torch.from_numpy(sample) * float(self.scale))
            tensors = [w_dec.t().contiguous(), torch.zeros(n), w_dec, b_dec]
        self.params = [p.clone().requires_grad_(True) for p in tensors]
        self.w_enc, self.b_enc, self.w_dec, self.b_dec = self.params
        self.m = [torch.zeros_like(p) for p in self.params]
        self.v = [torch.zeros_like(p) for p in self.params]
        self.steps = 0
        self.k = args.k
        self.k_aux = args.k_aux if args.k_aux is not None else min(max(d // 2, 1), n)
        self.auxk_coefficient = args.auxk_coefficient
        self.dead_after = args.dead_after
        self.since_fired = torch.zeros(n, dtype=torch.int64)
        self.sticky = args.dead_only_if_never_fired
        self.ever_fired = torch.zeros(n, dtype=torch.bool)

    def encode(self, t):
        """relu(z) and the dense code of the k largest per row."""
        z = (t - self.b_dec) @ self.w_enc + self.b_enc
        acts = torch.relu(z)
        values, indices = acts.topk(self.k, dim=1, sorted=False)
        return acts, torch.zeros_like(acts).scatter(1, indices, values)

    def loss(self, t):
        """(loss, reconstruction's mean |x^ - t|^2, AuxK's term, codes) of scaled rows t."""
        acts, f = self.encode(t)
        x_hat = f @ self.w_dec + self.b_dec
        reconstruction = (x_hat - t).pow(2).sum() / len(t)
        aux = torch.zeros(())
        dead = self.since_fired >= self.dead_after
        dead_count = int(dead.sum())
        if self.auxk_coefficient > 0 and dead_count > 0:
            residual = (t - x_hat).detach()
            variance = (residual - residual.mean(0)).pow(2).sum()
            if variance > 0:
                k_aux = min(self.k_aux, dead_count)
                values, indices = (acts * dead).topk(k_aux, dim=1, sorted=False)
                aux_codes = torch.zeros_like(acts).scatter(1, indices, values)
                e_hat = aux_codes @ self.w_dec
                aux = self.auxk_coefficient * (e_hat - residual).pow(2).sum() / variance
        return reconstruction + aux, reconstruction, aux, f

    @torch.no_grad()
    def step(self, lr):
        """Project the decoder's gradient, Keras' Adam at `lr`, renormalise the decoder."""
        w, g = self.w_dec, self.w_dec.grad
        squares = (w * w).sum(1, keepdim=True)
        along = torch.where(squares > 0, (g * w).sum(1, keepdim=True) / squares, 0.0)
        g -= along * w
        self.steps += 1
        alpha = lr * math.sqrt(1 - BETA2**self.steps) / (1 - BETA1**self.steps)
        for p, m, v in zip(self.params, self.m, self.v):
            grad = p.grad
            m.add_(grad - m, alpha=1 - BETA1)
            v.add_(grad * grad - v, alpha=1 - BETA2)
            p.sub_(alpha * m / (v.sqrt() + ADAM_EPSILON))
            p.grad = None
        norms = w.norm(dim=1, keepdim=True)
        w.div_(torch.where(norms > 0, norms, 1.0))

    def record_firing(self, f):
        fired = (f > 0).any(0)
        if self.sticky:
            self.ever_fired |= fired
            fired = self.ever_fired
        self.since_fired += len(f)
        self.since_fired[fired] = 0

    @torch.no_grad()
    def evaluate(self, data, start, end, batch):
        """mse, fvu (raw rows), val_loss (scaled), l0, dead latents over rows start..end."""
        n, d = end - start, data.shape[1]
        sse = squared_scaled = active = 0.0
        squares, columns = 0.0, torch.zeros(d, dtype=torch.float64)
        ever = torch.zeros(self.w_enc.shape[1], dtype=torch.bool)
        for first in range(start, end, batch):
            x = torch.from_numpy(np.array(data[first : min(first + batch, end)], np.float32))
            t = x * float(self.scale)
            _, f = self.encode(t)
            x_hat = f @ self.w_dec + self.b_dec
            squared_scaled += float((x_hat - t).double().pow(2).sum())
            sse += float((x - x_hat / float(self.scale)).double().pow(2).sum())
            x64 = x.double()
            squares += float(x64.pow(2).sum())
            columns += x64.sum(0)
            on = f > 0
            active += float(on.sum())
            ever |= on.any(0)
        centred = squares - float(columns.pow(2).sum()) / n
        return {
            "val_loss": squared_scaled / n,
            "mse": sse / (n * d),
            "fvu": sse / centred,
            "l0": active / n,
            "dead_latents": int((~ever).sum()),
        }


def main():
    args = arguments()
    torch.set_num_threads(args.threads)
    data = np.load(args.data, mmap_mode="r")
    if data.ndim != 2:
        raise SystemExit(f"{args.data}: shape {data.shape}, expected [rows, d]")
    rows, d = data.shape
    if not 0 <= args.valid < rows:
        raise SystemExit(f"--valid {args.valid} leaves no training rows of {rows}")
    if not 0 < args.k <= args.latents:
        raise SystemExit(f"--k {args.k} must lie in 1..={args.latents}")
    train_rows = rows - args.valid
    batch = args.batch_size
    lr = args.lr if args.lr is not None else 2e-4 / math.sqrt(args.latents / 16384)
    say = (lambda *a: None) if args.quiet else (lambda *a: print(*a, flush=True))

    started = time.perf_counter()
    sample = np.array(data[: min(batch, rows)], np.float32)
    sae = TopKSae(args, d, sample)
    say(
        f"PyTorch {torch.__version__}, {args.threads} threads: topk SAE {d} -> {args.latents} "
        f"keeping {args.k}, on {train_rows} rows, validating on {args.valid}; input scale "
        f"{float(sae.scale):.6g}, lr {lr:.4g}, warm-up {args.lr_warmup} steps "
        f"(set-up {time.perf_counter() - started:.2f}s)"
    )

    history = []
    for epoch in range(1, args.epochs + 1):
        epoch_started = time.perf_counter()
        if args.no_shuffle:
            order = np.arange(train_rows)
        else:
            order = np.random.default_rng([args.seed, epoch]).permutation(train_rows)
        loss_sum = 0.0
        for first in range(0, train_rows, batch):
            # Sorted, the gather reads the memory map in increasing order; the batch's
            # sums do not depend on the order of its rows.
            which = np.sort(order[first : first + batch])
            x = torch.from_numpy(np.array(data[which], np.float32))
            t = x * float(sae.scale)
            loss, _, _, f = sae.loss(t)
            loss.backward()
            warm = 1.0 if args.lr_warmup == 0 else min((sae.steps + 1) / args.lr_warmup, 1.0)
            sae.step(lr * warm)
            sae.record_firing(f.detach())
            loss_sum += float(loss.detach()) * len(x)
        train_seconds = time.perf_counter() - epoch_started
        metrics = sae.evaluate(data, train_rows, rows, batch) if args.valid else {}
        seconds = time.perf_counter() - epoch_started
        history.append(
            {"epoch": epoch, "loss": loss_sum / train_rows, **metrics,
             "train_seconds": train_seconds, "seconds": seconds}
        )
        say(
            f"Epoch {epoch}/{args.epochs} - {seconds:.2f}s ({train_seconds:.2f}s training, "
            f"{train_rows / train_seconds:.0f} rows/s) - loss: {loss_sum / train_rows:.4f}"
            + "".join(f" - {k}: {v:.4f}" if isinstance(v, float) else f" - {k}: {v}"
                      for k, v in metrics.items())
        )

    steady = history[1:] or history
    last = history[-1]
    print(
        json.dumps(
            {
                "name": f"PyTorch {torch.__version__}",
                "rows_per_second": train_rows * len(steady) / sum(h["train_seconds"] for h in steady),
                "rows_per_second_with_validation": train_rows * len(steady)
                / sum(h["seconds"] for h in steady),
                "fvu": last.get("fvu"),
                "l0": last.get("l0"),
                "mse": last.get("mse"),
                "val_loss": last.get("val_loss"),
                "dead_latents": last.get("dead_latents"),
                "seconds": sum(h["train_seconds"] for h in history),
                "epochs": args.epochs,
                "train_rows": train_rows,
                "steps": sae.steps,
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
