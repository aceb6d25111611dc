#!/usr/bin/python3
"""Issue 18's recipe on data nobody tuned on: `make methods-unseen`.

Records 131,072 fresh tokens (256 sampled sequences of 512, seed 11) of
stories260K at eleven sites with `subsae-llama record` into a temporary
directory, then trains on each with the recipe of issue 18 (`--features 4096
--k 8 --epochs 2 --batch 1024 --lr 1e-3`, evaluated on the last 1/8):

- plain BatchTopK and Matryoshka BatchTopK (`--matryoshka 256,1024,4096`)
  for each seed of SEEDS (default 0 1 2): eval L0, explained variance, the
  prefixes' explained variances, whether they rise strictly, and the gap
  plain - Matryoshka; then the same with TopK;
- gated (`--l1 7`): eval L0 and explained variance;
- on each layer's MLP (mlp_in -> mlp_out, `--features 4096 --k 16`): a
  transcoder and a skip transcoder, their explained variances.

Prints markdown tables. Takes 10-15 minutes on two cores.

With --whole, only the Matryoshka tables, each model trained on all the
rows of its site and evaluated on them (`subsae eval DIR FILE --json`)
instead of holding the last 1/8 out (`make methods-unseen
METHODS_UNSEEN_FLAGS=--whole`).

Usage: methods_unseen.py SUBSAE SUBSAE_LLAMA MODEL [--whole] [SEEDS...]
Only the Python standard library is needed.
"""
import json
import os
import subprocess
import sys
import tempfile

SAE_SITES = ["L0_attn_out", "L1_attn_out", "L3_attn_out", "L4_attn_out",
             "L1_mlp_out", "L3_mlp_out", "L4_mlp_in", "L1_resid_post"]
MLP_LAYERS = ["L1", "L3", "L4"]
RECIPE = ["--features", "4096", "--epochs", "2", "--batch", "1024", "--lr", "1e-3", "--json"]
HOLD_OUT = ["--eval-fraction", "0.125"]
WIDTHS = "256,1024,4096"


def run(command):
    """The command's standard output; a sentence and exit status 1 if it fails."""
    try:
        done = subprocess.run(command, capture_output=True, text=True)
    except OSError as e:
        sys.exit(f"methods_unseen: cannot run {command[0]}: {e.strerror}")
    if done.returncode != 0:
        sys.exit(f"methods_unseen: {' '.join(command)} failed:\n{done.stderr.strip()}")
    return done.stdout


def record(llama, model, out):
    sites = set(SAE_SITES) | {f"{layer}_{site}" for layer in MLP_LAYERS
                              for site in ("mlp_in", "mlp_out")}
    run([llama, "record", model, "--sequences", "256", "--seq-len", "512", "--seed", "11",
         "--sites", ",".join(sorted(sites)), "--dtype", "f16", "--out", out])


def train(cli, work, inputs, *options, whole=False):
    """The evaluation of a model trained with RECIPE and options: on the
    held-out last 1/8, or (whole) trained on every row and evaluated on
    them."""
    out = os.path.join(work, "sae")
    trained = run([cli, "train", *inputs, *RECIPE, *([] if whole else HOLD_OUT), *options,
                   "--out", out, "--overwrite"])
    if whole:
        return json.loads(run([cli, "eval", out, *inputs, "--json"]))
    return json.loads(trained)["eval"]


def rises(prefixes):
    return all(b > a for a, b in zip(prefixes, prefixes[1:]))


def matryoshka_rows(cli, work, data, seeds, activation, whole):
    print(f"{activation}{' (trained on every row and evaluated on them)' if whole else ''}:\n")
    print("| data | seed | plain L0 / EV | Matryoshka L0 / EV | prefixes 256 / 1,024 / 4,096 "
          "| plain - Matryoshka | prefixes rise |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    rising = total = 0
    for site in SAE_SITES:
        x = [os.path.join(data, site + ".npy")]
        for seed in seeds:
            common = ("--activation", activation, "--k", "8", "--seed", seed)
            plain = train(cli, work, x, *common, whole=whole)
            nested = train(cli, work, x, *common, "--matryoshka", WIDTHS, whole=whole)
            prefixes = nested["prefix_explained_variance"]
            rising += rises(prefixes)
            total += 1
            print(f"| {site} | {seed} | {plain['l0']:.1f} / {plain['explained_variance']:.4f} "
                  f"| {nested['l0']:.1f} / {nested['explained_variance']:.4f} "
                  f"| {' / '.join(f'{p:.4f}' for p in prefixes)} "
                  f"| {plain['explained_variance'] - nested['explained_variance']:+.4f} "
                  f"| {'yes' if rises(prefixes) else '**no**'} |", flush=True)
    print(f"\nprefixes rise strictly in {rising} of {total} runs\n")


def gated_rows(cli, work, data):
    print("| data | gated (l1 7) L0 | EV |")
    print("| --- | --- | --- |")
    for site in SAE_SITES:
        e = train(cli, work, [os.path.join(data, site + ".npy")],
                  "--activation", "gated", "--k", "8", "--l1", "7")
        print(f"| {site} | {e['l0']:.1f} | {e['explained_variance']:.4f} |", flush=True)
    print()


def transcoder_rows(cli, work, data):
    print("| layer | transcoder L0 / EV | skip transcoder L0 / EV | skip - plain |")
    print("| --- | --- | --- | --- |")
    for layer in MLP_LAYERS:
        pair = [os.path.join(data, f"{layer}_mlp_in.npy"), "--target",
                os.path.join(data, f"{layer}_mlp_out.npy"), "--k", "16"]
        plain = train(cli, work, pair)
        skip = train(cli, work, pair, "--skip")
        print(f"| {layer} mlp_in -> mlp_out | {plain['l0']:.1f} / "
              f"{plain['explained_variance']:.4f} | {skip['l0']:.1f} / "
              f"{skip['explained_variance']:.4f} | "
              f"{skip['explained_variance'] - plain['explained_variance']:+.4f} |", flush=True)


def main(argv):
    if len(argv) < 4:
        sys.exit(__doc__)
    cli, llama, model = argv[1:4]
    whole = "--whole" in argv[4:]
    seeds = [a for a in argv[4:] if a != "--whole"] or ["0", "1", "2"]
    if not os.path.isfile(model):
        print(f"methods_unseen: model {model} not found; skipped")
        return
    with tempfile.TemporaryDirectory() as work:
        data = os.path.join(work, "data")
        record(llama, model, data)
        for activation in ("batchtopk", "topk"):
            matryoshka_rows(cli, work, data, seeds, activation, whole)
        if not whole:
            gated_rows(cli, work, data)
            transcoder_rows(cli, work, data)


if __name__ == "__main__":
    main(sys.argv)
