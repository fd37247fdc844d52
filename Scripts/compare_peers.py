#!/usr/bin/env python3
"""attention-bench side by side with PyTorch and ONNX Runtime on the CPU: same shapes, same
thread counts, interleaved rounds.

    /work/venv-peers/bin/python Scripts/compare_peers.py                 # every row group
    .../python Scripts/compare_peers.py --rows mha,gqa --threads 1,2 --rounds 5 --csv peers.csv
    .../python Scripts/compare_peers.py --quick                          # tiny shapes, 1 round

Setup: a virtual environment outside the repository (this script is never needed by
Scripts/test.sh or CI):

    python3 -m venv /work/venv-peers
    /work/venv-peers/bin/pip install onnxruntime onnx numpy
    /work/venv-peers/bin/pip install torch --index-url https://download.pytorch.org/whl/cpu
        # or plain `pip install torch` where only PyPI is reachable (on Linux that wheel also
        # pulls several GB of CUDA libraries unless pip finds a +cpu wheel)

Builds attention-bench in release mode if `--bench` is not given.

Row groups (--rows, default all six). Shapes: B = --batch (1), dModel = --d-model (768),
H = --heads (12), D = dModel / H (64), Hkv = --kv-heads (4) where the group says GQA. Inputs are
fp32 uniform in [-1, 1); torch and ONNX Runtime read the same buffers.

  mha     attention alone, MHA (Hkv = H), not causal, N = --mha-seq (1024,4096).
          Swift: `attention-bench --attention-only --kernel flash --kv-heads H --no-causal`
          (scaledDotProductAttention on [B, N, H*D] queries, keys and values).
          PyTorch: F.scaled_dot_product_attention on the same [B, N, H*D] buffers viewed as
          [B, H, N, D] (a transpose, no copy).
          ORT: one com.microsoft MultiHeadAttention node (num_heads = H; query, key, value
          [B, N, H*D]; no bias, mask or past), whichever CPU kernel ORT picks for it.
  gqa     attention alone, GQA H/Hkv, causal, N = --gqa-seq (1024,2048,4096).
          Swift: `attention-bench --attention-only --kernel flash --kv-heads Hkv --causal`.
          PyTorch: F.scaled_dot_product_attention(is_causal=True, enable_gqa=True), same views.
          ORT: one com.microsoft GroupQueryAttention node (num_heads = H, kv_num_heads = Hkv,
          causal by construction, do_rotary 0; query [B, N, H*D], key/value [B, N, Hkv*D], no
          past_key/past_value, seqlens_k = N-1 per batch row, total_sequence_length = N); only
          its `output` is a graph output.
  decode  one decoding step, GQA H/Hkv: one query against N = --decode-seq (4096) cached keys
          and values, not causal (the query sees every key).
          Swift: `attention-bench --decode --attention-only` (scaledDotProductAttention, one
          query [B, 1, H*D] against head-major [B, Hkv, N, D] keys/values), both its rows: key
          split off (KeySplit.never, "unsplit") and on (KeySplit.chunks(4*threads), "split (c)");
          one table row per split, both from the same Swift process and compared with the same
          PyTorch and ORT timings.
          PyTorch: F.scaled_dot_product_attention(enable_gqa=True), one query [B, H, 1, D]
          against a contiguous [B, Hkv, N, D] cache (on a torch without enable_gqa the cache is
          repeat_interleave'd to H heads inside the timed call).
          ORT: GroupQueryAttention in its token-generation form with a shared past/present
          buffer (IOBinding binds past_key/present_key, and past_value/present_value, to one
          [B, Hkv, N, D] OrtValue each): N-1 cached tokens, one new token (query [B, 1, H*D],
          key/value [B, 1, Hkv*D]) that the op writes into slot N-1, seqlens_k = N-1,
          total_sequence_length = N, so its query too sees N keys. Each call also stores that
          token (2*Hkv*D floats), as a decoding step does; the Swift and PyTorch calls store
          nothing. The buffer's slot N-1 holds that same token, so every call sees the same
          keys and values as the PyTorch call.
  layer   the whole layer, GQA H/Hkv, RoPE, --sinks S (4), causal, N = --layer-seq (1024,4096).
          Swift: `attention-bench --kernel flash` (MultiHeadAttention.forward).
          PyTorch: `LibraryAttention` below, an nn.Module with this library's semantics:
          bias-free q/k/v/out projections, RoPE halfSplit with sinks at positions 0..S-1 and
          token t at S+t, S sink states projected by k/v and prepended, always visible, GQA
          (query head h reads kv head h // (H/Hkv)), causal over token keys. Its attention is
          F.scaled_dot_product_attention with enable_gqa=True; with sinks the causal rule is an
          explicit [N, S+N] boolean mask, because is_causal is top-left aligned over all S+N
          keys and would hide the sinks. Before timing, the module is checked against a
          float64 materialise-everything version of the same math.
          ORT: none ("–"); the issue compares the layer with PyTorch only.
  sdpa-train  a training step of the attention alone, GQA H/Hkv, causal, N = --sdpa-train-seq
          (1024,4096): the forward that keeps what its backward needs, then the backward of a
          fixed random dOut into dq, dk, dv.
          Swift: `attention-bench --attention-only --backward --kernel flash`
          (scaledDotProductAttentionWithPullback and its pullback).
          PyTorch: autograd of F.scaled_dot_product_attention(is_causal=True, enable_gqa=True)
          on leaf q, k, v [B, H or Hkv, N, D] that require grad; each call is the forward and
          out.backward(dOut), the .grad of q, k, v set to None before it. No ORT peer.
  layer-train  a training step of the whole layer (as `layer`), N = --layer-train-seq
          (1024,4096): gradients of x, the four projections and the sink states for a fixed dy.
          Swift: `attention-bench --backward --kernel flash` (forwardWithPullback + pullback).
          PyTorch: autograd of LibraryAttention (x requires grad too); each call is the forward
          and y.backward(dy), every .grad set to None before it. No ORT peer.

Checks before timing: per (group, N), ORT's output is compared with PyTorch's on the very inputs
that are then timed; the script prints the max abs difference and stops (exit 1) if it is above
1e-3. The Swift side is checked by the package's own tests, not here.

Timing: for each row, --rounds times, one Swift process (--iterations timed calls after
--warmup, median), one PyTorch run and one ORT run of the same shape (same counts, median). The
order rotates by one peer each round (Swift, PyTorch, ORT; then PyTorch, ORT, Swift; ...), so a
slow spell of a shared machine lands on all of them. Each peer's row value is the median over
rounds of its per-run medians; a ratio is peer time / Swift time (above 1: Swift is faster).
Defaults: 3 rounds; 5 timed calls after 1 warm-up (decode: 50 after 5, and every peer keeps
warming up until 0.1 s have passed, as attention-bench --decode does). After each PyTorch or ORT
run the script sleeps 0.05 s so that OpenMP's and ORT's spinning workers go idle.

Threads (--threads, default 1 .. cores): the Swift bench sets OpenBLAS threads and flash workers
to t; PyTorch gets torch.set_num_threads(t); ORT gets a session with intra_op_num_threads = t,
inter_op_num_threads = 1, ORT_SEQUENTIAL and ORT_ENABLE_ALL graph optimisation (one session per
row, its thread pool's default spinning left on).

GF/s uses the bench's flop formula (`attention-bench --help`), a multiply and an add being 2
flops: attention = 4*B*H*D*V, V = N^2, or N(N+1)/2 when causal, or N for the decode step (one
query, N keys); the layer adds projections = 2*B*N*dModel*(2*dModel + 2*Hkv*D)
+ 2*S*dModel*2*Hkv*D and counts V = N*S + N(N+1)/2. A training step counts attention
(4 + 10)*B*H*D*V (forward, then dV, dP, dQ, dK and the recomputed scores) and 3x the
projections.

--quick: N = 128 (decode: cache 256), 1 round, 3 timed calls after 1 warm-up (decode: 10 after
2), for checking the script end to end, not for numbers.
"""

