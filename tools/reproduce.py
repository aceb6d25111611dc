#!/usr/bin/python3
"""Reproduction report: `make reproduce DATA=DIR`.

Runs `subsae rank` over every layer and site of a recorded model, compares
the effective ranks with the data set's reference.json, trains the same SAE
with random and with active-subspace initialisation on layer 2's attention
output, and writes OUT/report.md with the tables and OUT/spectra.png (the
cumulative explained-variance curves of attention output, MLP output,
residual stream and pre-W_O heads, one panel per layer).

With a model (llama2.c checkpoint) and `subsae-llama`, the data is
recorded first, in-process by `subsae-llama record` (131,072 sampled tokens,
all sites, into OUT/data), and the report gains the table "loss recovered /
KL: random vs active-subspace init": both SAEs spliced into the model by
`subsae-llama splice` on 16,384 other sampled tokens.

Usage: reproduce.py SUBSAE DATA_DIR OUT_DIR [SUBSAE_LLAMA MODEL]
Only the Python standard library and gnuplot are needed.
"""
import json
import os
import re
import subprocess
import sys
import time

SITES = ["attn_out", "mlp_out", "resid_post", "attn_z", "mlp_in"]
PLOTTED = [("attn_out", "attention output"), ("mlp_out", "MLP output"),
           ("resid_post", "residual stream"), ("attn_z", "heads before W_O")]
TRAIN_FILE = "L2_attn_out_131k.npy"
TRAIN_SITE = "L2_attn_out"
RECORD_ARGS = ["--sequences", "512", "--seq-len", "256", "--seed", "0", "--dtype", "f16"]
SPLICE_ARGS = ["--sequences", "64", "--seq-len", "256", "--seed", "1"]
TRAIN_ARGS = ["--features", "32768", "--k", "8", "--lr", "1e-3", "--batch", "4096",
              "--epochs", "2", "--dead-window", "114688", "--eval-fraction", "0.125",
              "--seed", "0", "--json", "--quiet"]


def run_json(command):
    print("+", " ".join(command), file=sys.stderr, flush=True)
    result = subprocess.run(command, stdout=subprocess.PIPE, check=True)
    return json.loads(result.stdout)


def layers_and_files(data):
    layers = sorted({int(m.group(1)) for name in os.listdir(data)
                     for m in [re.match(r"L(\d+)_(\w+)\.npy$", name)] if m})
    files = [(layer, site, os.path.join(data, "L%d_%s.npy" % (layer, site)))
             for layer in layers for site in SITES]
    return layers, [f for f in files if os.path.exists(f[2])]


def rank_reports(subsae, files):
    reports = run_json([subsae, "rank", "--method", "exact", "--json", "--quiet"] + [f[2] for f in files])
    return {os.path.basename(r["path"]): r for r in reports["reports"]}


def rank_table(layers, files, reports, reference):
    lines = ["| layer | " + " | ".join(SITES) + " |", "|---" * (len(SITES) + 1) + "|"]
    by_name = {(layer, site): os.path.basename(path) for layer, site, path in files}
    mismatches = []
    for layer in layers:
        cells = []
        for site in SITES:
            name = by_name.get((layer, site))
            if not name:
                cells.append("–")
                continue
            r = reports[name]
            r99 = r["effective_rank"]
            ref = reference.get(name)
            if ref:
                ours = [r["effective_ranks"][k] for k in ("0.9", "0.95", "0.99")]
                theirs = [ref["r90"], ref["r95"], ref["r99"]]
                if ours != theirs or abs(r["entropy_rank"] - ref["entropy_rank"]) > 1e-2:
                    mismatches.append("%s: r90/r95/r99 %s vs %s, entropy %.3f vs %.3f" % (
                        name, ours, theirs, r["entropy_rank"], ref["entropy_rank"]))
            cell = "%d (%.2f)" % (r99, r["effective_rank_ratio"])
            cells.append("**%s**" % cell if site == "attn_out" else cell)
        lines.append("| L%d | %s |" % (layer, " | ".join(cells)))
    return "\n".join(lines), mismatches


