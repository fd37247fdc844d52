#!/usr/bin/env python3
"""attention-bench side by side with PyTorch on the CPU, same workloads, same thread counts.

    python3 Scripts/compare_torch.py                   # the bench's default workload
    python3 Scripts/compare_torch.py --seq 1024 --threads 1,2 --rounds 5 --csv torch.csv
    python3 Scripts/compare_torch.py --decode          # one query against a 1024/4096-token cache

Two workloads, each at every (seq, threads):

  sdpa    the attention kernel alone. Swift: `attention-bench --attention-only --kernel flash`
          (scaledDotProductAttention on [B, N, H*D] queries and [B, N, Hkv*D] keys/values).
          PyTorch: F.scaled_dot_product_attention on the same layout, viewed as [B, H, N, D]
          (a transpose, no copy), with enable_gqa=True and is_causal.
  module  the whole layer. Swift: `attention-bench --kernel flash` (MultiHeadAttention.forward).
          PyTorch: `LibraryAttention` below, an nn.Module with this library's semantics:
          bias-free q/k/v/out projections, RoPE halfSplit with sinks at positions 0..S-1 and
          token t at S+t, S sink states projected by k/v and prepended, always visible, GQA
          (query head h reads kv head h // (H/Hkv)), causal over token keys. Its attention is
          F.scaled_dot_product_attention with enable_gqa=True; with sinks the causal rule is an
          explicit [N, S+N] boolean mask, because is_causal is top-left aligned over all S+N
          keys and would hide the sinks. Before timing, the module is checked against a
          float64 materialise-everything version of the same math.

The runs are interleaved so that drift of a shared machine lands on both sides: for each row,
`--rounds` times, one Swift process (`--iterations` timed calls after `--warmup`, median) and one
PyTorch timing of the same shape (same counts, median), alternating which goes first. Each side's
row value is the median over rounds; the ratio is PyTorch time / Swift time (above 1: Swift is
faster). GF/s uses the bench's flop formula (`attention-bench --help`).

--decode compares one decoding step instead (the issue's decode benchmark):

  decode  Swift: `attention-bench --decode --attention-only` (scaledDotProductAttention, one query
          [B, 1, H*D] against head-major [B, Hkv, N, D] keys/values, the same layout PyTorch gets;
          not causal), both its rows: key split off
          (KeySplit.never) and on (KeySplit.chunks(4*threads)). PyTorch: F.scaled_dot_product_attention
          with one query [B, H, 1, D] against a contiguous [B, Hkv, N, D] cache (the layout of a
          PyTorch KV cache), enable_gqa=True. On a torch without enable_gqa the keys and values
          are repeat_interleave'd to H heads inside the timed call (a cache holds Hkv heads, so
          that copy is part of every decoding step). N defaults to 1024,4096, --iterations to 50,
          --warmup to 5; both sides then keep warming up until 0.1 s has passed. One table row
          per (N, threads, Swift split); both splits of a round come from the same Swift process
          and are compared with the same PyTorch timing.

Threads: the Swift bench sets OpenBLAS threads and flash workers to t; PyTorch gets
torch.set_num_threads(t). Inputs are fp32 uniform in [-1, 1); weights follow PyTorch's defaults.

Needs torch (the CPU-only build is enough; `pip install torch` on Linux also pulls several GB of
CUDA libraries unless you pick PyTorch's CPU wheel). Builds attention-bench in release mode if
`--bench` is not given.
"""

import argparse
import csv
import json
import math
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

try:
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
except ImportError:
    torch = None


def int_list(text):
    try:
        values = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a comma-separated list of integers")
    if not values or min(values) <= 0 or len(set(values)) != len(values):
        raise argparse.ArgumentTypeError(f"'{text}' must list distinct positive integers")
    return values