import argparse
import contextlib
import csv
import json
import math
import os
import statistics
import subprocess
import sys
import time

from release_bench import build_release_bench

NAME = "compare_peers.py"
GROUPS = ["mha", "gqa", "decode", "layer", "sdpa-train", "layer-train"]
TRAINING_GROUPS = ("sdpa-train", "layer-train")
PEERS = ["swift", "torch", "ort"]
CHECK_TOLERANCE = 1e-3
DASH = "–"

try:
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
except ImportError:
    torch = None

try:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper
    import onnxruntime as ort
except ImportError:
    ort = None


def int_list(text):
    try:
        values = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a comma-separated list of integers")
    if not values or min(values) <= 0 or len(set(values)) != len(values):
        raise argparse.ArgumentTypeError(f"'{text}' must list distinct positive integers")
    return values


def group_list(text):
    values = [part.strip() for part in text.split(",") if part.strip()]
    bad = [v for v in values if v not in GROUPS]
    if not values or bad or len(set(values)) != len(values):
        raise argparse.ArgumentTypeError(f"'{text}': pick distinct row groups from {','.join(GROUPS)}")
    return [g for g in GROUPS if g in values]


def parse_arguments(argv):
    cores = os.cpu_count() or 1
    p = argparse.ArgumentParser(
        description="attention-bench, PyTorch and ONNX Runtime side by side (see the module docstring).")
    p.add_argument("--bench", help="attention-bench binary (default: build it in release mode)")
    p.add_argument("--rows", type=group_list, default=list(GROUPS),
                   help="row groups, comma-separated, from mha,gqa,decode,layer (default: all)")
    p.add_argument("--quick", action="store_true",
                   help="tiny shapes, 1 round, few calls: checks the script end to end")
    p.add_argument("--d-model", type=int, default=768)
    p.add_argument("--heads", type=int, default=12)
    p.add_argument("--kv-heads", type=int, default=4, help="key/value heads of the gqa, decode and layer rows")
    p.add_argument("--sinks", type=int, default=4, help="layer rows only")
    p.add_argument("--no-rope", action="store_true", help="layer rows only")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--mha-seq", type=int_list, default=None, help="default 1024,4096 (--quick: 128)")
    p.add_argument("--gqa-seq", type=int_list, default=None, help="default 1024,2048,4096 (--quick: 128)")
    p.add_argument("--decode-seq", type=int_list, default=None, help="cache lengths; default 4096 (--quick: 256)")
    p.add_argument("--layer-seq", type=int_list, default=None, help="default 1024,4096 (--quick: 128)")
    p.add_argument("--sdpa-train-seq", type=int_list, default=None, help="default 1024,4096 (--quick: 128)")
    p.add_argument("--layer-train-seq", type=int_list, default=None, help="default 1024,4096 (--quick: 128)")
    p.add_argument("--threads", type=int_list, default=list(range(1, cores + 1)))
    p.add_argument("--rounds", type=int, default=None, help="interleaved rounds per row (default 3; --quick: 1)")
    p.add_argument("--iterations", type=int, default=None,
                   help="timed calls per run (median; default 5, decode 50; --quick: 3, decode 10)")
    p.add_argument("--warmup", type=int, default=None,
                   help="untimed calls per run (default 1, decode 5; --quick: 1, decode 2)")
    p.add_argument("--csv", help="also write the rows to this CSV file")
    a = p.parse_args(argv)
    quick = a.quick
    defaults = {"mha": [128] if quick else [1024, 4096], "gqa": [128] if quick else [1024, 2048, 4096],
                "decode": [256] if quick else [4096], "layer": [128] if quick else [1024, 4096],
                "sdpa-train": [128] if quick else [1024, 4096], "layer-train": [128] if quick else [1024, 4096]}
    a.seqs = {}
    for group in GROUPS:
        given = getattr(a, f"{group.replace('-', '_')}_seq")
        a.seqs[group] = given if given is not None else defaults[group]
    if a.rounds is None:
        a.rounds = 1 if quick else 3
    # (prefill, decode) timed calls and warm-up calls per run.
    a.counts = {
        "prefill": (a.iterations or (3 if quick else 5), a.warmup if a.warmup is not None else 1),
        "decode": (a.iterations or (10 if quick else 50), a.warmup if a.warmup is not None else (2 if quick else 5)),
    }
    for name in ["d_model", "heads", "kv_heads", "batch", "rounds"]:
        if getattr(a, name) <= 0:
            p.error(f"--{name.replace('_', '-')} must be > 0")
    if a.iterations is not None and a.iterations <= 0:
        p.error("--iterations must be > 0")
    if a.sinks < 0 or (a.warmup is not None and a.warmup < 0):
        p.error("--sinks and --warmup must be >= 0")
    if a.d_model % a.heads or a.heads % a.kv_heads:
        p.error("--heads must divide --d-model and --kv-heads must divide --heads")
    if ("layer" in a.rows or "layer-train" in a.rows) and not a.no_rope and (a.d_model // a.heads) % 2:
        p.error("RoPE needs an even head dim; pass --no-rope")
    return a


class Shape:
    """One row group's shape at one N: what every peer runs."""

    def __init__(self, a, group, n):
        self.group, self.n, self.batch = group, n, a.batch
        self.d_model, self.heads = a.d_model, a.heads
        self.head_dim = a.d_model // a.heads
        self.kv_heads = a.heads if group == "mha" else a.kv_heads
        self.training = group in TRAINING_GROUPS
        self.is_layer = group in ("layer", "layer-train")
        self.causal = group in ("gqa", "layer", "sdpa-train", "layer-train")
        self.sinks = a.sinks if self.is_layer else 0
        self.rope = self.is_layer and not a.no_rope
        self.decode = group == "decode"
        self.iterations, self.warmup = a.counts["decode" if self.decode else "prefill"]
        self.min_warmup_seconds = 0.1 if self.decode else 0.0

    def flops(self):
        """attention-bench's formula (Workload.flops); the decode step is one query against N keys."""
        b, h, d, n, s = self.batch, self.heads, self.head_dim, self.n, self.sinks
        if self.decode:
            return 4 * b * h * d * n
        visible = n * s + (n * (n + 1) / 2 if self.causal else n * n)
        attention = (14 if self.training else 4) * b * h * d * visible
        if not self.is_layer:
            return attention
        kv_dim = self.kv_heads * d
        projections = 2 * b * n * self.d_model * (2 * self.d_model + 2 * kv_dim) + 2 * s * self.d_model * 2 * kv_dim
        return attention + projections * (3 if self.training else 1)

    def describe(self):
        what = {"mha": "attention only, not causal; ORT MultiHeadAttention",
                "gqa": "attention only, causal; ORT GroupQueryAttention, no past",
                "decode": "one query against N cached keys/values, not causal; "
                          "ORT GroupQueryAttention, shared KV buffer, N-1 past + 1 new token",
                "layer": f"MultiHeadAttention.forward vs LibraryAttention, sinks={self.sinks}, "
                         f"RoPE={'on' if self.rope else 'off'}, causal; no ORT peer",
                "sdpa-train": "forward + backward of the attention alone, causal; "
                              "scaledDotProductAttentionWithPullback vs autograd of SDPA; no ORT peer",
                "layer-train": f"forward + backward of the layer (dx, dW, dsinks) vs autograd of LibraryAttention, "
                               f"sinks={self.sinks}, RoPE={'on' if self.rope else 'off'}, causal; no ORT peer"}
        calls = lambda count, noun: f"{count} {noun}{'' if count == 1 else 's'}"
        return (f"{self.group}: B={self.batch} H={self.heads} Hkv={self.kv_heads} D={self.head_dim}"
                f"{' dModel=' + str(self.d_model) if self.is_layer else ''}; {what[self.group]}; "
                f"{calls(self.iterations, 'timed call')} after {calls(self.warmup, 'warm-up call')} per run"
                f"{' (warm-up at least 0.1 s)' if self.decode else ''}")


def median_ms(call, iterations, warmup, min_warmup_seconds=0.0):
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
        m = LibraryAttention(a.d_model, a.heads, a.kv_heads, a.sinks, not a.no_rope, True)
        x = torch.rand(2, 37, a.d_model) * 2 - 1
        with torch.inference_mode():
            got, want = m(x).double(), naive_float64(m, x)
        error = ((got - want).abs() / (want.abs() + 1e-3)).max().item()
        if error > 1e-3:
            sys.exit(f"{NAME}: LibraryAttention differs from its float64 check by {error:.2e}")
        return error

    def sdpa_has_enable_gqa():
        try:
            x = torch.zeros(1, 2, 1, 4)
            F.scaled_dot_product_attention(x, x[:, :1], x[:, :1], enable_gqa=True)
            return True
        except TypeError:
            return False

    def sdpa(q, k, v, causal, gqa_supported):
        """SDPA on [B, H, L, D] queries and [B, Hkv, M, D] keys/values."""
        if gqa_supported:
            return F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=True)
        group = q.shape[1] // k.shape[1]  # no enable_gqa: the repeat is part of every call
        if group > 1:
            k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal)

    def uniform(*size):
        return torch.rand(*size) * 2 - 1

    class TorchSubject:
        """PyTorch's call for one Shape, with the inputs it shares with ORT.

        `call()` runs one timed call; `inputs` are the fp32 tensors ORT reads (layouts as in
        the docstring); `reference()` is PyTorch's output as [B, L, H*D] numpy, for the ORT check."""

        def __init__(self, shape):
            s = shape
            torch.manual_seed(42)
            b, n, h, hkv, d = s.batch, s.n, s.heads, s.kv_heads, s.head_dim
            gqa_supported = sdpa_has_enable_gqa()
            if s.group == "layer":
                module = LibraryAttention(s.d_model, h, hkv, s.sinks, s.rope, True).eval()
                x = uniform(b, n, s.d_model)
                self.call = lambda: module(x)
                self.inputs = None
                return
            if s.group == "layer-train":
                module = LibraryAttention(s.d_model, h, hkv, s.sinks, s.rope, True).train()
                x = uniform(b, n, s.d_model).requires_grad_(True)
                dy = uniform(b, n, s.d_model)

                def step():
                    module.zero_grad(set_to_none=True)
                    x.grad = None
                    module(x).backward(dy)
                self.call = step
                self.inputs = None
                return
            if s.group == "sdpa-train":
                leaves = [uniform(b, heads, n, d).requires_grad_(True) for heads in (h, hkv, hkv)]
                d_out = uniform(b, h, n, d)

                def step():
                    for leaf in leaves:
                        leaf.grad = None
                    sdpa(*leaves, True, gqa_supported).backward(d_out)
                self.call = step
                self.inputs = None
                return
            if s.decode:
                q = uniform(b, 1, h * d)                   # [B, 1, H*D]
                k_cache = uniform(b, hkv, n, d)             # [B, Hkv, N, D], contiguous
                v_cache = uniform(b, hkv, n, d)
                qh = q.view(b, 1, h, d).transpose(1, 2)
                self.call = lambda: sdpa(qh, k_cache, v_cache, False, gqa_supported)
                self.inputs = {"query": q, "key_cache": k_cache, "value_cache": v_cache}
                return
            q = uniform(b, n, h * d)                       # [B, N, H*D]
            k = uniform(b, n, hkv * d)                     # [B, N, Hkv*D]
            v = uniform(b, n, hkv * d)
            qh = q.view(b, n, h, d).transpose(1, 2)
            kh = k.view(b, n, hkv, d).transpose(1, 2)
            vh = v.view(b, n, hkv, d).transpose(1, 2)
            causal = s.causal
            self.call = lambda: sdpa(qh, kh, vh, causal, gqa_supported)
            self.inputs = {"query": q, "key": k, "value": v}

        def reference(self):
            with torch.inference_mode():
                out = self.call()                          # [B, H, L, D]
            b, h, l, d = out.shape
            return out.transpose(1, 2).reshape(b, l, h * d).numpy()