def finding_holds(layers, files, reports):
    by = {(layer, site): reports[os.path.basename(path)]["effective_rank"]
          for layer, site, path in files}
    return all(by[(l, "attn_out")] < min(by[(l, s)] for s in ("mlp_out", "resid_post", "attn_z")
                                         if (l, s) in by)
               for l in layers if (l, "attn_out") in by)


def plot(layers, files, reports, out_dir):
    paths = {(layer, site): path for layer, site, path in files}
    columns = []
    for layer in layers:
        for site, _ in PLOTTED:
            variances = reports[os.path.basename(paths[(layer, site)])]["variances"]
            total, cumulative, acc = sum(variances), [], 0.0
            for v in variances:
                acc += v
                cumulative.append(acc / total)
            columns.append(cumulative)
    data_file = os.path.join(out_dir, "spectra.dat")
    with open(data_file, "w") as f:
        for i in range(max(len(c) for c in columns)):
            f.write("%d %s\n" % (i + 1, " ".join("%.6f" % c[i] if i < len(c) else "nan"
                                                   for c in columns)))
    png = os.path.join(out_dir, "spectra.png")
    script = ["set terminal pngcairo size %d,420 font ',10'" % (330 * len(layers)),
              "set output '%s'" % png,
              "set multiplot layout 1,%d title 'Cumulative explained variance "
              "(stories260K, exact, centred)'" % len(layers),
              "set key bottom right", "set grid", "set yrange [0.5:1.001]",
              "set xrange [0:%d]" % max(len(c) for c in columns),
              "set xlabel 'principal directions r'"]
    for li, layer in enumerate(layers):
        script.append("set title 'layer %d'" % layer)
        script.append("set ylabel '%s'" % ("explained variance" if li == 0 else ""))
        curves = ["'%s' using 1:%d with lines lw 2 title '%s'" % (data_file, 2 + li * 4 + si, label)
                  for si, (_, label) in enumerate(PLOTTED)]
        curves.append("0.99 with lines dt 2 lc 'gray' title '99 %'")
        script.append("plot " + ", ".join(curves))
    script.append("unset multiplot")
    subprocess.run(["gnuplot"], input="\n".join(script).encode(), check=True)
    return png


def record(llama, model, out_dir):
    """Record every site of the model into OUT/data with subsae-llama; the
    training file is the same recording of layer 2's attention output."""
    data = os.path.join(out_dir, "data")
    os.makedirs(data, exist_ok=True)
    run_json([llama, "record", model, "--out", data, "--overwrite", "--json"] + RECORD_ARGS)
    train = os.path.join(data, TRAIN_FILE)
    if os.path.lexists(train):
        os.remove(train)
    os.symlink(TRAIN_SITE + ".npy", train)
    return data


def train_rows(subsae, data, out_dir):
    path = os.path.join(data, TRAIN_FILE)
    if not os.path.exists(path):
        return None, []
    rows = []
    for init in ("random", "active-subspace"):
        started = time.time()
        sae_dir = os.path.join(out_dir, "sae-" + init)
        report = run_json([subsae, "train", path, "--init", init, "--out", sae_dir,
                           "--overwrite"] + TRAIN_ARGS)
        report["sae_dir"] = sae_dir
        rows.append((init, report, time.time() - started))
    lines = ["| init | subspace r | dead (last epoch) | explained variance (eval) | L0 | "
             "never fire (eval) | seconds |", "|---|---|---|---|---|---|---|"]
    for init, report, seconds in rows:
        final, ev = report["final"], report["eval"]
        lines.append("| %s | %s | %.1f %% | %.3f | %.1f | %.1f %% | %.1f |" % (
            init, report.get("subspace_dim") or "–", 100 * final["dead_fraction"],
            ev["explained_variance"], ev["l0"], 100 * ev["zero_frequency_fraction"], seconds))
    return "\n".join(lines), rows


