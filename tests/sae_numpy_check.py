"""Cross-check a saved SAE with numpy: load DIR (cfg.json and
sae_weights.safetensors, parsing the safetensors header by hand),
re-implement encode and decode, and compare with `subsae eval --json` and
`subsae encode`.

Usage: sae_numpy_check.py SUBSAE_BINARY DIR INPUT.npy WORKDIR
Exit 0 when everything agrees (metrics to 1e-4), 1 otherwise, 77 when numpy
is missing.
"""
import json
import os
import struct
import subprocess
import sys

try:
    import numpy as np
except ImportError:  # the Check test skips
    sys.exit(77)

DTYPES = {"F32": np.float32, "F64": np.float64, "F16": np.float16, "I32": np.int32}


def load_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + length])
    base = 8 + length
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        array = np.frombuffer(data[base + begin : base + end], dtype=DTYPES[info["dtype"]])
        tensors[name] = array.reshape(info["shape"])
    return tensors


def encode(x, w, cfg):
    """Codes of rows x (float64): TopK of the pre-activations, then ReLU."""
    xin = x - w["b_dec"] if cfg["apply_b_dec_to_input"] else x
    pre = xin @ w["W_enc"].astype(np.float64) + w["b_enc"]
    k = cfg["k"]
    top = np.argpartition(-pre, k - 1, axis=1)[:, :k]
    rows = np.arange(len(x))[:, None]
    z = np.zeros_like(pre)
    z[rows, top] = np.maximum(pre[rows, top], 0.0)
    return z, pre


def main():
    binary, directory, input_path, workdir = sys.argv[1:5]
    failures = []

    def check(name, ours, theirs, tol, relative=False):
        scale = max(abs(theirs), 1.0) if relative else 1.0
        if not abs(ours - theirs) <= tol * scale:
            failures.append("%s: numpy %.8g, subsae %.8g" % (name, ours, theirs))

    with open(os.path.join(directory, "cfg.json")) as f:
        cfg = json.load(f)
    w = load_safetensors(os.path.join(directory, "sae_weights.safetensors"))
    d_in, d_sae = w["W_enc"].shape
    assert cfg["d_in"] == d_in and cfg["d_sae"] == d_sae, "cfg.json disagrees with W_enc"
    assert w["W_dec"].shape == (d_sae, d_in) and w["b_enc"].shape == (d_sae,)
    assert cfg["architecture"] == "topk" and cfg["dtype"] == "float32"
    assert cfg["normalize_activations"] == "none"

    x = np.load(input_path).astype(np.float64)
    z, pre = encode(x, {n: a.astype(np.float64) for n, a in w.items()}, cfg)
    xhat = z @ w["W_dec"].astype(np.float64) + w["b_dec"]
    err = ((x - xhat) ** 2).sum()
    sst = ((x - x.mean(0)) ** 2).sum()
    fires = (z > 0).sum(0)
    ours = {
        "mse": err / len(x),
        "fvu": err / sst,
        "explained_variance": 1 - err / sst,
        "l0": (z > 0).sum(1).mean(),
        "zero_frequency_fraction": (fires == 0).mean(),
        "dense_fraction": (fires > 0.1 * len(x)).mean(),
    }
    out = subprocess.run([binary, "eval", directory, input_path, "--json"], check=True,
                         capture_output=True, text=True).stdout
    theirs = json.loads(out)
    for name, value in ours.items():
        check(name, value, theirs[name], 1e-4, relative=name == "mse")

    # subsae encode: the same features with the same values, except where
    # two pre-activations tie to within float32 rounding.
    codes_path = os.path.join(workdir, "codes.safetensors")
    subprocess.run([binary, "encode", directory, input_path, "--out", codes_path], check=True,
                   capture_output=True)
    codes = load_safetensors(codes_path)
    indices, values = codes["indices"], codes["values"]
    k = cfg["k"]
    assert indices.shape == (len(x), k) and values.shape == (len(x), k)
    differing = 0
    for i in range(len(x)):
        active = indices[i][indices[i] >= 0]
        mine = np.flatnonzero(z[i] > 0)
        if set(active.tolist()) != set(mine.tolist()):
            kth = np.sort(pre[i])[-k]
            near = np.abs(pre[i] - kth) < 1e-4 * (1 + abs(kth))
            if near.sum() < 2 and not np.any(np.abs(pre[i][mine]) < 1e-4):
                differing += 1
            continue
        if np.any(np.diff(values[i][: len(active)]) > 0):
            failures.append("row %d: values not in descending order" % i)
        if not np.allclose(values[i][: len(active)], z[i][active], rtol=1e-4, atol=1e-4):
            failures.append("row %d: values differ" % i)
    if differing:
        failures.append("%d rows select other features" % differing)
    for line in failures[:20]:
        print(line)
    print("numpy check of %s on %d rows: %s" % (directory, len(x),
                                               "FAILED" if failures else "agrees"))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
