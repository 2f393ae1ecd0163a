"""Synthetic model activations for the TopK SAE comparison: an .npy of float32 rows (C
order, shape [rows, d]) written without holding them all in memory.

Each row is a sparse non-negative combination of `features` random unit-norm directions
in R^d plus Gaussian noise:

    x = sum_j a_j u_j + noise,   a_j = c_j * m_j,

where u_j are drawn once (standard normal, normalised) from the seed, c_j ~ Bernoulli(
active / features) independently for every row and feature (so about `active` features
per row), m_j ~ Uniform[0, 1), and noise ~ N(0, noise^2) per value (default 0.01: its
share of the variance is about 2% at d 512 and 8 active features).

Rows are made in blocks of 2048, each block from its own generator seeded by
(seed, block): a file of more rows begins with the same rows as a file of fewer."""

import argparse

import numpy as np

BLOCK = 2048


def directions(rng, features, d):
    """`features` random unit-norm rows of R^d, float32."""
    u = rng.standard_normal((features, d))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    return u.astype(np.float32)


def block_rows(seed, block, u, active, noise):
    """Rows `block * BLOCK ..` (BLOCK of them) of the data set."""
    features, d = u.shape
    rows = BLOCK
    rng = np.random.default_rng([seed, 1, block])
    on = rng.random((rows, features), dtype=np.float32) < active / features
    which_row, which_feature = np.nonzero(on)
    magnitude = rng.random(len(which_row), dtype=np.float32)
    # Slot of each active feature within its row, so the sum runs over a few slots.
    counts = np.bincount(which_row, minlength=rows)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    slot = np.arange(len(which_row)) - starts[which_row]
    slots = int(counts.max(initial=0))
    index = np.zeros((rows, slots), np.int64)
    weight = np.zeros((rows, slots), np.float32)
    index[which_row, slot] = which_feature
    weight[which_row, slot] = magnitude
    x = (noise * rng.standard_normal((rows, d))).astype(np.float32)
    for s in range(slots):
        x += weight[:, s : s + 1] * u[index[:, s]]
    return x


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, required=True)
    parser.add_argument("--d", type=int, default=512)
    parser.add_argument("--features", type=int, default=4096)
    parser.add_argument("--active", type=float, default=8)
    parser.add_argument("--noise", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    if not (0 < args.active <= args.features):
        raise SystemExit("--active must lie in (0, --features]")
    u = directions(np.random.default_rng([args.seed, 0]), args.features, args.d)
    out = np.lib.format.open_memmap(args.out, mode="w+", dtype="<f4", shape=(args.rows, args.d))
    for block, start in enumerate(range(0, args.rows, BLOCK)):
        rows = min(BLOCK, args.rows - start)
        out[start : start + rows] = block_rows(args.seed, block, u, args.active, args.noise)[:rows]
    out.flush()
    del out
    print(f"wrote {args.out}: {args.rows} x {args.d} float32 ({args.features} features, "
          f"~{args.active:g} active a row, noise {args.noise:g}, seed {args.seed})")


if __name__ == "__main__":
    main()
