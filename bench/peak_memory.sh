#!/bin/sh
# Peak resident set of `subsae train` at d_in 512, d_sae 16,384, k 32,
# batch 4,096 (issue 6), against the memory the run cannot do without:
# weights + gradients + Adam moments + one batch.
#
#   bench/peak_memory.sh [BUILD_DIR]      (make bench runs it)
#
# The input is a 131,072 x 512 float32 .npy (256 MiB) made by `subsae
# synth`; the run trains 10 steps and evaluates on the last 1/8, so the
# peak covers the training step and the evaluation.
set -eu
build=${1:-build}
cli=$build/bin/subsae
work=$build/bench
mkdir -p "$work"
data=$work/synth_512.npy
if [ ! -f "$data" ]; then
    "$cli" synth --dim 512 --subspace 256 --features 2048 --k 16 --tokens 131072 \
        --seed 1 --out "$data" >/dev/null
fi
if [ ! -x /usr/bin/time ]; then
    echo "peak memory: /usr/bin/time not found (Debian package 'time'); skipped"
    exit 0
fi
d_in=512 d_sae=16384 batch=4096
log=$work/peak_memory.time
/usr/bin/time -v "$cli" train "$data" --features $d_sae --k 32 --batch $batch \
    --tokens $((10 * batch)) --eval-fraction 0.125 --out "$work/peak_memory_sae" --overwrite \
    --quiet >/dev/null 2>"$log"
kib=$(sed -n 's/^[[:space:]]*Maximum resident set size (kbytes): //p' "$log")
# weights (W_enc, W_dec, biases) + gradient rows (at most d_sae of each
# matrix) + Adam moments (two per parameter) + one batch, in bytes.
awk -v kib="$kib" -v d="$d_in" -v m="$d_sae" -v b="$batch" 'BEGIN {
    params = 2 * m * d + m + d
    budget = 4 * (params + 2 * m * d + 2 * params + b * d)
    mib = 1024 * 1024
    printf "peak memory: subsae train at d_in %d, d_sae %d, batch %d: %.0f MiB peak RSS;\n", d, m, b, kib * 1024 / mib
    printf "  weights + gradients + Adam + one batch = %.1f MiB; ratio %.2f (target <= 1.25)\n", budget / mib, kib * 1024 / budget
}'