def parse_arguments(argv):
    cores = os.cpu_count() or 1
    p = argparse.ArgumentParser(
        description="attention-bench and PyTorch side by side (see the module docstring).")
    p.add_argument("--bench", help="attention-bench binary (default: build it in release mode)")
    p.add_argument("--workload", choices=["sdpa", "module", "both"], default="both")
    p.add_argument("--d-model", type=int, default=768)
    p.add_argument("--heads", type=int, default=12)
    p.add_argument("--kv-heads", type=int, default=4)
    p.add_argument("--sinks", type=int, default=4, help="module workload only")
    p.add_argument("--no-rope", action="store_true", help="module workload only")
    p.add_argument("--no-causal", action="store_true")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--decode", action="store_true",
                   help="one query against N cached keys/values (see the docstring); ignores --workload")
    p.add_argument("--seq", type=int_list, default=None,
                   help="sequence lengths (default 256,512,1024,2048,4096; --decode: cache lengths 1024,4096)")
    p.add_argument("--threads", type=int_list, default=list(range(1, cores + 1)))
    p.add_argument("--rounds", type=int, default=3, help="alternating Swift/PyTorch runs per row")
    p.add_argument("--iterations", type=int, default=None, help="timed calls per run (median; default 5, --decode 50)")
    p.add_argument("--warmup", type=int, default=None, help="untimed calls per run (default 1, --decode 5)")
    p.add_argument("--csv", help="also write the rows to this CSV file")
    a = p.parse_args(argv)
    if a.seq is None:
        a.seq = [1024, 4096] if a.decode else [256, 512, 1024, 2048, 4096]
    if a.iterations is None:
        a.iterations = 50 if a.decode else 5
    if a.warmup is None:
        a.warmup = 5 if a.decode else 1
    for name in ["d_model", "heads", "kv_heads", "batch", "rounds", "iterations"]:
        if getattr(a, name) <= 0:
            p.error(f"--{name.replace('_', '-')} must be > 0")
    if a.sinks < 0 or a.warmup < 0:
        p.error("--sinks and --warmup must be >= 0")
    if a.d_model % a.heads or a.heads % a.kv_heads:
        p.error("--heads must divide --d-model and --kv-heads must divide --heads")
    if not a.no_rope and (a.d_model // a.heads) % 2:
        p.error("RoPE needs an even head dim; pass --no-rope")
    return a


# ---------------------------------------------------------------------------------------------
# FLOPs: the same formula as attention-bench (Workload.flops).

def flops(a, n, module):
    b, h, d = a.batch, a.heads, a.d_model // a.heads
    s = a.sinks if module else 0
    causal = not a.no_causal
    visible = n * s + (n * (n + 1) / 2 if causal else n * n)
    attention = 4 * b * h * d * visible
    if not module:
        return attention
    kv_dim = a.kv_heads * d
    projections = 2 * b * n * a.d_model * (2 * a.d_model + 2 * kv_dim) + 2 * s * a.d_model * 2 * kv_dim
    return attention + projections


# ---------------------------------------------------------------------------------------------
# PyTorch side.

if torch is not None:
    class LibraryAttention(nn.Module):
        """This library's MultiHeadAttention in PyTorch, fp32, attention through SDPA."""

        def __init__(self, d_model, n_heads, kv_heads, num_sinks, use_rope=True, is_causal=True,
                     rope_theta=10000.0):
            super().__init__()
            self.d_model, self.n_heads, self.kv_heads = d_model, n_heads, kv_heads
            self.head_dim = d_model // n_heads
            self.num_sinks, self.use_rope, self.is_causal = num_sinks, use_rope, is_causal
            kv_width = kv_heads * self.head_dim
            self.q_proj = nn.Linear(d_model, d_model, bias=False)
            self.k_proj = nn.Linear(d_model, kv_width, bias=False)
            self.v_proj = nn.Linear(d_model, kv_width, bias=False)
            self.out_proj = nn.Linear(d_model, d_model, bias=False)
            self.sink_states = nn.Parameter(torch.randn(num_sinks, d_model) * 0.02) if num_sinks else None
            half = self.head_dim // 2
            inv_freq = rope_theta ** (-2.0 * torch.arange(half, dtype=torch.float64) / self.head_dim)
            self.register_buffer("inv_freq", inv_freq.to(torch.float32), persistent=False)

        def rope(self, x, first_position):
            """halfSplit RoPE on x [B, L, heads, D] at positions first_position + 0..L-1."""
            if not self.use_rope:
                return x
            half = self.head_dim // 2
            positions = torch.arange(first_position, first_position + x.shape[1], dtype=torch.float32)
            angle = positions[:, None] * self.inv_freq[None, :]
            cos, sin = angle.cos()[:, None, :], angle.sin()[:, None, :]   # [L, 1, D/2]
            a, b = x[..., :half], x[..., half:]
            return torch.cat([a * cos - b * sin, a * sin + b * cos], dim=-1)

        def forward(self, x):
            bsz, n, _ = x.shape
            s, h, hkv, d = self.num_sinks, self.n_heads, self.kv_heads, self.head_dim
            q = self.rope(self.q_proj(x).view(bsz, n, h, d), s).transpose(1, 2)
            k = self.rope(self.k_proj(x).view(bsz, n, hkv, d), s).transpose(1, 2)
            v = self.v_proj(x).view(bsz, n, hkv, d).transpose(1, 2)
            if s:
                sk = self.rope(self.k_proj(self.sink_states).view(1, s, hkv, d), 0).transpose(1, 2)
                sv = self.v_proj(self.sink_states).view(1, s, hkv, d).transpose(1, 2)
                k = torch.cat([sk.expand(bsz, -1, -1, -1), k], dim=2)
                v = torch.cat([sv.expand(bsz, -1, -1, -1), v], dim=2)
                visible = torch.ones(n, s + n, dtype=torch.bool)
                if self.is_causal:
                    visible[:, s:] = torch.ones(n, n, dtype=torch.bool).tril()
                context = F.scaled_dot_product_attention(q, k, v, attn_mask=visible, enable_gqa=True)
            else:
                context = F.scaled_dot_product_attention(q, k, v, is_causal=self.is_causal, enable_gqa=True)
            return self.out_proj(context.transpose(1, 2).reshape(bsz, n, self.d_model))

    def naive_float64(module, x):
        """The same math in float64 with every score materialised: the check on LibraryAttention."""
        m = module
        x = x.double()
        wq, wk, wv, wo = (p.weight.double() for p in (m.q_proj, m.k_proj, m.v_proj, m.out_proj))
        bsz, n, _ = x.shape
        s, h, hkv, d = m.num_sinks, m.n_heads, m.kv_heads, m.head_dim
        half = d // 2
        inv_freq = m.inv_freq.double()

        def rope(t, positions):  # t [..., L, D]
            if not m.use_rope:
                return t
            angle = positions.double()[:, None] * inv_freq[None, :]
            a, b = t[..., :half], t[..., half:]
            return torch.cat([a * angle.cos() - b * angle.sin(), a * angle.sin() + b * angle.cos()], -1)

        sinks = m.sink_states.double() if s else torch.zeros(0, m.d_model, dtype=torch.float64)
        keys_in = torch.cat([sinks.expand(bsz, -1, -1), x], dim=1)               # [B, S+N, dModel]
        positions = torch.arange(s + n)
        q = rope((x @ wq.T).view(bsz, n, h, d).transpose(1, 2), positions[s:])
        k = rope((keys_in @ wk.T).view(bsz, s + n, hkv, d).transpose(1, 2), positions)
        v = (keys_in @ wv.T).view(bsz, s + n, hkv, d).transpose(1, 2)
        group = h // hkv
        k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
        scores = q @ k.transpose(-1, -2) / math.sqrt(d)
        if m.is_causal:
            i = torch.arange(n)[:, None]
            j = torch.arange(s + n)[None, :]
            scores = scores.masked_fill((j >= s) & (j - s > i), float("-inf"))
        context = torch.softmax(scores, dim=-1) @ v
        return context.transpose(1, 2).reshape(bsz, n, m.d_model) @ wo.T

    def check_module(a):
        """LibraryAttention (fp32, SDPA) against naive_float64 on a small input."""
        torch.manual_seed(0)
        m = LibraryAttention(a.d_model, a.heads, a.kv_heads, a.sinks, not a.no_rope, not a.no_causal)
        x = torch.rand(2, 37, a.d_model) * 2 - 1
        with torch.inference_mode():
            got, want = m(x).double(), naive_float64(m, x)
        error = ((got - want).abs() / (want.abs() + 1e-3)).max().item()
        if error > 1e-3:
            sys.exit(f"compare_torch.py: LibraryAttention differs from its float64 check by {error:.2e}")
        return error

    def torch_median_ms(call, iterations, warmup, min_warmup_seconds=0.0):
        start = time.perf_counter()
        for _ in range(warmup):
            call()
        while time.perf_counter() - start < min_warmup_seconds:
            call()
        times = []
        for _ in range(iterations):
            start = time.perf_counter()
            call()
            times.append(time.perf_counter() - start)
        return statistics.median(times) * 1000

    def torch_subject(a, workload, n):
        """A no-argument callable running one PyTorch call of the workload at seq n."""
        torch.manual_seed(42)
        h, hkv, d = a.heads, a.kv_heads, a.d_model // a.heads
        if workload == "sdpa":
            q = (torch.rand(a.batch, n, h * d) * 2 - 1).view(a.batch, n, h, d).transpose(1, 2)
            k = (torch.rand(a.batch, n, hkv * d) * 2 - 1).view(a.batch, n, hkv, d).transpose(1, 2)
            v = (torch.rand(a.batch, n, hkv * d) * 2 - 1).view(a.batch, n, hkv, d).transpose(1, 2)
            causal = not a.no_causal
            return lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=True)
        module = LibraryAttention(a.d_model, h, hkv, a.sinks, not a.no_rope, not a.no_causal).eval()
        x = torch.rand(a.batch, n, a.d_model) * 2 - 1
        return lambda: module(x)

    def sdpa_has_enable_gqa():
        try:
            x = torch.zeros(1, 2, 1, 4)
            F.scaled_dot_product_attention(x, x[:, :1], x[:, :1], enable_gqa=True)
            return True
        except TypeError:
            return False

    def torch_decode_subject(a, n):
        """One decoding step: one query [B, H, 1, D] against a [B, Hkv, N, D] cache, not causal."""
        torch.manual_seed(42)
        h, hkv, d = a.heads, a.kv_heads, a.d_model // a.heads
        q = (torch.rand(a.batch, 1, h * d) * 2 - 1).view(a.batch, 1, h, d).transpose(1, 2)
        k = torch.rand(a.batch, hkv, n, d) * 2 - 1
        v = torch.rand(a.batch, hkv, n, d) * 2 - 1
        if sdpa_has_enable_gqa():
            return lambda: F.scaled_dot_product_attention(q, k, v, enable_gqa=True)
        group = h // hkv  # no enable_gqa: the repeat is part of every step (the cache holds Hkv heads)
        return lambda: F.scaled_dot_product_attention(
            q, k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1))