def splice_table(llama, model, runs):
    """Loss recovered and KL of each trained SAE spliced into the model."""
    lines = ["| init | loss recovered | KL (nats/token) | loss spliced | clean | zero-ablated | "
             "mean-ablated | explained variance | L0 |", "|---|---|---|---|---|---|---|---|---|"]
    spliced = {}
    for init, report, _ in runs:
        s = run_json([llama, "splice", model, report["sae_dir"], "--site", TRAIN_SITE,
                      "--json"] + SPLICE_ARGS)
        spliced[init] = s
        lines.append("| %s | %.3f | %.4f | %.4f | %.4f | %.4f | %.4f | %.3f | %.1f |" % (
            init, s["loss_recovered"], s["kl_spliced"], s["loss_spliced"], s["loss_clean"],
            s["loss_zero"], s["loss_mean_ablated"], s["explained_variance"], s["l0"]))
    return "\n".join(lines), spliced


def main():
    subsae, data, out_dir = sys.argv[1:4]
    llama, model = (sys.argv[4], sys.argv[5]) if len(sys.argv) > 5 else (None, None)
    os.makedirs(out_dir, exist_ok=True)
    recorded = bool(llama and model and os.path.exists(model))
    if recorded:
        data = record(llama, model, out_dir)
    reference_path = os.path.join(data, "reference.json")
    reference = json.load(open(reference_path)) if os.path.exists(reference_path) else {}
    layers, files = layers_and_files(data)
    if not files:
        sys.exit("reproduce: no L<layer>_<site>.npy files in %s" % data)
    reports = rank_reports(subsae, files)
    table, mismatches = rank_table(layers, files, reports, reference)
    png = plot(layers, files, reports, out_dir)
    train_table, runs = train_rows(subsae, data, out_dir)
    version = subprocess.run([subsae, "version"], stdout=subprocess.PIPE, text=True).stdout.strip()

    source = ("recorded by `subsae-llama record %s %s`" % (model, " ".join(RECORD_ARGS))
              if recorded else "`%s`" % os.path.abspath(data))
    report = ["# libsubsae reproduction report", "",
              "%s, data %s, %s." % (version, source, time.strftime("%Y-%m-%d %H:%M")), "",
              "## Effective rank at 99 % variance (r99, and r99/d)", "",
              "Every site of every layer (`subsae rank --method exact`).", "", table, ""]
    if reference:
        report.append("Against `reference.json` (r90, r95, r99 exactly, entropy rank to 1e-2): "
                      + ("**all %d files match**." % len(files) if not mismatches else
                         "**%d mismatches**: %s." % (len(mismatches), "; ".join(mismatches))))
        report.append("")
    report.append("Attention outputs have a lower r99 than MLP outputs, the residual stream and "
                  "the heads before W_O at every layer: **%s**." %
                  ("yes" if finding_holds(layers, files, reports) else "NO"))
    report += ["", "![cumulative explained variance](%s)" % os.path.basename(png), ""]
    if train_table:
        report += ["## Dead features: random vs active-subspace initialisation", "",
                   "`%s`, first 7/8 for training, last 1/8 for evaluation; `subsae train %s`." %
                   (TRAIN_FILE, " ".join(a for a in TRAIN_ARGS if a not in ("--json", "--quiet"))),
                   "", train_table, ""]
    if train_table and recorded:
        table, spliced = splice_table(llama, model, runs)
        report += ["## Judging the SAEs by the model: loss recovered / KL, random vs "
                   "active-subspace init", "",
                   "Each SAE above replaces %s in the model (`subsae-llama splice %s`); "
                   "loss recovered = (zero-ablated - spliced) / (zero-ablated - clean)." %
                   (TRAIN_SITE, " ".join(SPLICE_ARGS)), "", table, "",
                   "Active-subspace init recovers at least as much loss as random init: **%s**." %
                   ("yes" if spliced["active-subspace"]["loss_recovered"] >=
                    spliced["random"]["loss_recovered"] else "NO"), ""]
    with open(os.path.join(out_dir, "report.md"), "w") as f:
        f.write("\n".join(report))
    print("wrote %s and %s" % (os.path.join(out_dir, "report.md"), png))
    return 1 if mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