# ---------------------------------------------------------------------------------------------
# ONNX Runtime side.

if ort is not None:
    def ort_session(nodes, inputs, outputs, threads):
        graph = helper.make_graph(nodes, "attention", inputs, outputs)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                        helper.make_opsetid("com.microsoft", 1)])
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])

    class OrtSubject:
        """ORT's session for one Shape at one thread count; `call()` runs one timed call through
        an IOBinding whose inputs are TorchSubject's buffers (no copies); `output()` is the
        result of the last call as [B, L, H*D] numpy."""

        def __init__(self, shape, torch_inputs, threads):
            s = shape
            b, n, h, hkv, d = s.batch, s.n, s.heads, s.kv_heads, s.head_dim
            f32, i32 = TensorProto.FLOAT, TensorProto.INT32
            info = helper.make_tensor_value_info
            self.keep = []  # numpy arrays and OrtValues the binding points into
            length = 1 if s.decode else n
            if s.group == "mha":
                node = helper.make_node("MultiHeadAttention", ["query", "key", "value"], ["output"],
                                        domain="com.microsoft", num_heads=h)
                inputs = [info(name, f32, [b, n, h * d]) for name in ("query", "key", "value")]
                feeds = {name: torch_inputs[name].numpy() for name in ("query", "key", "value")}
                outputs = [info("output", f32, [b, n, h * d])]
            elif s.group == "gqa":
                node = helper.make_node(
                    "GroupQueryAttention",
                    ["query", "key", "value", "", "", "seqlens_k", "total_sequence_length"], ["output"],
                    domain="com.microsoft", num_heads=h, kv_num_heads=hkv, do_rotary=0)
                inputs = [info("query", f32, [b, n, h * d]), info("key", f32, [b, n, hkv * d]),
                          info("value", f32, [b, n, hkv * d]), info("seqlens_k", i32, [b]),
                          info("total_sequence_length", i32, [])]
                feeds = {name: torch_inputs[name].numpy() for name in ("query", "key", "value")}
                feeds["seqlens_k"] = np.full([b], n - 1, dtype=np.int32)
                feeds["total_sequence_length"] = np.array(n, dtype=np.int32)
                outputs = [info("output", f32, [b, n, h * d])]
            elif s.decode:
                node = helper.make_node(
                    "GroupQueryAttention",
                    ["query", "key", "value", "past_key", "past_value", "seqlens_k", "total_sequence_length"],
                    ["output", "present_key", "present_value"],
                    domain="com.microsoft", num_heads=h, kv_num_heads=hkv, do_rotary=0)
                cache = [b, hkv, n, d]
                inputs = [info("query", f32, [b, 1, h * d]), info("key", f32, [b, 1, hkv * d]),
                          info("value", f32, [b, 1, hkv * d]), info("past_key", f32, cache),
                          info("past_value", f32, cache), info("seqlens_k", i32, [b]),
                          info("total_sequence_length", i32, [])]
                outputs = [info("output", f32, [b, 1, h * d]), info("present_key", f32, cache),
                           info("present_value", f32, cache)]
                k_cache, v_cache = torch_inputs["key_cache"].numpy(), torch_inputs["value_cache"].numpy()
                # The new token is the cache's last slot, in [B, 1, Hkv*D]: writing it back into
                # slot N-1 leaves the cache as PyTorch sees it.
                feeds = {
                    "query": torch_inputs["query"].numpy(),
                    "key": np.ascontiguousarray(k_cache[:, :, n - 1:, :].transpose(0, 2, 1, 3).reshape(b, 1, hkv * d)),
                    "value": np.ascontiguousarray(v_cache[:, :, n - 1:, :].transpose(0, 2, 1, 3).reshape(b, 1, hkv * d)),
                    "seqlens_k": np.full([b], n - 1, dtype=np.int32),
                    "total_sequence_length": np.array(n, dtype=np.int32),
                }
                # Own copies of the cache: ORT writes into them.
                self.past_key = ort.OrtValue.ortvalue_from_numpy(k_cache.copy())
                self.past_value = ort.OrtValue.ortvalue_from_numpy(v_cache.copy())
            else:
                raise ValueError(s.group)
            self.session = ort_session([node], inputs, outputs, threads)
            self.binding = self.session.io_binding()
            for name, array in feeds.items():
                self.binding.bind_cpu_input(name, array)
                self.keep.append(array)
            self.binding.bind_output("output", "cpu")          # output is bound first: index 0
            if s.decode:
                self.binding.bind_ortvalue_input("past_key", self.past_key)
                self.binding.bind_ortvalue_input("past_value", self.past_value)
                self.binding.bind_ortvalue_output("present_key", self.past_key)
                self.binding.bind_ortvalue_output("present_value", self.past_value)
            self.length, self.width = length, h * d
            self.cache = (k_cache, v_cache) if s.decode else None

        def call(self):
            self.session.run_with_iobinding(self.binding)

        def output(self):
            out = self.binding.copy_outputs_to_cpu()[0]
            if self.cache is not None:  # the in-place store left the shared buffers unchanged
                for buffer, original in zip((self.past_key, self.past_value), self.cache):
                    if not np.array_equal(buffer.numpy(), original):
                        sys.exit(f"{NAME}: ORT's decode step changed its shared KV buffer; "
                                 "the ORT decode row would not see PyTorch's keys")
            return out


