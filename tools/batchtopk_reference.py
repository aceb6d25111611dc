#!/usr/bin/python3
"""BatchTopK against TopK as the textbook writes them, in PyTorch: a check
that BatchTopK's slow start at small sizes, and the fall of Matryoshka
BatchTopK's last prefix on unseen rows, are the method's, not libsubsae's
(README, Matryoshka).

Both train on the first 7/8 of FILE (scaled by sqrt(d) / mean row norm),
d_sae 4,096, k 8, batch 1,024, Adam lr 1e-3, EPOCHS epochs (default 2),
from the tied random initialisation of dictionary_learning and SAELens:
unit decoder rows uniform on the sphere, encoder = decoder transpose,
b_enc = 0, b_dec = the mean row. BatchTopK keeps the k n largest ReLU'd
pre-activations of the batch and moves its inference threshold 0.3 of the
way to the batch's cut each step (libsubsae's rate). Prints the held-out
(last 1/8) explained variance and L0 of TopK, and of BatchTopK with its
threshold and with each row's top k.

With --matryoshka, BatchTopK only, plain and Matryoshka (prefixes 256 /
1,024 / 4,096, the loss summing each prefix's error as Bussmann et al.
write it): the explained variance of each prefix, on the training rows and
the held-out rows, with the threshold and with each row's top k.

Measured here on L2_attn_out_131k.npy, 2 epochs (about 80 s on 2 cores):
TopK 0.734; BatchTopK 0.138 with the threshold, 0.447 with each row's top 8.
With --matryoshka on six 16,384-row shared files (L0_attn_out, L1_attn_out,
L3_attn_out, L3_mlp_out, L0_mlp_in, L3_resid_post; 2 epochs, 28 steps,
about 35 s each), the whole Matryoshka model explains less than its
1,024-feature prefix on the held-out rows with the threshold in all six
(e.g. L3_attn_out 0.070 / 0.117 / -2.064, L0_mlp_in 0.076 / 0.238 /
0.120), and on the training rows in five; with each row's top 8 the
prefixes rise in all six (0.060 / 0.218 / 0.306, 0.088 / 0.272 / 0.387).
libsubsae's Matryoshka BatchTopK falls on four of twelve such files held
out (README, Matryoshka).

Usage: batchtopk_reference.py FILE.npy [EPOCHS] [--matryoshka]
Needs numpy and torch (Debian: python3-numpy, python3-torch).
"""
import sys

import numpy as np
import torch

FEATURES, K, LR, BATCH, RATE = 4096, 8, 1e-3, 1024, 0.3
MATRYOSHKA_WIDTHS = [256, 1024, 4096]


def encode(x, b_dec, w_enc, b_enc, mode, theta=None):
    """Codes of the rows x: 'topk' (each row's k largest), 'batch' (the k n
    largest of the batch; also returns the cut) or 'threshold'."""
    pre = torch.relu((x - b_dec) @ w_enc.T + b_enc)
    if mode == "topk":
        values, indices = pre.topk(K, dim=1)
        return torch.zeros_like(pre).scatter(1, indices, values)
    if mode == "batch":
        values, indices = pre.flatten().topk(K * x.shape[0])
        codes = torch.zeros_like(pre).flatten().scatter(0, indices, values)
        return codes.view_as(pre), values[-1].item()
    return pre * (pre > theta)


def prefix_explained_variances(rows, codes, w_dec, b_dec, widths):
    """Explained variance of each prefix [0, w) decoding its own codes."""
    variance = ((rows - rows.mean(0)) ** 2).sum()
    return [round(1 - (((codes[:, :w] @ w_dec[:w] + b_dec - rows) ** 2).sum()
                       / variance).item(), 4) for w in widths]


def train(kind, train_rows, held, epochs, widths=(FEATURES,)):
    """{(rows, inference rule): (explained variance of each prefix, L0)},
    rows "held" (and "train" for a Matryoshka model, widths of more than
    one prefix), rule "topk" (each row's top k) or "threshold"."""
    generator = torch.Generator().manual_seed(0)
    d = train_rows.shape[1]
    w_dec = torch.randn(FEATURES, d, generator=generator)
    w_dec /= w_dec.norm(dim=1, keepdim=True)
    w_enc = w_dec.clone().requires_grad_()
    w_dec.requires_grad_()
    b_enc = torch.zeros(FEATURES, requires_grad=True)
    b_dec = train_rows.mean(0).clone().requires_grad_()
    optimiser = torch.optim.Adam([w_dec, w_enc, b_enc, b_dec], lr=LR)
    theta = None
    n = train_rows.shape[0]
    for _ in range(epochs):
        order = torch.randperm(n, generator=generator)
        for start in range(0, n - BATCH + 1, BATCH):
            x = train_rows[order[start:start + BATCH]]
            if kind == "topk":
                codes = encode(x, b_dec, w_enc, b_enc, "topk")
            else:
                codes, cut = encode(x, b_dec, w_enc, b_enc, "batch")
                theta = cut if theta is None else (1 - RATE) * theta + RATE * cut
            loss = sum(((codes[:, :w] @ w_dec[:w] + b_dec - x) ** 2).sum(1).mean()
                       for w in widths)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    results = {}
    sets = [("held", held)] if len(widths) == 1 else [("train", train_rows), ("held", held)]
    with torch.no_grad():
        for name, rows in sets:
            for mode in ["topk"] if kind == "topk" else ["threshold", "topk"]:
                codes = encode(rows, b_dec, w_enc, b_enc, mode, theta)
                results[name, mode] = (
                    prefix_explained_variances(rows, codes, w_dec, b_dec, widths),
                    round((codes > 0).sum(1).float().mean().item(), 2))
    return results


def report(label, results):
    for (rows, mode), (evs, l0) in results.items():
        rule = "each row's top k" if mode == "topk" else "threshold"
        figures = " / ".join(f"{ev:.4f}" for ev in evs)
        print(f"{label:20s} {rows:5s} {rule:16s} explained variance {figures} at L0 {l0:.2f}",
              flush=True)


def main():
    arguments = [a for a in sys.argv[1:] if a != "--matryoshka"]
    matryoshka = len(arguments) < len(sys.argv) - 1
    if len(arguments) not in (1, 2):
        sys.exit(__doc__.strip().split("\n\n")[-1])
    torch.manual_seed(0)
    torch.set_num_threads(2)
    x = torch.tensor(np.load(arguments[0]).astype(np.float32))
    epochs = int(arguments[1]) if len(arguments) == 2 else 2
    n_train = x.shape[0] - x.shape[0] // 8
    x = x * (x.shape[1] ** 0.5 / x[:n_train].norm(dim=1).mean())
    if matryoshka:
        report("batchtopk", train("batchtopk", x[:n_train], x[n_train:], epochs))
        report("batchtopk matryoshka", train("batchtopk", x[:n_train], x[n_train:], epochs,
                                             MATRYOSHKA_WIDTHS))
        return
    for kind in ("topk", "batchtopk"):
        report(kind, train(kind, x[:n_train], x[n_train:], epochs))


if __name__ == "__main__":
    main()
