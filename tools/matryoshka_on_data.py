#!/usr/bin/python3
"""Matryoshka BatchTopK against plain BatchTopK on the shared 16,384-row
files, each trained on a whole file and evaluated on it (README,
Matryoshka): issue 18's recipe (`--features 4096 --k 8 --epochs 2 --batch
1024 --lr 1e-3`, prefixes 256 / 1,024 / 4,096), then `subsae eval DIR FILE
--json`. Prints a markdown table (L0, explained variance, the prefixes'
explained variances, the gap, whether the prefixes rise strictly) and how
many rise. About 3 minutes for the 25 files on two cores.

Usage: matryoshka_on_data.py SUBSAE DATA_DIR [FILE.npy...]
(default: every L{0..4}_{attn_z,attn_out,mlp_in,mlp_out,resid_post}.npy of
DATA_DIR). Only the Python standard library is needed.
"""
import json
import os
import sys
import tempfile

from methods_unseen import WIDTHS, rises, run

SITES = ["attn_z", "attn_out", "mlp_in", "mlp_out", "resid_post"]
RECIPE = ["--features", "4096", "--k", "8", "--epochs", "2", "--batch", "1024", "--lr", "1e-3",
          "--activation", "batchtopk", "--seed", "0", "--quiet", "--overwrite"]


def trained_and_evaluated(cli, work, path, *options):
    model = os.path.join(work, "sae")
    run([cli, "train", path, *RECIPE, *options, "--out", model])
    return json.loads(run([cli, "eval", model, path, "--json"]))


def main(argv):
    if len(argv) < 3:
        sys.exit(__doc__.strip().split("\n\n")[-1])
    cli, data = argv[1], argv[2]
    files = argv[3:] or [os.path.join(data, f"L{layer}_{site}.npy")
                         for layer in range(5) for site in SITES]
    files = [f for f in files if os.path.isfile(f)]
    if not files:
        print(f"matryoshka_on_data: no activation files in {data}; skipped")
        return
    print("| data | plain L0 | plain EV | Matryoshka L0 | Matryoshka EV "
          "| prefixes 256 / 1,024 / 4,096 | plain - Matryoshka | prefixes rise |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    rising = 0
    with tempfile.TemporaryDirectory() as work:
        for path in files:
            plain = trained_and_evaluated(cli, work, path)
            nested = trained_and_evaluated(cli, work, path, "--matryoshka", WIDTHS)
            prefixes = nested["prefix_explained_variance"]
            rising += rises(prefixes)
            print(f"| `{os.path.basename(path)}` | {plain['l0']:.1f} "
                  f"| {plain['explained_variance']:.3f} | {nested['l0']:.1f} "
                  f"| {nested['explained_variance']:.3f} "
                  f"| {' / '.join(f'{p:.3f}' for p in prefixes)} "
                  f"| {plain['explained_variance'] - nested['explained_variance']:+.3f} "
                  f"| {'yes' if rises(prefixes) else '**no**'} |", flush=True)
    print(f"\nprefixes rise strictly on {rising} of {len(files)} files")


if __name__ == "__main__":
    main(sys.argv)