# ---------------------------------------------------------------------------------------------
# Swift side.


def print_rows(header, table, rows, text_column, csv_path):
    """Prints `table` under `header` (text column left-aligned, numbers right-aligned) and,
    when `csv_path` is given, writes `rows` there as CSV."""
    widths = [max(len(c) for c in column) for column in zip(header, *table)]

    def line(cells):
        return "  ".join(c.ljust(w) if i == text_column else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths)))
    print(line(header))
    print("  ".join("-" * w for w in widths))
    for cells in table:
        print(line(cells))
    if csv_path:
        with open(csv_path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
            writer.writeheader()
            writer.writerows(rows)
        print(f"compare_torch.py: wrote {csv_path}", file=sys.stderr)


def time_torch_round(subject, a, times):
    """One PyTorch round: the median of a.iterations calls, appended to times."""
    with torch.inference_mode():
        # --decode: at least 0.1 s of warm-up, as attention-bench --decode gives each row.
        times.append(torch_median_ms(subject, a.iterations, a.warmup, 0.1 if a.decode else 0.0))
    time.sleep(0.05)  # let OpenMP's spinning workers go idle before Swift runs

def build_bench():
    command = ["swift", "build", "-c", "release", "--product", "attention-bench"]
    print("compare_torch.py: " + " ".join(command), file=sys.stderr)
    subprocess.run(command, cwd=ROOT, check=True, stdout=sys.stderr)
    bin_path = subprocess.run(command + ["--show-bin-path"], cwd=ROOT, check=True,
                              capture_output=True, text=True).stdout.strip()
    return os.path.join(bin_path, "attention-bench")


def swift_run(a, bench, workload, n, threads):
    """One attention-bench process; returns (median ms, its JSON report)."""
    command = [bench, "--kernel", "flash", "--seq", str(n), "--threads", str(threads),
               "--d-model", str(a.d_model), "--heads", str(a.heads), "--kv-heads", str(a.kv_heads),
               "--batch", str(a.batch), "--iterations", str(a.iterations), "--warmup", str(a.warmup),
               "--max-seconds", "0", "--sgemm-size", "0", "--format", "json", "--quiet",
               "--no-causal" if a.no_causal else "--causal"]
    if workload == "sdpa":
        command += ["--attention-only"]
    else:
        command += ["--sinks", str(a.sinks), "--no-rope" if a.no_rope else "--rope"]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"compare_torch.py: {' '.join(command)} failed: {done.stderr.strip()}")
    report = json.loads(done.stdout)
    return report["results"][0]["median_ms"], report


