#!/bin/sh
# Training from a file larger than memory (issue 17): tokens/s of `subsae
# train` at d_in 768, d_sae 24,576, k 32, batch 4,096 reading a 6 GB
# float16 .npy (4M rows) inside a 2 GiB memory cgroup, against the same
# training on a file of the same width that sits in the page cache, in
# the same run. The input pipeline (lib/prefetch.c) reads the next batch
# while the step computes, and the reader asks the page cache for all of
# a batch's rows before reading them (lib/buffer_reader.c), so the ratio
# should be >= 0.9.
#
#   bench/out_of_core.sh [BUILD_DIR]        (root: it makes a cgroup v1
#                                            memory group)
#
# Environment: OOC_ROWS (default 4194304) and OOC_LIMIT (bytes, default
# 2 GiB) for a smaller disk; OOC_STEPS (default 16) steps per run;
# OOC_REPEAT (default 2) rounds of runs; SUBSAE (the CLI, to measure
# another build); OOC_BASELINE (another CLI, e.g. a build without the
# pipeline, also run out of core in each round). The files are kept under
# /tmp and reused.
set -eu
build=${1:-build}
cli=${SUBSAE:-$build/bin/subsae}
mkdir -p "$build/bench" # the runs' model (--out): a finished run is always saved
rows=${OOC_ROWS:-4194304}
limit=${OOC_LIMIT:-2147483648}
steps=${OOC_STEPS:-16}
repeat=${OOC_REPEAT:-2}
d=768 m=24576 k=32 batch=4096
big=/tmp/subsae_ooc_${d}x${rows}_f16.npy
small=/tmp/subsae_ooc_${d}x262144_f16.npy
py=/usr/bin/python3

# Rows with a decaying spectrum, written in chunks (no 6 GB in memory).
make_npy() { # path rows
    [ -f "$1" ] && return 0
    need=$(($2 * d * 2 / 1024 + 1048576))
    avail=$(df -k --output=avail "$(dirname "$1")" | tail -1)
    if [ "$avail" -lt "$need" ]; then
        echo "out of core: $1 needs $need KiB, /tmp has $avail; set OOC_ROWS and OOC_LIMIT" >&2
        exit 1
    fi
    "$py" - "$1" "$2" "$d" <<'PY'
import sys, numpy as np
path, n, d = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = np.random.default_rng(17)
scale = (1.0 / np.sqrt(1.0 + np.arange(d))).astype(np.float32)
out = np.lib.format.open_memmap(path + ".part", mode="w+", dtype=np.float16, shape=(n, d))
chunk = 1 << 17
for i in range(0, n, chunk):
    j = min(n, i + chunk)
    out[i:j] = rng.standard_normal((j - i, d), dtype=np.float32) * scale
out.flush()
del out
import os
os.rename(path + ".part", path)
PY
}
make_npy "$big" "$rows"
make_npy "$small" 262144

# Drop a file's pages from the page cache (pages cached outside the
# cgroup would otherwise serve the reads).
evict() {
    "$py" -c "import os,sys; fd=os.open(sys.argv[1], os.O_RDONLY); os.fsync(fd); os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)" "$1"
}

# file [cgroup [cli]] -> tokens/s; with a cgroup the run joins it first.
train() {
    sh -c 'if [ -n "$0" ]; then echo $$ >"$0/cgroup.procs"; fi; exec "$@"' "${2:-}" \
        "${3:-$cli}" train "$1" --features $m --k $k --batch $batch --tokens $((steps * batch)) \
        --init random --no-scale-search --init-sample 8192 --out "$build/bench/ooc_sae" \
        --overwrite --json --quiet |
        "$py" -c "import json,sys; print('%.0f' % json.load(sys.stdin)['tokens_per_second'])"
}

group=/sys/fs/cgroup/memory/subsae_ooc_$$
if ! mkdir "$group" 2>/dev/null; then
    echo "out of core: cannot make a cgroup v1 memory group (need root and /sys/fs/cgroup/memory)" >&2
    exit 1
fi
trap 'rmdir "$group" 2>/dev/null || true' EXIT
echo "$limit" >"$group/memory.limit_in_bytes"

echo "out of core: d_in $d, d_sae $m, k $k, batch $batch, $steps steps per run"
echo "  file $big ($rows rows, $(($rows * d * 2 / 1000000)) MB), cgroup limit $(($limit / 1048576)) MiB"
ratios=""
i=0
while [ $i -lt "$repeat" ]; do
    cat "$small" >/dev/null
    warm=$(train "$small")
    evict "$big"
    cold=$(train "$big" "$group")
    ratio=$(awk -v a="$cold" -v b="$warm" 'BEGIN { printf "%.2f", a / b }')
    echo "  round $((i + 1)): in page cache $warm tokens/s; out of core (cgroup) $cold tokens/s; ratio $ratio"
    if [ -n "${OOC_BASELINE:-}" ]; then
        evict "$big"
        base=$(train "$big" "$group" "$OOC_BASELINE")
        echo "    baseline $OOC_BASELINE out of core: $base tokens/s; ratio $(awk -v a="$base" -v b="$warm" 'BEGIN { printf "%.2f", a / b }')"
    fi
    ratios="$ratios $ratio"
    i=$((i + 1))
done
echo "$ratios" | tr ' ' '\n' | sed '/^$/d' | sort -n |
    awk '{ r[NR] = $1 } END { printf "out of core: ratio median %.2f (target >= 0.9)\n", NR % 2 ? r[(NR + 1) / 2] : (r[NR / 2] + r[NR / 2 + 1]) / 2 }'
