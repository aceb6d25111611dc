#!/usr/bin/python3
"""BatchTopK against TopK as the textbook writes them, in PyTorch: a check
that BatchTopK's slow start at small sizes is the method's, not libsubsae's
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

Measured here on L2_attn_out_131k.npy, 2 epochs (about 80 s on 2 cores):
TopK 0.734; BatchTopK 0.138 with the threshold, 0.447 with each row's top 8.

Usage: batchtopk_reference.py FILE.npy [EPOCHS]
Needs numpy and torch (Debian: python3-numpy, python3-torch).
"""
import sys

import numpy as np
import torch

FEATURES, K, LR, BATCH, RATE = 4096, 8, 1e-3, 1024, 0.3


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


def train(kind, train_rows, held, epochs):
    """Held-out (explained variance, L0) per inference rule."""
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
            loss = ((codes @ w_dec + b_dec - x) ** 2).sum(1).mean()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    results = {}
    with torch.no_grad():
        for mode in ["topk"] if kind == "topk" else ["threshold", "topk"]:
            codes = encode(held, b_dec, w_enc, b_enc, mode, theta)
            error = ((codes @ w_dec + b_dec - held) ** 2).sum()
            variance = ((held - held.mean(0)) ** 2).sum()
            results[mode] = (round(1 - (error / variance).item(), 4),
                             round((codes > 0).sum(1).float().mean().item(), 2))
    return results


def main():
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__.strip().split("\n\n")[-1])
    torch.manual_seed(0)
    torch.set_num_threads(2)
    x = torch.tensor(np.load(sys.argv[1]).astype(np.float32))
    epochs = int(sys.argv[2]) if len(sys.argv) == 3 else 2
    n_train = x.shape[0] - x.shape[0] // 8
    x = x * (x.shape[1] ** 0.5 / x[:n_train].norm(dim=1).mean())
    for kind in ("topk", "batchtopk"):
        for mode, (ev, l0) in train(kind, x[:n_train], x[n_train:], epochs).items():
            rule = "each row's top k" if mode == "topk" else "threshold"
            print(f"{kind:9s} {rule:16s} explained variance {ev:.4f} at L0 {l0:.2f}",
                  flush=True)


if __name__ == "__main__":
    main()
