"""Check subsae-llama against an independent float64 numpy forward pass.

Usage: llama_numpy_check.py LLAMA_BINARY MODEL.bin WORKDIR [SAE_DIR SITE]

Writes WORKDIR/tokens.npy (3 sequences of min(48, seq_len) random ids, BOS
first), runs `LLAMA_BINARY record` on them and compares every site with a
teacher-forced numpy forward of the llama2.c checkpoint (relative Frobenius
error <= 1e-4). With SAE_DIR and SITE, runs `LLAMA_BINARY splice --json`
and compares the clean, spliced, zero- and mean-ablated losses, loss
recovered, KL, explained variance and L0. A transcoder at L{l}_mlp_out
predicts from L{l}_mlp_in. Exit 0 when everything agrees, 1 with one line
per disagreement on stderr, 77 when numpy is missing.
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

def load_model(path):
    """(header dict, float64 weights) of a llama2.c checkpoint."""
    with open(path, "rb") as f:
        dim, hid, n_layers, heads, kv_heads, vocab, seq_len = struct.unpack("<7i", f.read(28))
        flat = np.frombuffer(f.read(), dtype="<f4").astype(np.float64)
    hs, V, L = dim // heads, abs(vocab), n_layers
    kvd = kv_heads * hs
    layout = [("emb", (V, dim)), ("rms_att", (L, dim)), ("wq", (L, dim, dim)),
              ("wk", (L, kvd, dim)), ("wv", (L, kvd, dim)), ("wo", (L, dim, dim)),
              ("rms_ffn", (L, dim)), ("w1", (L, hid, dim)), ("w2", (L, dim, hid)),
              ("w3", (L, hid, dim)), ("rms_final", (dim,)), ("cos", (seq_len, hs // 2)),
              ("sin", (seq_len, hs // 2))] + ([("cls", (V, dim))] if vocab < 0 else [])
    ends = np.cumsum([int(np.prod(shape)) for _, shape in layout])
    if ends[-1] != len(flat):
        raise ValueError("%s: %d floats, the header implies %d" % (path, len(flat), ends[-1]))
    w = {name: part.reshape(shape) for (name, shape), part in zip(layout, np.split(flat, ends))}
    w.setdefault("cls", w["emb"])
    hdr = dict(dim=dim, layers=L, heads=heads, kv_heads=kv_heads, hs=hs, vocab=V, seq_len=seq_len)
    return hdr, w


def rmsnorm(x, weight):
    """x / sqrt(mean(x^2) + 1e-5) * weight over the last axis."""
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + 1e-5) * weight


def rope(x, cos, sin):
    """Rotary embedding of x [B, T, heads, hs]: pairs (0::2, 1::2) turned by position."""
    c, s = cos[None, :, None, :], sin[None, :, None, :]
    re, im = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2], out[..., 1::2] = re * c - im * s, re * s + im * c
    return out


def forward(hdr, w, ids, site=None, value=None):
    """Logits [B, T, V] and the activations {site: [B*T, dim]} of ids [B, T];
    the site named `site` is replaced by `value` ([B*T, dim]) downstream."""
    B, T = ids.shape
    H, KV, hs = hdr["heads"], hdr["kv_heads"], hdr["hs"]
    cos, sin = w["cos"][:T], w["sin"][:T]
    causal = np.where(np.tril(np.ones((T, T), bool)), 0.0, -np.inf)
    acts = {}

    def hook(name, a):
        acts[name] = a.reshape(B * T, -1)
        return a if name != site else np.asarray(value, np.float64).reshape(a.shape)

    x = w["emb"][ids]
    for l in range(hdr["layers"]):
        h = rmsnorm(x, w["rms_att"][l])
        q = rope((h @ w["wq"][l].T).reshape(B, T, H, hs), cos, sin)
        k = rope((h @ w["wk"][l].T).reshape(B, T, KV, hs), cos, sin)
        v = (h @ w["wv"][l].T).reshape(B, T, KV, hs)
        group = np.arange(H) // (H // KV)  # the kv head of each query head
        scores = np.einsum("bqhd,bkhd->bhqk", q, k[:, :, group]) / np.sqrt(hs) + causal
        p = np.exp(scores - scores.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        z = np.einsum("bhqk,bkhd->bqhd", p, v[:, :, group]).reshape(B, T, -1)
        z = hook("L%d_attn_z" % l, z)
        x = x + hook("L%d_attn_out" % l, z @ w["wo"][l].T)
        m = hook("L%d_mlp_in" % l, rmsnorm(x, w["rms_ffn"][l]))
        a = m @ w["w1"][l].T
        x = x + hook("L%d_mlp_out" % l, (a / (1 + np.exp(-a)) * (m @ w["w3"][l].T)) @ w["w2"][l].T)
        x = hook("L%d_resid_post" % l, x)
    return rmsnorm(x, w["rms_final"]) @ w["cls"].T, acts


def log_probs(logits):
    """Log-softmax of the predicting positions t = 0..T-2, [B, T-1, V]."""
    lg = logits[:, :-1] - logits[:, :-1].max(-1, keepdims=True)
    return lg - np.log(np.exp(lg).sum(-1, keepdims=True))


def loss(logits, ids):
    """Mean next-token cross-entropy (natural log) over sequences and t = 0..T-2."""
    return -np.take_along_axis(log_probs(logits), ids[:, 1:, None], -1).mean()


def load_sae(directory):
    """(cfg, float64 weights, transcoder?) of a saved SAE; RuntimeError if unsupported."""
    with open(os.path.join(directory, "cfg.json")) as f:
        cfg = json.load(f)
    w = {n: a.astype(np.float64) for n, a in
         load_safetensors(os.path.join(directory, "sae_weights.safetensors")).items()}
    arch = cfg.get("architecture", "")
    if arch not in ("topk", "batchtopk", "jumprelu", "jumprelu_transcoder", "standard",
                    "transcoder", "skip_transcoder") or cfg.get("normalize_activations", "none") != "none":
        raise RuntimeError("unsupported architecture %s" % arch)
    transcoder = bool(cfg.get("transcoder")) or arch.endswith("transcoder")
    return cfg, w, transcoder


def sae_codes(x, cfg, w):
    """The SAE's codes of rows x as lib/sae.c computes them (see select_row)."""
    arch = cfg["architecture"]
    norms = np.linalg.norm(w["W_dec"], axis=1) if cfg.get("rank_by_decoder_norm") else 1.0
    if arch == "topk" and np.isscalar(norms):
        return encode(x, w, cfg)[0]
    xin = x - w["b_dec"] if cfg["apply_b_dec_to_input"] else x
    pre = xin @ w["W_enc"] + w["b_enc"]
    if arch == "topk":  # ranked by pre * |W_dec row|, the code is pre
        top = np.argpartition(-pre * norms, cfg["k"] - 1, axis=1)[:, :cfg["k"]]
        z = np.zeros_like(pre)
        np.put_along_axis(z, top, np.take_along_axis(pre, top, 1), 1)
        return np.maximum(z, 0.0)
    cut = 0.0 if arch in ("standard", "transcoder", "skip_transcoder") else w["threshold"]
    gate = pre * norms
    return np.where((gate > cut) & (gate > 0), pre, 0.0)