def check_ort(shape, torch_subject, threads):
    """ORT's output against PyTorch's on the inputs that are then timed; returns the max abs diff."""
    subject = OrtSubject(shape, torch_subject.inputs, threads)
    subject.call()
    got = subject.output()
    want = torch_subject.reference()
    if got.shape != want.shape:
        sys.exit(f"{NAME}: ORT's {shape.group} output has shape {got.shape}, PyTorch's {want.shape}")
    diff = float(np.abs(got.astype(np.float64) - want.astype(np.float64)).max())
    print(f"{NAME}: {shape.group} N={shape.n}: ORT vs PyTorch SDPA max abs diff {diff:.2e}", file=sys.stderr)
    if not diff <= CHECK_TOLERANCE:
        sys.exit(f"{NAME}: FAILED: ORT's {shape.group} output at N={shape.n} differs from PyTorch SDPA "
                 f"by {diff:.3e} (> {CHECK_TOLERANCE:g}); no timing done")
    return diff


# ---------------------------------------------------------------------------------------------
# Swift side.


def swift_command(bench, shape, threads):
    s = shape
    command = [bench, "--seq", str(s.n), "--threads", str(threads), "--d-model", str(s.d_model),
               "--heads", str(s.heads), "--kv-heads", str(s.kv_heads), "--batch", str(s.batch),
               "--iterations", str(s.iterations), "--warmup", str(s.warmup),
               "--sgemm-size", "0", "--format", "json", "--quiet"]
    if s.decode:
        return command + ["--decode", "--attention-only"]
    command += ["--kernel", "flash", "--max-seconds", "0", "--causal" if s.causal else "--no-causal"]
    if s.training:
        command.append("--backward")
    if s.is_layer:
        return command + ["--sinks", str(s.sinks), "--rope" if s.rope else "--no-rope"]
    return command + ["--attention-only"]


