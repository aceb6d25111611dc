#!/usr/bin/python3
"""The randomized estimator against scikit-learn's randomized_svd, same data, same run.

Writes a 65,536 x 1,024 float32 .npy with a known decaying spectrum, then
times, interleaved (R repeats each, median):
  - `subsae rank FILE --method randomized --rank 128 --oversample 10
    --power-iters 4` (its fit time, from --json; reading the file is part
    of every pass, as it is for any input the tool streams), and
  - sklearn.utils.extmath.randomized_svd(Xc, 128, n_oversamples=10,
    n_iter=4, power_iteration_normalizer=NORM) on the centred data
    (centring not timed),
with the same thread count (OPENBLAS/OMP_NUM_THREADS) and OMP_WAIT_POLICY
(passive by default), and reports both wall times, their ratio, the CPU
seconds of each (steadier than wall time on a shared machine) and the relative error of the top-128 variances of each
against the exact spectrum (numpy.linalg.eigvalsh of the covariance).

usage: randomized_vs_sklearn.py [--subsae build/bin/subsae] [--rows N] [--dim D]
       [--rank K] [--repeat R] [--normalizer auto|QR] [--threads T] [--dir DIR]
       [--before OTHER_SUBSAE]
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--subsae", default="build/bin/subsae")
    ap.add_argument("--rows", type=int, default=65536)
    ap.add_argument("--dim", type=int, default=1024)
    ap.add_argument("--rank", type=int, default=128)
    ap.add_argument("--oversample", type=int, default=10)
    ap.add_argument("--power-iters", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--normalizer", default="auto")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--dir", default=None)
    ap.add_argument("--wait-policy", default="passive")
    ap.add_argument("--before", default=None,
                    help="another subsae binary (e.g. main's) timed in the same rounds")
    a = ap.parse_args()
    # Same thread count for both: set before numpy loads its BLAS.
    for v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[v] = str(a.threads)
    # Idle threads sleep instead of spinning (both sides use OpenMP
    # OpenBLAS), so that CPU seconds count work even on a shared machine.
    os.environ["OMP_WAIT_POLICY"] = a.wait_policy
    try:
        import numpy as np
        from sklearn.utils.extmath import randomized_svd
    except ImportError as e:
        sys.exit("randomized_vs_sklearn: %s; install Debian's python3-numpy and "
                 "python3-sklearn and run it with /usr/bin/python3" % e)

    n, d, k = a.rows, a.dim, a.rank
    rng = np.random.default_rng(17)
    # Known spectrum: singular values 1 / (1 + i)^0.75 times a mean offset,
    # rotated by a random orthogonal matrix (a decay like that of activations).
    sigma = (1.0 / (1.0 + np.arange(d)) ** 0.75).astype(np.float64)
    rot, _ = np.linalg.qr(rng.standard_normal((d, d)))
    x = (rng.standard_normal((n, d)) * sigma) @ rot.T + 3.0 * rng.standard_normal(d)
    x = x.astype(np.float32)
    tmp = a.dir or tempfile.mkdtemp(prefix="subsae-rsvd-")
    path = os.path.join(tmp, "rsvd.npy")
    np.save(path, x)

    xd = x.astype(np.float64)
    xd -= xd.mean(axis=0)
    exact = np.linalg.eigvalsh(xd.T @ xd / (n - 1))[::-1][:k]
    del xd
    xc = x - x.mean(axis=0, dtype=np.float64).astype(np.float32)

    cmd = [a.subsae, "rank", path, "--method", "randomized", "--rank", str(k),
           "--oversample", str(a.oversample), "--power-iters", str(a.power_iters),
           "--json", "--quiet"]
    env = dict(os.environ, SUBSAE_THREADS=str(a.threads))
    cpu = {"subsae": [], "sklearn": [], "before": []}

    def children_cpu():
        r = resource.getrusage(resource.RUSAGE_CHILDREN)
        return r.ru_utime + r.ru_stime

    def run_subsae(binary, name):
        c0 = children_cpu()
        out = subprocess.run([binary] + cmd[1:], env=env, check=True, capture_output=True,
                             text=True).stdout
        cpu[name].append(children_cpu() - c0)
        rep = json.loads(out)["reports"][0]
        return rep["seconds"], np.array(rep["variances"][:k])

    ours_t, sk_t, before_t = [], [], []
    ours_v = sk_v = before_v = None
    for _ in range(a.repeat):
        t, ours_v = run_subsae(a.subsae, "subsae")
        ours_t.append(t)
        if a.before:
            t, before_v = run_subsae(a.before, "before")
            before_t.append(t)
        t0, c0 = time.perf_counter(), time.process_time()
        _, s, _ = randomized_svd(xc, k, n_oversamples=a.oversample, n_iter=a.power_iters,
                                 power_iteration_normalizer=a.normalizer, random_state=0)
        sk_t.append(time.perf_counter() - t0)
        cpu["sklearn"].append(time.process_time() - c0)
        sk_v = s.astype(np.float64) ** 2 / (n - 1)

    def err(v):
        return float(np.max(np.abs(v - exact) / exact)), float(np.mean(np.abs(v - exact) / exact))

    o, s = float(np.median(ours_t)), float(np.median(sk_t))
    res = {"rows": n, "dim": d, "rank": k, "oversample": a.oversample,
           "power_iters": a.power_iters, "threads": a.threads, "normalizer": a.normalizer,
           "subsae_seconds": ours_t, "sklearn_seconds": sk_t,
           "subsae_median": o, "sklearn_median": s, "ratio": o / s,
           "subsae_rel_err_max_mean": err(ours_v), "sklearn_rel_err_max_mean": err(sk_v),
           "cpu_seconds": cpu, "cpu_ratio": float(np.median(cpu["subsae"]) /
                                                  np.median(cpu["sklearn"]))}
    if a.before:
        b = float(np.median(before_t))
        res.update({"before_seconds": before_t, "before_median": b,
                    "before_ratio_to_sklearn": b / s, "after_over_before": o / b,
                    "before_rel_err_max_mean": err(before_v),
                    "before_cpu_ratio": float(np.median(cpu["before"]) /
                                              np.median(cpu["sklearn"]))})
    print(json.dumps(res, indent=1))
    if not a.dir:
        os.remove(path)
        os.rmdir(tmp)


if __name__ == "__main__":
    sys.exit(main())
