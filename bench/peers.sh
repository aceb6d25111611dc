#!/bin/sh
# libsubsae against the two PyTorch peers of ../shared/reference (issue 17)
# on the first training shape, in the same run: d 512, d_sae 16,384, k 32,
# batch 4,096, two threads each.
#
#   bench/peers.sh [BUILD_DIR]      (make bench runs it)
#
# torch_topk_ref.py trains the way the Python trainers do on a CPU (dense
# decode); torch_sparse_ref.py the way sparsify does off-GPU
# (embedding_bag decode). They need Debian's python3-torch; without it, or
# without ../shared, this prints why and skips. Rounds alternate between
# the programs, and each figure is the median of its rounds.
set -eu
build=${1:-build}
cli=$build/bin/subsae
ref=${SUBSAE_SHARED:-$(dirname "$0")/../../shared}/reference
python=${SUBSAE_PYTHON:-/usr/bin/python3}
d=512 m=16384 k=32 batch=4096 rounds=${PEER_ROUNDS:-3}

if [ ! -f "$ref/torch_topk_ref.py" ]; then
    echo "peers: $ref/torch_topk_ref.py not found (../shared absent); skipped"
    exit 0
fi
if ! "$python" -c 'import torch' 2>/dev/null; then
    echo "peers: $python has no torch (Debian package python3-torch); skipped"
    exit 0
fi

# bf16 only where the library computes it natively (AUTO resolves to it).
precisions=fp32
if "$cli" bench train --d-in 64 --features 1024 --k 8 --batch 256 --steps 1 --rounds 1 \
    --warmup 0 --precision bf16 --json >/dev/null 2>&1; then
    precisions="fp32 bf16"
fi

median() { sort -g | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
i=0
while [ $i -lt "$rounds" ]; do
    for p in $precisions; do
        "$cli" bench train --d-in $d --features $m --k $k --batch $batch --threads 2 \
            --rounds 1 --steps 4 --precision "$p" --json |
            sed -n 's/.*"tokens_per_second": *\([0-9.e+]*\).*/\1/p' >>"$work/$p"
    done
    "$python" "$ref/torch_topk_ref.py" $d $m $k $batch 4 |
        sed -n 's/.*: \([0-9.]*\) tokens\/s.*/\1/p' >>"$work/dense"
    "$python" "$ref/torch_sparse_ref.py" $d $m $k $batch 4 |
        sed -n 's/.*: \([0-9.]*\) tokens\/s.*/\1/p' >>"$work/sparse"
    i=$((i + 1))
done

dense=$(median <"$work/dense")
sparse=$(median <"$work/sparse")
echo "peers: train $d/$m/$k/$batch, 2 threads, median of $rounds interleaved rounds"
printf '  %-34s %8.0f tokens/s\n' "PyTorch dense decode" "$dense" \
    "PyTorch embedding_bag (sparsify)" "$sparse"
for p in $precisions; do
    ours=$(median <"$work/$p")
    awk -v p="libsubsae $p" -v o="$ours" -v d="$dense" -v s="$sparse" 'BEGIN {
        printf "  %-34s %8.0f tokens/s  %5.2fx dense, %5.2fx sparsify-style\n", p, o, o / d, o / s }'
done
