#!/usr/bin/env python3
"""Plots attention-bench CSV output: thread count vs GF/s, one line per kernel.

    Scripts/bench.sh --format csv --output bench.csv
    python3 Scripts/plot_bench.py bench.csv -o docs/bench-threads.png

Left panel: GF/s against thread count at one sequence length (--seq; default 1024 when measured,
else the longest), one line per kernel, with the sgemm rate the bench measured at each thread
count as a dashed line. Right panel (when the CSV has several sequence lengths): GF/s against
sequence length at the most threads measured, one line per kernel.

Several CSV files (for example one run with OPENBLAS_CORETYPE=Haswell and one without) share the
axes; each line is then labelled with the OpenBLAS core of its file. Needs matplotlib
(`pip install matplotlib`).
"""

import argparse
import csv
import sys
from collections import defaultdict


def read_rows(path):
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or "gflops" not in rows[0]:
        sys.exit(f"plot_bench.py: {path} is not attention-bench CSV output (--format csv)")
    for row in rows:
        for key in ("seq", "threads"):
            row[key] = int(row[key])
        for key in ("gflops", "sgemm_gflops"):
            row[key] = float(row[key]) if row.get(key) else None
    return rows


def finish_axes(ax, xlabel, title):
    """Labels, title, a zero-based GF/s axis, grid and legend, the same on every panel."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel("GF/s")
    ax.set_title(title)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def main(argv):
    p = argparse.ArgumentParser(description="attention-bench CSV to PNG: thread count vs GF/s.")
    p.add_argument("csv", nargs="+", help="CSV files written by attention-bench --format csv")
    p.add_argument("-o", "--output", default="bench-threads.png", help="PNG to write")
    p.add_argument("--seq", type=int, help="sequence length of the thread-count panel")
    p.add_argument("--title", help="figure title")
    a = p.parse_args(argv)

    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("plot_bench.py: matplotlib is not installed; `pip install matplotlib`", file=sys.stderr)
        return 1

    files = [(path, read_rows(path)) for path in a.csv]
    seqs = sorted({r["seq"] for _, rows in files for r in rows})
    seq = a.seq if a.seq is not None else (1024 if 1024 in seqs else seqs[-1])
    if seq not in seqs:
        sys.exit(f"plot_bench.py: no rows with seq {seq}; the CSV has {seqs}")
    sweep = len(seqs) > 1
    fig, axes = plt.subplots(1, 2 if sweep else 1, figsize=(12 if sweep else 6.5, 4.6), squeeze=False)
    colors = {"flash": "tab:blue", "reference": "tab:orange"}
    styles = ["-", "--", ":", "-."]
    markers = ["o", "s", "^", "D"]

    first = files[0][1][0]
    for index, (path, rows) in enumerate(files):
        core = rows[0].get("openblas_core", "")
        suffix = f" (OpenBLAS {core})" if len(files) > 1 else ""
        style, marker = styles[index % len(styles)], markers[index % len(markers)]

        ax = axes[0][0]
        by_kernel = defaultdict(list)
        sgemm = {}
        for r in rows:
            if r["seq"] == seq:
                by_kernel[r["kernel"]].append((r["threads"], r["gflops"]))
                if r["sgemm_gflops"] is not None:
                    sgemm[r["threads"]] = r["sgemm_gflops"]
        for kernel, points in sorted(by_kernel.items()):
            points.sort()
            ax.plot([t for t, _ in points], [g for _, g in points], style, marker=marker,
                    color=colors.get(kernel), label=f"{kernel}{suffix}")
        if sgemm:
            threads = sorted(sgemm)
            ax.plot(threads, [sgemm[t] for t in threads], style, color="gray", alpha=0.6,
                    linewidth=1, label=f"sgemm rate{suffix}")

        if sweep:
            ax = axes[0][1]
            most = max(r["threads"] for r in rows)
            by_kernel = defaultdict(list)
            for r in rows:
                if r["threads"] == most:
                    by_kernel[r["kernel"]].append((r["seq"], r["gflops"]))
            for kernel, points in sorted(by_kernel.items()):
                points.sort()
                ax.plot([n for n, _ in points], [g for _, g in points], style, marker=marker,
                        color=colors.get(kernel), label=f"{kernel}, {most} threads{suffix}")

    what = "forward" if first["mode"] == "forward" else "attention only"
    shape = (f"B={first['batch']} dModel={first['d_model']} H={first['heads']} Hkv={first['kv_heads']} "
             f"D={first['head_dim']} S={first['sinks']} {'causal' if first['causal'] == 'true' else 'not causal'}")
    ax = axes[0][0]
    all_threads = sorted({r["threads"] for _, rows in files for r in rows})
    ax.set_xticks(all_threads)
    finish_axes(ax, "threads (OpenBLAS threads = flash workers)", f"{what}, seq {seq}")
    if sweep:
        ax = axes[0][1]
        ax.set_xscale("log", base=2)
        ax.set_xticks(seqs)
        ax.set_xticklabels([str(n) for n in seqs])
        finish_axes(ax, "sequence length N", f"{what}, sequence sweep")
    fig.suptitle(a.title or f"attention-bench: {shape}", fontsize=11)
    fig.tight_layout()
    fig.savefig(a.output, dpi=110)
    print(f"plot_bench.py: wrote {a.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
