#!/usr/bin/env python3
"""What each CPU level gains: the same workloads at every level this CPU supports, side by side.

    python3 Scripts/compare_levels.py                   # 3 rounds, threads 1 and 2
    python3 Scripts/compare_levels.py --rounds 5 --threads 1 --markdown

Each round runs one release `attention-bench` process per level (ATTENTION_CPU_LEVEL=baseline,
avx2, avx512 as supported), in a rotating order so that a slow spell of a shared machine lands
on every level; a row's time is the median over rounds of each process's median. The gain is
baseline time / this level's time. OpenBLAS is the same at every level (it picks its own
kernels), so the gain is what the Swift loops (softmax step, dot products, RoPE) add.

Workloads (flash kernel): `mha` the kernel alone, 12/12 heads, not causal; `gqa` the kernel
alone, 12/4 heads, causal; `layer` the bench's default forward; `decode` one query against a
cache, kernel alone (unsplit row). Builds attention-bench in release mode unless --bench is given.
"""

import argparse
import csv
import io
import os
import re
import statistics
import subprocess
import sys

from release_bench import build_release_bench

ORDER = ["baseline", "avx2", "avx512"]

WORKLOADS = {
    "mha": ["--attention-only", "--kv-heads", "12", "--no-causal"],
    "gqa": ["--attention-only", "--kv-heads", "4", "--causal"],
    "layer": [],
    "decode": ["--decode", "--attention-only", "--iterations", "200"],
}



def run(bench, level, arguments):
    """{(seq, threads): median ms} and the level the process reports."""
    command = [bench, *arguments, "--kernel", "flash", "--format", "csv", "--sgemm-size", "64", "--quiet"]
    done = subprocess.run(command, env=dict(os.environ, ATTENTION_CPU_LEVEL=level),
                          capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"compare_levels: {' '.join(command)} failed:\n{done.stderr}")
    medians, reported = {}, set()
    for row in csv.DictReader(io.StringIO(done.stdout)):
        if row.get("split", "unsplit") != "unsplit":
            continue
        seq = row.get("seq") or row.get("cache_length")
        medians[(int(seq), int(row["threads"]))] = float(row["median_ms"])
        reported.add(row["cpu_level"])
    if reported != {level}:
        sys.exit(f"compare_levels: asked for {level}, the bench ran at {reported}")
    return medians


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bench")
    parser.add_argument("--workloads", default="mha,gqa,layer,decode")
    parser.add_argument("--seq", default="1024,4096", help="sequence lengths (mha, gqa, layer)")
    parser.add_argument("--decode-seq", default="4096")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--markdown", action="store_true")
    a = parser.parse_args()
    bench = a.bench or build_release_bench("compare_levels")
    probe = subprocess.run([bench, "--attention-only", "--seq", "8", "--threads", "1", "--iterations", "1",
                            "--warmup", "0", "--sgemm-size", "16", "--kernel", "flash", "--quiet"],
                           capture_output=True, text=True, check=True).stdout
    supported = re.search(r"supported: (\w+)", probe).group(1)
    levels = ORDER[:ORDER.index(supported) + 1]

    rows = []
    for name in a.workloads.split(","):
        seq = a.decode_seq if name == "decode" else a.seq
        arguments = WORKLOADS[name] + ["--seq", seq, "--threads", a.threads]
        samples = {level: [] for level in levels}
        for round_ in range(a.rounds):
            rotated = levels[round_ % len(levels):] + levels[:round_ % len(levels)]
            for level in rotated:
                samples[level].append(run(bench, level, arguments))
            print(f"compare_levels: {name} round {round_ + 1}/{a.rounds}", file=sys.stderr)
        for key in sorted(samples[levels[0]][0]):
            medians = {level: statistics.median(s[key] for s in samples[level]) for level in levels}
            rows.append((name, key[0], key[1], medians))

    header = ["workload", "N", "threads"] + [f"{level} ms" for level in levels] \
        + [f"{level} gain" for level in levels[1:]]
    lines = []
    for name, n, threads, medians in rows:
        cells = [name, str(n), str(threads)] + [f"{medians[level]:.3f}" for level in levels] \
            + [f"{medians['baseline'] / medians[level]:.2f}×" for level in levels[1:]]
        lines.append(cells)
    if a.markdown:
        print("| " + " | ".join(header) + " |")
        print("|" + "---|" * len(header))
        for cells in lines:
            print("| " + " | ".join(cells) + " |")
    else:
        widths = [max(len(h), *(len(c[i]) for c in lines)) for i, h in enumerate(header)]
        print("  ".join(h.rjust(w) for h, w in zip(header, widths)))
        for cells in lines:
            print("  ".join(c.rjust(w) for c, w in zip(cells, widths)))


if __name__ == "__main__":
    main()
