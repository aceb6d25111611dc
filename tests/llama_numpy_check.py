"""Cross-check subsae-llama with an independent float64 numpy forward pass.

Usage: llama_numpy_check.py LLAMA_BINARY MODEL.bin WORKDIR [SAE_DIR SITE]

Makes random token ids (BOS first), runs `subsae-llama record` on them and
compares every site with a teacher-forced numpy forward written from the
llama2.c format (relative Frobenius error <= 1e-4); with an SAE, runs
`subsae-llama splice` and compares the clean, spliced, zero- and
mean-ablated losses, loss recovered, KL, explained variance and L0.
Exit 0 when everything agrees, 1 otherwise, 77 when numpy is missing.
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

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sae_numpy_check import encode, load_safetensors  # noqa: E402

KINDS = ["attn_z", "attn_out", "mlp_in", "mlp_out", "resid_post"]


def load_model(path):
    """The header (as a dict) and the float64 weights of a llama2.c checkpoint."""
    with open(path, "rb") as f:
        dim, hidden, layers, heads, kv_heads, vocab, seq_len = struct.unpack("7i", f.read(28))
        data = np.frombuffer(f.read(), dtype=np.float32).astype(np.float64)
    hs = dim // heads
    kvd = kv_heads * hs
    shapes = [("emb", (abs(vocab), dim)), ("rms_att", (layers, dim)), ("wq", (layers, dim, dim)),
              ("wk", (layers, kvd, dim)), ("wv", (layers, kvd, dim)), ("wo", (layers, dim, dim)),
              ("rms_ffn", (layers, dim)), ("w1", (layers, hidden, dim)),
              ("w2", (layers, dim, hidden)), ("w3", (layers, hidden, dim)),
              ("rms_final", (dim,)), ("cos", (seq_len, hs // 2)), ("sin", (seq_len, hs // 2))]
    if vocab < 0:
        shapes.append(("cls", (-vocab, dim)))
    w, at = {}, 0
    for name, shape in shapes:
        n = int(np.prod(shape))
        w[name] = data[at:at + n].reshape(shape)
        at += n
    assert at == len(data), "the file is not one model"
    w.setdefault("cls", w["emb"])
    cfg = dict(dim=dim, layers=layers, heads=heads, kv_heads=kv_heads, hs=hs, vocab=abs(vocab),
               seq_len=seq_len)
    return cfg, w


def rmsnorm(x, weight):
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + 1e-5) * weight


def rotate(x, cos, sin):
    """Rotary embedding of x [B, T, heads, hs] on interleaved pairs."""
    a, b = x[..., 0::2], x[..., 1::2]
    c, s = cos[None, :, None, :], sin[None, :, None, :]
    out = np.empty_like(x)
    out[..., 0::2] = a * c - b * s
    out[..., 1::2] = a * s + b * c
    return out


def forward(cfg, w, ids, replace=None):
    """Logits [B, T, V] and the sites {name: [B, T, dim]}; replace(name, act)
    may return an array that takes the site's place downstream."""
    B, T = ids.shape
    H, KV, hs = cfg["heads"], cfg["kv_heads"], cfg["hs"]
    cos, sin = w["cos"][:T], w["sin"][:T]
    mask = np.triu(np.full((T, T), -np.inf), 1)
    sites = {}

    def site(name, act):
        sites[name] = act
        out = replace(name, act) if replace else None
        return act if out is None else out

    x = w["emb"][ids]
    for l in range(cfg["layers"]):
        h = rmsnorm(x, w["rms_att"][l])
        q = rotate((h @ w["wq"][l].T).reshape(B, T, H, hs), cos, sin)
        k = rotate((h @ w["wk"][l].T).reshape(B, T, KV, hs), cos, sin)
        v = (h @ w["wv"][l].T).reshape(B, T, KV, hs)
        k, v = np.repeat(k, H // KV, axis=2), np.repeat(v, H // KV, axis=2)
        scores = np.einsum("bqhd,bthd->bhqt", q, k) / np.sqrt(hs) + mask
        p = np.exp(scores - scores.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        z = site("L%d_attn_z" % l, np.einsum("bhqt,bthd->bqhd", p, v).reshape(B, T, -1))
        x = x + site("L%d_attn_out" % l, z @ w["wo"][l].T)
        hm = site("L%d_mlp_in" % l, rmsnorm(x, w["rms_ffn"][l]))
        a = hm @ w["w1"][l].T
        x = x + site("L%d_mlp_out" % l, ((a / (1 + np.exp(-a))) * (hm @ w["w3"][l].T)) @ w["w2"][l].T)
        x = site("L%d_resid_post" % l, x)
    return rmsnorm(x, w["rms_final"]) @ w["cls"].T, sites


def log_softmax(logits):
    top = logits.max(-1, keepdims=True)
    return logits - top - np.log(np.exp(logits - top).sum(-1, keepdims=True))


def cross_entropy(logits, ids):
    lp = log_softmax(logits)[:, :-1]
    return -np.take_along_axis(lp, ids[:, 1:, None], -1).mean()


def load_sae(directory):
    with open(os.path.join(directory, "cfg.json")) as f:
        cfg = json.load(f)
    w = load_safetensors(os.path.join(directory, "sae_weights.safetensors"))
    assert cfg["architecture"] == "topk", "unsupported architecture %s" % cfg["architecture"]
    return cfg, {n: a.astype(np.float64) for n, a in w.items()}


def main():
    binary, model_path, workdir = sys.argv[1:4]
    sae_dir, site_name = (sys.argv[4], sys.argv[5]) if len(sys.argv) > 5 else (None, None)
    failures = []

    def check(name, ours, theirs, tol):
        if not abs(ours - theirs) <= tol:
            failures.append("%s: numpy %.8g, subsae-llama %.8g" % (name, ours, theirs))

    cfg, w = load_model(model_path)
    ids = np.random.default_rng(7).integers(0, cfg["vocab"], (3, min(48, cfg["seq_len"]))).astype(np.int32)
    ids[:, 0] = 1
    tokens = os.path.join(workdir, "tokens.npy")
    np.save(tokens, ids)
    rec = os.path.join(workdir, "rec")
    subprocess.run([binary, "record", model_path, "--tokens", tokens, "--out", rec,
                    "--overwrite"], check=True, capture_output=True)
    logits, sites = forward(cfg, w, ids)
    if not np.array_equal(np.load(os.path.join(rec, "tokens.npy")), ids):
        failures.append("tokens.npy differs from the ids given")
    worst = 0.0
    for name, ours in sites.items():
        theirs = np.load(os.path.join(rec, name + ".npy")).astype(np.float64)
        ours = ours.reshape(-1, cfg["dim"])
        err = np.linalg.norm(ours - theirs) / np.linalg.norm(ours)
        worst = max(worst, err)
        if not err <= 1e-4:
            failures.append("%s: relative Frobenius error %.3g" % (name, err))
    print("%d sites, worst relative error %.3g" % (len(sites), worst))

    if sae_dir:
        sae_cfg, sw = load_sae(sae_dir)
        source = site_name.replace("mlp_out", "mlp_in") if sae_cfg.get("transcoder") else site_name
        x = sites[source].reshape(-1, cfg["dim"])
        z, _ = encode(x, sw, sae_cfg)
        xhat = z @ sw["W_dec"] + sw["b_dec"]
        target = sites[site_name].reshape(-1, cfg["dim"])
        mean = target.mean(0)
        runs, shape = {"clean": logits}, sites[site_name].shape
        for variant, value in [("spliced", xhat.reshape(shape)), ("zero", np.zeros(shape)),
                               ("mean_ablated", np.broadcast_to(mean, shape))]:
            runs[variant], _ = forward(cfg, w, ids,
                                       lambda name, act, v=value: v if name == site_name else None)
        loss = {v: cross_entropy(l, ids) for v, l in runs.items()}
        lp_clean, lp_spliced = log_softmax(runs["clean"])[:, :-1], log_softmax(runs["spliced"])[:, :-1]
        kl = (np.exp(lp_clean) * (lp_clean - lp_spliced)).sum(-1).mean()
        ev = 1 - ((target - xhat) ** 2).sum() / ((target - mean) ** 2).sum()
        out = subprocess.run([binary, "splice", model_path, sae_dir, "--site", site_name,
                              "--tokens", tokens, "--json"], check=True, capture_output=True,
                             text=True).stdout
        theirs = json.loads(out)
        check("loss_clean", loss["clean"], theirs["loss_clean"], 1e-4)
        check("loss_spliced", loss["spliced"], theirs["loss_spliced"], 2e-3)
        check("loss_zero", loss["zero"], theirs["loss_zero"], 1e-4)
        check("loss_mean_ablated", loss["mean_ablated"], theirs["loss_mean_ablated"], 1e-4)
        recovered = (loss["zero"] - loss["spliced"]) / (loss["zero"] - loss["clean"])
        check("loss_recovered", recovered, theirs["loss_recovered"], 2e-2 * max(1, abs(recovered)))
        check("kl_spliced", kl, theirs["kl_spliced"], 2e-3 + 2e-2 * kl)
        check("explained_variance", ev, theirs["explained_variance"], 1e-3)
        check("l0", (z > 0).sum(1).mean(), theirs["l0"], 0.05)
        print("losses clean %.5f spliced %.5f (subsae-llama %.5f, %.5f)" % (
            loss["clean"], loss["spliced"], theirs["loss_clean"], theirs["loss_spliced"]))
    for line in failures:
        print(line, file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