def run(args):
    """Run subsae-llama with args; its stdout, or a RuntimeError naming its error."""
    done = subprocess.run(args, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError("%s exited %d: %s" % (" ".join(args[:2]), done.returncode,
                                                 done.stderr.strip().replace("\n", " | ")))
    return done.stdout


def check_record(rec, ids, acts):
    """Disagreements of the recording in rec with the tokens and numpy's sites."""
    bad = [] if np.array_equal(np.load(os.path.join(rec, "tokens.npy")), ids) else [
        "rec/tokens.npy differs from the tokens given"]
    worst = 0.0
    for name, ours in acts.items():
        path = os.path.join(rec, name + ".npy")
        if not os.path.exists(path):
            bad.append("%s: not recorded" % path)
            continue
        theirs = np.load(path)
        if theirs.dtype != np.float32 or theirs.shape != ours.shape:
            bad.append("%s: %s %s, want float32 %s" % (name, theirs.dtype, theirs.shape,
                                                      ours.shape))
            continue
        err = np.linalg.norm(ours - theirs) / max(np.linalg.norm(ours), 1e-30)
        worst = max(worst, err)
        if not err <= 1e-4:
            bad.append("%s: relative Frobenius error %.3g" % (name, err))
    print("%d sites, worst relative error %.3g" % (len(acts), worst))
    return bad


def check_splice(theirs, sae_dir, site, hdr, w, ids, logits, acts):
    """Disagreements of the JSON of `subsae-llama splice` (a dict) with numpy."""
    cfg, sw, transcoder = load_sae(sae_dir)
    if site not in acts or (transcoder and not site.endswith("_mlp_out")):
        raise RuntimeError("site %s for %s" % (site, "a transcoder" if transcoder else "an SAE"))
    target = acts[site]
    source = acts[site.replace("mlp_out", "mlp_in")] if transcoder else target
    z = sae_codes(source, cfg, sw)
    xhat, mean = z @ sw["W_dec"] + sw["b_dec"], target.mean(0)
    if "W_skip" in sw:  # a skip transcoder: SAELens' x @ W_skip.T, W_skip [d_out, d_in]
        xhat = xhat + source @ sw["W_skip"].T
    out, runs = {"loss_clean": loss(logits, ids)}, {}
    for name, value in [("spliced", xhat), ("zero", 0 * target),
                        ("mean_ablated", mean + 0 * target)]:
        runs[name] = forward(hdr, w, ids, site, value)[0]
        out["loss_" + name] = loss(runs[name], ids)
    lp, lq = log_probs(logits), log_probs(runs["spliced"])
    out["kl_spliced"] = (np.exp(lp) * (lp - lq)).sum(-1).mean()
    out["loss_recovered"] = ((out["loss_zero"] - out["loss_spliced"])
                             / (out["loss_zero"] - out["loss_clean"]))
    out["explained_variance"] = 1 - ((target - xhat) ** 2).sum() / ((target - mean) ** 2).sum()
    out["l0"] = (z != 0).sum(1).mean()
    tolerance = {"loss_clean": 1e-4, "loss_spliced": 2e-3, "loss_zero": 1e-4,
                 "loss_mean_ablated": 1e-4,
                 # a ratio: relative where zero ablation barely moves the loss
                 "loss_recovered": 2e-2 * max(1.0, abs(out["loss_recovered"])),
                 "kl_spliced": 2e-3 + 2e-2 * abs(out["kl_spliced"]),
                 "explained_variance": 1e-3, "l0": 0.05}
    # A value numpy finds undefined (0 / 0, x / 0) must be null in the JSON.
    diff = {k: abs(out[k] - theirs[k]) if isinstance(theirs.get(k), (int, float)) else
            0.0 if theirs.get(k, 0) is None and not np.isfinite(out[k]) else np.inf
            for k in tolerance}
    print("splice %s%s: %s" % (site, " (transcoder)" if transcoder else "", ", ".join(
        "%s %.6g (|diff| %.1e)" % (k, out[k], diff[k]) for k in tolerance)))
    return ["%s: numpy %.8g, subsae-llama %s (tolerance %.2g)" % (k, out[k], theirs.get(k), tol)
            for k, tol in tolerance.items() if not diff[k] <= tol]


def main():
    """Run the checks; return the exit status."""
    if len(sys.argv) not in (4, 6):
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 1
    binary, model, workdir = sys.argv[1:4]
    tokens, rec = os.path.join(workdir, "tokens.npy"), os.path.join(workdir, "rec")
    bad = []
    np.seterr(divide="ignore", invalid="ignore")  # undefined metrics are checked as null
    try:
        hdr, w = load_model(model)
        ids = np.random.default_rng(7).integers(0, hdr["vocab"], (3, min(48, hdr["seq_len"])))
        ids = ids.astype(np.int32)
        ids[:, 0] = 1  # BOS
        np.save(tokens, ids)
        logits, acts = forward(hdr, w, ids)
        run([binary, "record", model, "--tokens", tokens, "--sites", "all", "--dtype", "f32",
             "--out", rec, "--overwrite"])
        bad += check_record(rec, ids, acts)
        if len(sys.argv) == 6:
            sae_dir, site = sys.argv[4:6]
            theirs = json.loads(run([binary, "splice", model, sae_dir, "--site", site,
                                     "--tokens", tokens, "--json"]))
            bad += check_splice(theirs, sae_dir, site, hdr, w, ids, logits, acts)
    except (RuntimeError, OSError, ValueError, KeyError) as e:
        bad.append("%s: %s" % (type(e).__name__, e))
    for line in bad:
        print(line, file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