def swift_decode_run(a, bench, n, threads):
    """One `attention-bench --decode --attention-only` process; returns ({split: median ms}, report)."""
    command = [bench, "--decode", "--attention-only", "--seq", str(n), "--threads", str(threads),
               "--d-model", str(a.d_model), "--heads", str(a.heads), "--kv-heads", str(a.kv_heads),
               "--batch", str(a.batch), "--iterations", str(a.iterations), "--warmup", str(a.warmup),
               "--sgemm-size", "0", "--format", "json", "--quiet"]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"compare_torch.py: {' '.join(command)} failed: {done.stderr.strip()}")
    report = json.loads(done.stdout)
    return {row["split"]: row for row in report["decode"]}, report


# ---------------------------------------------------------------------------------------------

def decode_main(a, bench):
    """--decode: Swift's kernel-only decode rows against PyTorch SDPA, one query per call."""
    rows, machine = [], None
    for n in a.seq:
        subject = torch_decode_subject(a, n)
        for threads in a.threads:
            torch.set_num_threads(threads)
            swift_times, torch_times, chunks = {"unsplit": [], "split": []}, [], {}
            for round_ in range(a.rounds):
                print(f"compare_torch.py: decode N={n} threads={threads} round {round_ + 1}/{a.rounds} "
                      f"(load {os.getloadavg()[0]:.2f})", file=sys.stderr)

                def run_torch():
                    time_torch_round(subject, a, torch_times)

                def run_swift():
                    nonlocal machine
                    by_split, report = swift_decode_run(a, bench, n, threads)
                    for split, row in by_split.items():
                        swift_times[split].append(row["median_ms"])
                        chunks[split] = row.get("key_chunks")
                    machine = report["machine"]
                for step in ((run_swift, run_torch) if round_ % 2 == 0 else (run_torch, run_swift)):
                    step()
            torch_ms = statistics.median(torch_times)
            for split in ["unsplit", "split"]:
                swift_ms = statistics.median(swift_times[split])
                rows.append({
                    "workload": "decode", "seq": n, "threads": threads,
                    "split": split if chunks.get(split) is None else f"split ({chunks[split]})",
                    "swift_ms": swift_ms, "torch_ms": torch_ms, "torch_over_swift": torch_ms / swift_ms,
                    "swift_tokens_per_s": a.batch / swift_ms * 1000, "torch_tokens_per_s": a.batch / torch_ms * 1000,
                })
        del subject

    d = a.d_model // a.heads
    gqa = "enable_gqa=True" if sdpa_has_enable_gqa() else "no enable_gqa: repeat_interleave inside each call"
    print(f"decode: attention-bench --decode --attention-only (flash) vs PyTorch {torch.__version__} SDPA ({gqa}): "
          f"B={a.batch} H={a.heads} Hkv={a.kv_heads} D={d}, one query against N cached keys/values")
    if machine:
        print(f"CPU {machine['cpu_model']}; OpenBLAS {machine['openblas_version']} core "
              f"{machine['openblas_core']}; PyTorch CPU capability {torch.backends.cpu.get_cpu_capability()}")
    print(f"median of {a.rounds} interleaved rounds, each the median of {a.iterations} calls after "
          f"{a.warmup} warm-up; ratio = PyTorch time / Swift time (> 1: Swift faster); "
          f"split (c) = KeySplit.chunks(c), unsplit = KeySplit.never")
    print()
    header = ["cache N", "threads", "Swift split", "Swift ms", "PyTorch ms", "PyTorch/Swift", "Swift tok/s", "PyTorch tok/s"]
    table = [[str(r["seq"]), str(r["threads"]), r["split"], f"{r['swift_ms']:.4f}", f"{r['torch_ms']:.4f}",
              f"{r['torch_over_swift']:.2f}", f"{r['swift_tokens_per_s']:.0f}", f"{r['torch_tokens_per_s']:.0f}"]
             for r in rows]
    print_rows(header, table, rows, text_column=2, csv_path=a.csv)
    return 0


