#!/usr/bin/python3
"""libsubsae from Python and numpy: rank and train from numpy arrays.

    /usr/bin/python3 examples/python/example.py [ACTIVATIONS.npy [reference.json]]

Loads a file of the shared stories260K activations with numpy (float16),
hands it to the library without copying, checks r99 and the entropy rank
against reference.json, trains a tiny SAE with active-subspace
initialisation, encodes rows, and shows a library error arriving as
subsae.Error. Exits non-zero on any mismatch. Defaults:
$SUBSAE_SHARED (or ../shared)/data/stories260K/L2_attn_out.npy and the
reference.json next to it. The library: $SUBSAE_LIB or ../../build.
"""
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import subsae  # noqa: E402

failures = []


def expect(ok, what):
    if not ok:
        print("python example: check failed:", what, file=sys.stderr)
        failures.append(what)


def main():
    shared = os.environ.get("SUBSAE_SHARED") or "../shared"
    path = sys.argv[1] if len(sys.argv) > 1 else \
        os.path.join(shared, "data", "stories260K", "L2_attn_out.npy")
    ref_path = sys.argv[2] if len(sys.argv) > 2 else \
        os.path.join(os.path.dirname(path), "reference.json")
    reference = json.load(open(ref_path))[os.path.basename(path)]
    print("libsubsae", subsae.version())

    # Rank: the float16 array is borrowed as is, widened by the library.
    x = np.load(path, mmap_mode="r")
    acts = subsae.Buffer.wrap(x)
    space = subsae.Subspace().fit(acts)
    r99, exact = space.effective_rank(0.99)
    entropy, _ = space.entropy_rank()
    print("%s: %d x %d %s, r99 = %d (reference %d), entropy rank %.3f (reference %.3f)"
          % (os.path.basename(path), acts.rows, acts.dim, x.dtype, r99, reference["r99"],
             entropy, reference["entropy_rank"]))
    expect(exact and r99 == reference["r99"], "r99 %d != reference %d" % (r99, reference["r99"]))
    expect(abs(entropy - reference["entropy_rank"]) < 0.01, "entropy rank %g" % entropy)
    top8 = space.explained_ratios(8)
    expect(np.allclose(top8, reference["top_variance_share"], atol=2e-4),
           "top-8 variance shares %s" % np.round(top8, 6))

    # The same spectrum from numpy, as a cross-check of what crossed over.
    xc = np.asarray(x, dtype=np.float64)
    xc -= xc.mean(axis=0)
    eig = np.linalg.eigvalsh(xc.T @ xc / (len(xc) - 1))[::-1]
    expect(np.allclose(space.variances(acts.dim), eig, rtol=1e-4, atol=1e-9 * eig[0]),
           "variances differ from numpy's")

    # Train a tiny SAE on a float32 copy (row slices are passed in place).
    x32 = np.asarray(x, dtype=np.float32)
    train = subsae.Buffer.wrap(x32)
    trainer = subsae.Trainer(features=128, k=8, batch=256, init_sample=4096, seed=2,
                             init=subsae.INIT_ACTIVE_SUBSPACE)
    progress = []
    trainer.set_callback(lambda event, phase, done, total, message:
                         progress.append(done) if event == subsae.EVENT_PROGRESS else None)
    trainer.init(train)
    trainer.fit(train, 16384)
    m = trainer.metrics()
    print("trained %d tokens: explained variance %.3f, L0 %.2f, dead %.1f %%"
          % (m.tokens, m.explained_variance, m.l0, 100 * m.dead_fraction))
    expect(m.tokens >= 16384, "tokens trained")
    expect(0.5 < m.explained_variance <= 1, "explained variance %g" % m.explained_variance)
    expect(0 < m.l0 <= 8, "L0 %g" % m.l0)
    expect(len(progress) > 0, "the progress callback was called")

    # Online steps straight from numpy rows.
    steps = m.steps
    for first in range(0, 1024, 256):
        trainer.step(x32[first:first + 256])
    expect(trainer.metrics().steps == steps + 4, "four more steps")

    # Encode: sparse codes agree with the dense ones and decode back.
    model = trainer.sae
    rows = x32[:4]
    z = model.encode(rows)
    idx, val = model.encode_sparse(rows, 8)
    for i in range(4):
        active = idx[i] >= 0
        print("row %d:" % i, " ".join("%d:%.3f" % (f, v) for f, v in zip(idx[i][active], val[i][active])))
        expect(np.allclose(z[i, idx[i][active]], val[i][active], rtol=1e-5, atol=1e-6),
               "sparse codes match dense codes")
        expect(np.all(np.diff(val[i]) <= 0), "values descending")
        expect(np.count_nonzero(z[i]) <= 8, "at most k active features")
    expect(np.allclose(model.decode(z), model.decode_sparse(idx, val), rtol=1e-4, atol=1e-5),
           "dense and sparse decode agree")
    held_out = model.evaluate(x32[-2048:])
    print("evaluated on 2048 rows: explained variance %.3f" % held_out.explained_variance)
    expect(held_out.explained_variance > 0.5, "evaluation explained variance")

    # A gated SAE (SAELens "gated"): its codes are SAELens' gated forward
    # of the parameters read back, with b_enc as the gate bias b_gate.
    gated = subsae.Trainer(features=128, activation=subsae.ACT_GATED, l1_coef=2.0, batch=256,
                           init_sample=4096, seed=2)
    gated.init(train)
    gated.fit(train, 16384)
    g = gated.sae
    p = {name: g.param(which).astype(np.float64) for name, which in
         (("W_enc", subsae.PARAM_W_ENC), ("b_gate", subsae.PARAM_B_ENC),
          ("r_mag", subsae.PARAM_R_MAG), ("b_mag", subsae.PARAM_B_MAG))}
    scaled = rows.astype(np.float64) * g.get(subsae.SAE_INPUT_SCALE) - \
        g.param(subsae.PARAM_B_DEC).astype(np.float64)
    pre = scaled @ p["W_enc"].reshape(128, -1).T
    mine = (pre + p["b_gate"] > 0) * np.maximum(pre * np.exp(p["r_mag"]) + p["b_mag"], 0)
    held_gated = g.evaluate(x32[-2048:])
    print("gated SAE: explained variance %.3f at L0 %.1f"
          % (held_gated.explained_variance, held_gated.l0))
    expect(np.allclose(g.encode(rows), mine, rtol=1e-4, atol=1e-4),
           "gated codes are SAELens' gated forward")
    expect(0 < held_gated.l0 < 128, "gated L0 %g" % held_gated.l0)
    # A Matryoshka SAE: nested prefixes of 32 and 128 features.
    nested = subsae.Trainer(features=128, k=8, batch=256, init_sample=4096, seed=2)
    nested.set_matryoshka([32, 128])
    nested.init(train)
    nested.fit(train, 8192)
    expect(nested.sae.matryoshka == [32, 128], "Matryoshka widths %s" % nested.sae.matryoshka)
    prefixes = nested.sae.evaluate_prefixes(x32[-2048:])
    print("Matryoshka prefixes' explained variance:", " ".join("%.3f" % v for v in prefixes))
    expect(len(prefixes) == 2 and prefixes[0] < prefixes[1], "prefix explained variance")
    expect(prefixes[1] == nested.sae.evaluate(x32[-2048:]).explained_variance,
           "the last prefix is the whole model")

    # Synthetic data with a known dictionary: its active subspace is exact.
    synth, atoms = subsae.Buffer.synth(48, 20, 64, 3, 8192, seed=5)
    r, exact = subsae.Subspace().fit(synth).effective_rank(0.99)
    expect(exact and r == 20, "synthetic data has r99 %d, want 20" % r)
    expect(atoms.shape == (64, 48) and np.allclose(np.linalg.norm(atoms, axis=1), 1, atol=1e-5),
           "unit atoms")

    # Library errors arrive as subsae.Error with the status and the message.
    try:
        subsae.Buffer.open(os.path.join(os.path.dirname(path), "no-such-file.npy"))
        expect(False, "opening a missing file raises")
    except subsae.Error as e:
        print("expected error:", e)
        expect(e.status == subsae.E_IO, "status of a missing file is E_IO")
        expect("no-such-file.npy" in e.message, "the message names the file")

    if failures:
        print("python example: %d check(s) failed" % len(failures), file=sys.stderr)
        return 1
    print("python example: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
