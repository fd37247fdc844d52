#!/usr/bin/env python3
"""Where the time goes, per CPU level: block sgemm against the Swift passes.

    python3 Scripts/profile_levels.py                  # every level this CPU supports
    python3 Scripts/profile_levels.py --levels avx2 --seq 4096 --markdown

For each workload and each level (ATTENTION_CPU_LEVEL), one release `attention-bench` process
runs on one thread under `perf record -e cpu-clock` (a sampling timer, so it works on virtual
machines without hardware counters), and the samples are grouped by the function they hit:

  sgemm compute     OpenBLAS's micro-kernel (sgemm_kernel_*)
  sgemm pack/beta   OpenBLAS copying operands into panels (sgemm_*copy*) and scaling or zeroing
                    C first (sgemm_beta_*): overhead of many small products
  sgemv             OpenBLAS's matrix-vector kernels (decoding's O += P·V)
  BLAS, unnamed     OpenBLAS code without an exported symbol; Debian's build leaves its
                    sgemv_t kernel unnamed, and decoding calls nothing else of OpenBLAS's
  softmax step      the level's softmax step (exp2, row max and sum, rescale, mask, dropout)
  other kernels     the level's other loops (dot products, RoPE, scaling)
  Swift glue        the rest of the library (block loop, merge, projections' bookkeeping)
  threads/system    the kernel, the C library, the dynamic loader, Swift's runtime

Only the calling thread is counted (the bench runs one worker), and the bench's sgemm-rate
measurement is shrunk to 64³ so that it adds nothing visible. Timings under perf are not the
ones to quote: Scripts/compare_levels.py times the levels without it. Needs
`perf` (Debian's linux-perf) and builds attention-bench in release mode unless --bench is given.
"""

import argparse
import collections
import os
import re
import subprocess
import sys

from release_bench import build_release_bench
import tempfile


WORKLOADS = {
    "mha": ("attention only, MHA 12/12, not causal",
            ["--attention-only", "--kv-heads", "12", "--no-causal"]),
    "gqa": ("attention only, GQA 12/4, causal", ["--attention-only", "--kv-heads", "4", "--causal"]),
    "layer": ("layer forward (bench default: GQA 12/4, RoPE, 4 sinks, causal)", []),
    "decode": ("decode, 1 query vs N cached keys, GQA 12/4", ["--decode", "--attention-only"]),
}

GROUPS = ["sgemm compute", "sgemm pack/beta", "sgemv", "BLAS, unnamed", "softmax step", "other kernels",
          "Swift glue", "threads/system"]


def classify(dso, symbol):
    if "openblas" in dso:
        if re.search(r"sgemm_kernel", symbol):
            return "sgemm compute"
        if re.search(r"sgemm_.*copy|sgemm_beta", symbol):
            return "sgemm pack/beta"
        if re.search(r"sgemv", symbol):
            return "sgemv"
        if symbol.startswith("0x"):
            return "BLAS, unnamed"
        return "sgemm pack/beta" if "sgemm" in symbol else "threads/system"
    if dso.startswith("attention-bench"):
        if "AttentionKernels" in symbol:
            return "softmax step" if re.search(r"softmax", symbol, re.I) else "other kernels"
        return "Swift glue"
    return "threads/system"



def supported_levels(bench):
    """The levels below and at the bench's own (its table prints `supported: LEVEL`)."""
    out = subprocess.run([bench, "--attention-only", "--seq", "8", "--threads", "1", "--iterations", "1",
                          "--warmup", "0", "--sgemm-size", "16", "--kernel", "flash", "--quiet"],
                         capture_output=True, text=True, check=True).stdout
    top = re.search(r"supported: (\w+)", out).group(1)
    order = ["baseline", "avx2", "avx512"]
    return order[:order.index(top) + 1]


def profile(bench, level, arguments, seq, iterations):
    with tempfile.TemporaryDirectory() as scratch:
        data = os.path.join(scratch, "perf.data")
        command = ["perf", "record", "-q", "-e", "cpu-clock", "-F", "1999", "-o", data, "--",
                   bench, *arguments, "--seq", str(seq), "--threads", "1", "--kernel", "flash",
                   "--iterations", str(iterations), "--sgemm-size", "64", "--quiet"]
        environment = dict(os.environ, ATTENTION_CPU_LEVEL=level)
        run = subprocess.run(command, env=environment, capture_output=True, text=True)
        if run.returncode != 0:
            sys.exit(f"profile_levels: {' '.join(command)} failed:\n{run.stderr}")
        # The first row's median: `seq threads kernel calls median …`, or for --decode
        # `kernel N threads split calls median …`.
        median = (re.search(r"^\s*\d+\s+1\s+flash\s+\d+\s+([\d.]+)", run.stdout, re.M)
                  or re.search(r"^kernel\s+\d+\s+1\s+unsplit\s+\d+\s+([\d.]+)", run.stdout, re.M))
        # Only the thread that ran the calls: OpenBLAS's pool threads spin for a while after
        # the library starts (0.1–0.3 s here), which is start-up, not the workload.
        threads = subprocess.run(["perf", "report", "-i", data, "--no-children", "--sort", "pid", "--stdio",
                                  "-g", "none"], capture_output=True, text=True, check=True).stdout
        main_thread = re.search(r"^\s*[\d.]+%\s+(\d+):", threads, re.M).group(1)
        report = subprocess.run(["perf", "report", "-i", data, "--no-children", "--sort", "dso,symbol",
                                 "--tid", main_thread, "--stdio", "-g", "none", "--percent-limit", "0"],
                                capture_output=True, text=True, check=True).stdout
    shares = collections.Counter()
    for line in report.splitlines():
        match = re.match(r"\s*([\d.]+)%\s+(\S+)\s+\[[.k]\]\s+(\S+)", line)
        if match:
            shares[classify(match.group(2), match.group(3))] += float(match.group(1))
    return shares, median.group(1) if median else "?"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bench", help="attention-bench binary (default: build it in release mode)")
    parser.add_argument("--levels", help="comma-separated levels (default: every supported one)")
    parser.add_argument("--workloads", default="mha,gqa,layer,decode", help=",".join(WORKLOADS))
    parser.add_argument("--seq", type=int, default=1024)
    parser.add_argument("--decode-seq", type=int, default=4096)
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--markdown", action="store_true", help="one markdown table")
    a = parser.parse_args()
    bench = a.bench or build_release_bench("profile_levels")
    levels = a.levels.split(",") if a.levels else supported_levels(bench)

    rows = []
    for name in a.workloads.split(","):
        title, arguments = WORKLOADS[name]
        seq = a.decode_seq if name == "decode" else a.seq
        iterations = a.iterations * 300 if name == "decode" else a.iterations
        for level in levels:
            shares, median = profile(bench, level, arguments, seq, iterations)
            total = sum(shares.values()) or 1
            rows.append((f"{title}, N {seq}", level, median,
                         [100 * shares[g] / total for g in GROUPS]))
            print(f"{title}, N {seq}, {level}: median {median} ms", file=sys.stderr)

    header = ["workload", "level"] + GROUPS
    if a.markdown:
        print("| " + " | ".join(header) + " |")
        print("|" + "---|" * len(header))
        for workload, level, median, shares in rows:
            print("| " + " | ".join([workload, level] + [f"{s:.0f} %" for s in shares]) + " |")
    else:
        for workload, level, median, shares in rows:
            parts = ", ".join(f"{g} {s:.0f} %" for g, s in zip(GROUPS, shares))
            print(f"{workload} [{level}, {median} ms]: {parts}")


if __name__ == "__main__":
    main()
