"""Encodes rows with SAEs that `sae export` wrote, independently of `sae`, as SAELens v6
and sparsify would, and compares with `sae encode`'s codes and the model's
reconstructions. Run by tests/export.rs with a JSON list of cases; exits 3 when numpy or
safetensors is missing, 1 when a comparison fails."""

import json
import sys

try:
    import numpy as np
    from safetensors.numpy import load_file
except ImportError as e:
    print(f"{e}", file=sys.stderr)
    sys.exit(3)

REL = 1e-5  # relative tolerance
FLOOR = 1e-6  # absolute floor, as a fraction of the largest value compared


def topk_then_relu(pre, k):
    """SAELens' TopK: the k largest pre-activations of each row, then ReLU."""
    idx = np.argsort(-pre, axis=1, kind="stable")[:, :k]
    out = np.zeros_like(pre)
    rows = np.arange(pre.shape[0])[:, None]
    out[rows, idx] = np.maximum(pre[rows, idx], 0)
    return out


def relu_then_topk(pre, k):
    """sparsify's encoder: ReLU, then the k largest of each row."""
    return topk_then_relu(np.maximum(pre, 0), k)


def compare(what, got, want, boundary=None):
    """Max relative difference (over values above the floor) and max absolute
    difference over the largest value; fails beyond REL relative plus the floor. With
    `boundary` (the value a latent must pass to be kept: each row's k-th largest
    reference activation as a column, or each latent's threshold as a row), a latent kept
    by one side and not the other passes only if its value ties the boundary within the
    tolerance."""
    scale = max(float(np.abs(want).max()), 1e-30)
    floor = FLOOR * scale
    err = np.abs(got - want)
    allowed = REL * np.abs(want) + floor
    bad = err > allowed
    ties = 0
    if boundary is not None and bad.any():
        nonzero = np.where(got != 0, got, want)
        tie = np.abs(nonzero - boundary) <= REL * np.abs(boundary) + floor
        ties = int((bad & tie & ((got == 0) != (want == 0))).sum())
        bad &= ~(tie & ((got == 0) != (want == 0)))
    big = np.abs(want) > floor / REL
    rel = float((err[big] / np.abs(want[big])).max()) if big.any() else 0.0
    result = {
        "what": what,
        "max_rel": rel,
        "max_abs_over_scale": float(err.max() / scale),
        "max_err_over_tolerance": float((err / allowed).max()),
        "selection_ties": ties,
        "values": int(want.size),
        "nonzero": int((want != 0).sum()),
    }
    if bad.any():
        r, c = np.argwhere(bad)[0]
        result["failure"] = f"row {r}, column {c}: {float(got[r, c])!r} against {float(want[r, c])!r}"
    return result


def check(case):
    x = np.load(case["rows"]).astype(np.float64)
    codes = np.load(case["codes"]).astype(np.float64)
    recon = np.load(case["recon"]).astype(np.float64)
    d = x.shape[1]
    with open(case["dir"] + "/cfg.json") as f:
        cfg = json.load(f)
    boundary = None
    if case["format"] == "saelens":
        t = load_file(case["dir"] + "/sae_weights.safetensors")
        names = ["W_dec", "W_enc", "b_dec", "b_enc"]
        if cfg["architecture"] == "jumprelu":
            names.append("threshold")
        assert sorted(t) == names, sorted(t)
        n = cfg["d_sae"]
        assert cfg["d_in"] == d and t["W_enc"].shape == (d, n) and t["W_dec"].shape == (n, d)
        assert cfg["normalize_activations"] == "none"
        w_enc, b_enc = t["W_enc"].astype(np.float64), t["b_enc"].astype(np.float64)
        w_dec, b_dec = t["W_dec"].astype(np.float64), t["b_dec"].astype(np.float64)
        sae_in = x - b_dec if cfg["apply_b_dec_to_input"] else x
        pre = sae_in @ w_enc + b_enc
        if cfg["architecture"] == "jumprelu":
            # SAELens' JumpReLU: ReLU, then zero where not above the latent's threshold.
            theta = t["threshold"].astype(np.float64)
            assert theta.shape == (n,) and (theta > 0).all()
            k = None
            ref = np.maximum(pre, 0) * (pre > theta)
            boundary = theta[None, :]
        elif cfg["architecture"] == "topk":
            assert cfg["rescale_acts_by_decoder_norm"] is False
            k = cfg["k"]
            ref = topk_then_relu(pre, k)
        else:
            assert cfg["architecture"] == "standard", cfg["architecture"]
            k = None
            ref = np.maximum(pre, 0)
    else:
        t = load_file(case["dir"] + "/sae.safetensors")
        assert sorted(t) == ["W_dec", "b_dec", "encoder.bias", "encoder.weight"], sorted(t)
        n = cfg["num_latents"]
        assert cfg["d_in"] == d and t["encoder.weight"].shape == (n, d)
        assert cfg["activation"] == "topk" and not cfg["transcode"] and not cfg["skip_connection"]
        enc_w, enc_b = t["encoder.weight"].astype(np.float64), t["encoder.bias"].astype(np.float64)
        w_dec, b_dec = t["W_dec"].astype(np.float64), t["b_dec"].astype(np.float64)
        pre = (x - b_dec) @ enc_w.T + enc_b
        k = cfg["k"]
        ref = relu_then_topk(pre, k)
    if k is not None:
        boundary = -np.sort(-np.maximum(pre, 0), axis=1)[:, k - 1][:, None]
    results = [compare("codes", codes, ref, boundary)]
    # Decoding `sae encode`'s codes with the export against the model's reconstructions.
    results.append(compare("reconstructions", codes @ w_dec + b_dec, recon))
    return results


def main():
    with open(sys.argv[1]) as f:
        cases = json.load(f)
    failed = False
    summary = {"max_rel": 0.0, "max_abs_over_scale": 0.0, "max_err_over_tolerance": 0.0}
    for case in cases:
        for result in check(case):
            result["case"] = case["name"]
            print(json.dumps(result))
            failed |= "failure" in result
            for key in summary:
                summary[key] = max(summary[key], result[key])
    print(json.dumps({"summary": summary}))
    sys.exit(1 if failed else 0)


main()
