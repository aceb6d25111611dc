"""Cross-check a saved gated SAE with numpy: load DIR (cfg.json and
sae_weights.safetensors, read by sae_numpy_check's safetensors reader), run
SAELens' GatedSAE forward written out here (sae_lens/saes/gated_sae.py:
sae_in = x - b_dec * apply_b_dec_to_input; gate = (sae_in @ W_enc + b_gate
> 0); magnitude = relu(sae_in @ (W_enc * exp(r_mag)) + b_mag); z = gate *
magnitude; x_hat = z @ W_dec + b_dec) and compare its explained variance
and L0 with `subsae eval --json` on INPUT.npy.

Usage: gated_numpy_check.py SUBSAE_BINARY DIR INPUT.npy
Exit 0 when the explained variance agrees to 1e-3 (and L0 to 1e-3
relative), 1 otherwise, 77 when numpy is missing.
"""
import json
import os
import subprocess
import sys

try:
    import numpy as np
except ImportError:  # the Check test skips
    sys.exit(77)

# The safetensors reader of the plain cross-check (same folder).
from sae_numpy_check import load_safetensors  # noqa: E402


def gated_forward(x, w, cfg):
    sae_in = x - w["b_dec"] * float(cfg["apply_b_dec_to_input"])
    gate = (sae_in @ w["W_enc"] + w["b_gate"]) > 0
    magnitude = np.maximum(sae_in @ (w["W_enc"] * np.exp(w["r_mag"])) + w["b_mag"], 0.0)
    z = gate * magnitude
    return z, z @ w["W_dec"] + w["b_dec"]


def main():
    binary, directory, input_path = sys.argv[1:4]
    with open(os.path.join(directory, "cfg.json")) as f:
        cfg = json.load(f)
    w = {
        name: tensor.astype(np.float64)
        for name, tensor in load_safetensors(
            os.path.join(directory, "sae_weights.safetensors")
        ).items()
    }
    assert cfg["architecture"] == "gated", cfg["architecture"]
    assert sorted(w) == sorted(["W_enc", "b_gate", "r_mag", "b_mag", "W_dec", "b_dec"]), sorted(w)
    d_in, d_sae = w["W_enc"].shape
    assert cfg["d_in"] == d_in and cfg["d_sae"] == d_sae
    assert cfg["normalize_activations"] == "none"
    x = np.load(input_path).astype(np.float64)
    z, xhat = gated_forward(x, w, cfg)
    err = ((x - xhat) ** 2).sum()
    sst = ((x - x.mean(0)) ** 2).sum()
    ours = {"explained_variance": 1 - err / sst, "l0": (z > 0).sum(1).mean()}
    out = subprocess.run([binary, "eval", directory, input_path, "--json"], check=True,
                         capture_output=True, text=True).stdout
    theirs = json.loads(out)
    failures = []
    if not abs(ours["explained_variance"] - theirs["explained_variance"]) <= 1e-3:
        failures.append("explained_variance")
    if not abs(ours["l0"] - theirs["l0"]) <= 1e-3 * max(1.0, theirs["l0"]):
        failures.append("l0")
    print("numpy gated forward of %s on %d rows: explained variance %.6f (subsae eval %.6f), "
          "L0 %.4f (subsae eval %.4f): %s"
          % (directory, len(x), ours["explained_variance"], theirs["explained_variance"],
             ours["l0"], theirs["l0"], "FAILED " + ", ".join(failures) if failures else "agrees"))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