def swift_run(bench, shape, threads):
    """One attention-bench process; returns ({variant: median ms}, its JSON report). The variant
    is "" for prefill rows, "unsplit" / "split (c)" for decode rows."""
    command = swift_command(bench, shape, threads)
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{NAME}: {' '.join(command)} failed: {done.stderr.strip()}")
    report = json.loads(done.stdout)
    if shape.decode:
        times = {}
        for row in report["decode"]:
            chunks = row.get("key_chunks")
            times[row["split"] if chunks is None else f"{row['split']} ({chunks})"] = row["median_ms"]
        return times, report
    return {"": report["results"][0]["median_ms"]}, report


# ---------------------------------------------------------------------------------------------

def fmt(value, digits):
    return DASH if value is None else f"{value:.{digits}f}"


def print_rows(header, table, rows, text_columns, csv_path):
    """Prints `table` under `header` (text columns left-aligned, numbers right-aligned) and,
    when `csv_path` is given, writes `rows` there as CSV."""
    widths = [max(len(c) for c in column) for column in zip(header, *table)]

    def line(cells):
        return "  ".join(c.ljust(w) if i in text_columns else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths)))
    print(line(header))
    print("  ".join("-" * w for w in widths))
    for cells in table:
        print(line(cells))
    if csv_path and rows:
        with open(csv_path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
            writer.writeheader()
            writer.writerows({k: ("" if v is None else v) for k, v in row.items()} for row in rows)
        print(f"{NAME}: wrote {csv_path}", file=sys.stderr)


def measure(a, bench, shape, threads, torch_subject, ort_diff):
    """The interleaved rounds of one (shape, threads); returns its table rows."""
    torch.set_num_threads(threads)
    ort_subject = OrtSubject(shape, torch_subject.inputs, threads) if torch_subject.inputs is not None else None
    times = {"swift": {}, "torch": [], "ort": []}
    machine = None

    def run_swift():
        nonlocal machine
        by_variant, report = swift_run(bench, shape, threads)
        for variant, ms in by_variant.items():
            times["swift"].setdefault(variant, []).append(ms)
        machine = report["machine"]

    def run_python(peer, call):
        with contextlib.nullcontext() if shape.training else torch.inference_mode():
            times[peer].append(median_ms(call, shape.iterations, shape.warmup, shape.min_warmup_seconds))
        time.sleep(0.05)  # let OpenMP's and ORT's spinning workers go idle before the next peer

    steps = {"swift": run_swift, "torch": lambda: run_python("torch", torch_subject.call),
             "ort": (lambda: run_python("ort", ort_subject.call)) if ort_subject else None}
    order = [peer for peer in PEERS if steps[peer] is not None]
    for round_ in range(a.rounds):
        print(f"{NAME}: {shape.group} N={shape.n} threads={threads} round {round_ + 1}/{a.rounds} "
              f"(load {os.getloadavg()[0]:.2f})", file=sys.stderr)
        turn = round_ % len(order)
        for peer in order[turn:] + order[:turn]:
            steps[peer]()
    del ort_subject

    gflop = shape.flops() / 1e9
    torch_ms = statistics.median(times["torch"])
    ort_ms = statistics.median(times["ort"]) if times["ort"] else None
    rows = []
    for variant, swift_times in times["swift"].items():
        swift_ms = statistics.median(swift_times)
        rows.append({
            "group": shape.group, "seq": shape.n, "threads": threads, "swift_variant": variant,
            "swift_ms": swift_ms, "torch_ms": torch_ms, "ort_ms": ort_ms,
            "swift_gflops": gflop / swift_ms * 1000, "torch_gflops": gflop / torch_ms * 1000,
            "ort_gflops": gflop / ort_ms * 1000 if ort_ms else None,
            "torch_over_swift": torch_ms / swift_ms, "ort_over_swift": ort_ms / swift_ms if ort_ms else None,
            "ort_max_abs_diff": ort_diff,
        })
    return rows, machine


def main(argv):
    a = parse_arguments(argv)
    missing = [name for name, module in (("torch", torch), ("onnxruntime, onnx and numpy", ort)) if module is None]
    if missing:
        print(f"{NAME}: {' and '.join(missing)} not installed, so there is nothing to compare with.\n"
              "  Set up a virtual environment as the docstring says (python3 -m venv /work/venv-peers;\n"
              "  /work/venv-peers/bin/pip install onnxruntime onnx numpy torch, torch from PyTorch's\n"
              "  CPU wheel index where reachable) and run this script with its python.", file=sys.stderr)
        return 1
    bench = a.bench or build_release_bench(NAME)
    if "layer" in a.rows or "layer-train" in a.rows:
        error = check_module(a)
        print(f"{NAME}: LibraryAttention matches its float64 check (max rel. error {error:.1e})", file=sys.stderr)

    rows, machine, shapes = [], None, []
    for group in a.rows:
        for n in a.seqs[group]:
            shape = Shape(a, group, n)
            shapes.append(shape)
            torch.set_num_threads(a.threads[0])
            torch_subject = TorchSubject(shape)
            ort_diff = check_ort(shape, torch_subject, a.threads[0]) if torch_subject.inputs is not None else None
            for threads in a.threads:
                new_rows, new_machine = measure(a, bench, shape, threads, torch_subject, ort_diff)
                rows += new_rows
                machine = new_machine or machine
            del torch_subject

    print(f"attention-bench (flash) vs PyTorch {torch.__version__} vs ONNX Runtime {ort.__version__} (CPU)")
    if machine:
        print(f"CPU {machine['cpu_model']}; OpenBLAS {machine['openblas_version']} core {machine['openblas_core']}; "
              f"PyTorch BLAS {'MKL' if torch.backends.mkl.is_available() else 'other'}, "
              f"CPU capability {torch.backends.cpu.get_cpu_capability()}")
    seen = set()
    for shape in shapes:
        if shape.group not in seen:
            seen.add(shape.group)
            print(shape.describe())
    checked = any(r["ort_max_abs_diff"] is not None for r in rows)
    print(f"median of {a.rounds} interleaved round{'' if a.rounds == 1 else 's'} (peer order rotating) of "
          f"each peer's per-run median; ratio = peer time / Swift time (> 1: Swift faster)"
          + ("; decode: split (c) = KeySplit.chunks(c), unsplit = KeySplit.never" if "decode" in a.rows else "")
          + (f"; ORT's outputs matched PyTorch SDPA's within {CHECK_TOLERANCE:g} (max abs diff: 'ORT diff')"
             if checked else "")
          + (f"; layer and training rows have no ORT peer ({DASH})"
             if any(g in a.rows for g in ("layer",) + TRAINING_GROUPS) else ""))
    print()
    header = ["group", "N", "threads", "Swift variant", "Swift ms", "PyTorch ms", "ORT ms",
              "Swift GF/s", "PyTorch GF/s", "ORT GF/s", "PyTorch/Swift", "ORT/Swift", "ORT diff"]
    digits = lambda r: 4 if r["group"] == "decode" else 2
    table = [[r["group"], str(r["seq"]), str(r["threads"]), r["swift_variant"] or DASH,
              fmt(r["swift_ms"], digits(r)), fmt(r["torch_ms"], digits(r)), fmt(r["ort_ms"], digits(r)),
              fmt(r["swift_gflops"], 1), fmt(r["torch_gflops"], 1), fmt(r["ort_gflops"], 1),
              fmt(r["torch_over_swift"], 2), fmt(r["ort_over_swift"], 2),
              DASH if r["ort_max_abs_diff"] is None else f"{r['ort_max_abs_diff']:.1e}"] for r in rows]
    print_rows(header, table, rows, text_columns={0, 3}, csv_path=a.csv)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