def main(argv):
    a = parse_arguments(argv)
    if torch is None:
        print("compare_torch.py: PyTorch is not installed, so there is nothing to compare with.\n"
              "  Install the CPU-only build, e.g. `pip install torch` with PyTorch's CPU wheel index\n"
              "  (on Linux the default wheel also downloads several GB of CUDA libraries), then\n"
              "  run this script again.", file=sys.stderr)
        return 1
    bench = a.bench or build_bench()
    if a.decode:
        return decode_main(a, bench)
    workloads = ["sdpa", "module"] if a.workload == "both" else [a.workload]
    if "module" in workloads:
        error = check_module(a)
        print(f"compare_torch.py: LibraryAttention matches its float64 check (max rel. error {error:.1e})",
              file=sys.stderr)

    rows, machine = [], None
    for workload in workloads:
        for n in a.seq:
            subject = torch_subject(a, workload, n)
            for threads in a.threads:
                torch.set_num_threads(threads)
                swift_times, torch_times = [], []
                for round_ in range(a.rounds):
                    print(f"compare_torch.py: {workload} N={n} threads={threads} round {round_ + 1}/{a.rounds}",
                          file=sys.stderr)
                    def run_torch():
                        time_torch_round(subject, a, torch_times)

                    def run_swift():
                        nonlocal machine
                        ms, report = swift_run(a, bench, workload, n, threads)
                        swift_times.append(ms)
                        machine = report["machine"]
                    for step in ((run_swift, run_torch) if round_ % 2 == 0 else (run_torch, run_swift)):
                        step()
                swift_ms, torch_ms = statistics.median(swift_times), statistics.median(torch_times)
                gflop = flops(a, n, workload == "module") / 1e9
                rows.append({
                    "workload": workload, "seq": n, "threads": threads,
                    "swift_ms": swift_ms, "torch_ms": torch_ms, "torch_over_swift": torch_ms / swift_ms,
                    "swift_gflops": gflop / swift_ms * 1000, "torch_gflops": gflop / torch_ms * 1000,
                })
            del subject

    d = a.d_model // a.heads
    print(f"attention-bench (flash) vs PyTorch {torch.__version__}: B={a.batch} dModel={a.d_model} "
          f"H={a.heads} Hkv={a.kv_heads} D={d} {'causal' if not a.no_causal else 'not causal'}; "
          f"module: sinks={a.sinks} RoPE={'off' if a.no_rope else 'on'}")
    if machine:
        print(f"CPU {machine['cpu_model']}; OpenBLAS {machine['openblas_version']} core "
              f"{machine['openblas_core']}; PyTorch BLAS: {torch.backends.mkl.is_available() and 'MKL' or 'other'}, "
              f"CPU capability {torch.backends.cpu.get_cpu_capability()}")
    print(f"median of {a.rounds} interleaved rounds, each the median of {a.iterations} calls after "
          f"{a.warmup} warm-up; ratio = PyTorch time / Swift time (> 1: Swift faster)")
    print()
    header = ["workload", "seq", "threads", "Swift ms", "PyTorch ms", "PyTorch/Swift", "Swift GF/s", "PyTorch GF/s"]
    table = [[r["workload"], str(r["seq"]), str(r["threads"]), f"{r['swift_ms']:.2f}", f"{r['torch_ms']:.2f}",
              f"{r['torch_over_swift']:.2f}", f"{r['swift_gflops']:.1f}", f"{r['torch_gflops']:.1f}"] for r in rows]
    print_rows(header, table, rows, text_column=0, csv_path=a.csv)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
