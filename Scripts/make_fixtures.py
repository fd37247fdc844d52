#!/usr/bin/env python3
"""Golden fixtures from PyTorch for the Swift `Attention` package.

    python3 Scripts/make_fixtures.py            # writes Tests/AttentionTests/Fixtures/*.safetensors

Needs `torch` (the CPU build is enough). Files are written with the `safetensors` package when
it is installed (proving the Swift reader takes its output), else with the small writer below
(same format). The fixtures are committed, so the Swift tests and CI need neither. Rerunning
gives the same tensors; `safetensors` may order the metadata differently from run to run.

Each fixture is one safetensors file holding, for one configuration:

    <prefix>q_proj.weight, k_proj.weight, v_proj.weight, out_proj.weight   nn.Linear [out, in]
    <prefix>sink_states                                   [S, dModel], when the config has sinks
    input      [B, N, dModel]  F32
    mask       additive mask, when the case has one (F32; -inf = hidden)
    expected   [B, N, dModel]  F32: the module's output, computed in float64, rounded once
    dy         [B, N, dModel]  F32: a fixed upstream gradient
    grad.input, grad.q_proj.weight, grad.k_proj.weight, grad.v_proj.weight,
    grad.out_proj.weight, grad.sink_states (with sinks)
               F32: float64 autograd of sum(dy · expected) with respect to each, rounded once
    __metadata__: the AttentionConfig as strings (dModel, nHeads, useRoPE, ropeTheta,
                  ropeScaling, ropePairing, useAttentionSinks, numAttentionSinks, useGQA,
                  gqaGroups, isCausal), plus `prefix` (the weights' name prefix), `weightDType`
                  and `description`.

Weights and inputs are drawn in float32 (so Swift sees exactly the values PyTorch used); F16 and
BF16 cases round the weights to that type first, store them in it, and compute the expected
output from the rounded values. The module then runs in float64, so `expected` carries no fp32
error of its own.

`DesignAttention` below implements DESIGN.md §3 of the Swift package. Where it differs from
the PyTorch attention module the library mirrors, and from stock PyTorch attention:

- RoPE `halfSplit` (Llama/NeoX: element i pairs with i + D/2) is built as a true rotation of
  each (i, i + D/2) pair, so every pair keeps its norm and q·k depends only on the distance
  between positions. `interleaved` (GPT-J: 2i pairs with 2i+1) is the same rotation on
  neighbouring elements. invFreq[i] = theta^(-2i/D) · (ropeScaling or 1), in float64.
- Positions: with S sinks, sink keys sit at positions 0..<S and token t at S + t, for queries
  and keys alike (the mirrored module offset keys and queries differently).
- Sinks are projected with the same k/v projections, prepended to every sequence's keys and
  values, and always visible: the causal rule and token-width masks never hide them; only a
  mask of width S+N can.
- Causal: token query i sees token keys j <= i (plus every sink), whichever kernel runs; with
  sinks that is not `F.scaled_dot_product_attention(is_causal=True)`, whose rule is top-left
  aligned over all S+N keys.
- A query row that sees no key at all returns zeros. A plain softmax over all -inf scores (as
  in `nn.MultiheadAttention`, and `F.scaled_dot_product_attention` before PyTorch 2.5) gives
  NaN there.
- GQA query head h reads kv head h // (H / Hkv) (consecutive groups, `repeat_interleave`).
- No biases, and separate q/k/v projections, unlike `nn.MultiheadAttention` (packed
  `in_proj_weight`, biases on by default). Scale 1/sqrt(headDim). No dropout (eval mode).

As a check on this module, every case is also recomputed with
`torch.nn.functional.scaled_dot_product_attention` on the same rotated queries and keys, with
the causal rule, sinks and mask folded into one explicit additive mask (rows that see no key
set to zeros); the two must agree to 1e-12.
"""

import argparse
import json
import math
import os
import struct
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

try:
    import safetensors.torch as safetensors_torch
except ImportError:  # the hand-written writer below is used instead
    safetensors_torch = None


def f32(value):
    """`value` rounded to float32 and back, as the Swift config stores it."""
    return struct.unpack("<f", struct.pack("<f", value))[0]


class DesignAttention(nn.Module):
    """Multi-head self-attention with RoPE, GQA and attention sinks, per DESIGN.md §3."""

    def __init__(self, d_model, n_heads, use_rope=True, rope_theta=10000.0, rope_scaling=None,
                 rope_pairing="halfSplit", num_sinks=0, kv_heads=None, is_causal=True):
        super().__init__()
        assert d_model % n_heads == 0
        self.d_model, self.n_heads = d_model, n_heads
        self.head_dim = d_model // n_heads
        self.kv_heads = kv_heads or n_heads
        assert n_heads % self.kv_heads == 0
        self.use_rope, self.rope_pairing = use_rope, rope_pairing
        self.rope_theta, self.rope_scaling = rope_theta, rope_scaling
        self.num_sinks, self.is_causal = num_sinks, is_causal
        kv_width = self.kv_heads * self.head_dim
        self.q_proj = nn.Linear(d_model, d_model, bias=False)
        self.k_proj = nn.Linear(d_model, kv_width, bias=False)
        self.v_proj = nn.Linear(d_model, kv_width, bias=False)
        self.out_proj = nn.Linear(d_model, d_model, bias=False)
        if num_sinks:
            self.sink_states = nn.Parameter(torch.randn(num_sinks, d_model) * 0.02)

    def rotate(self, x, positions):
        """RoPE on x [B, heads, L, D] at `positions` [L]: a true rotation of each pair."""
        if not self.use_rope:
            return x
        d, half = self.head_dim, self.head_dim // 2
        scaling = f32(self.rope_scaling) if self.rope_scaling is not None else 1.0
        i = torch.arange(half, dtype=torch.float64)
        inv_freq = torch.pow(torch.tensor(f32(self.rope_theta), dtype=torch.float64), -2.0 * i / d) * scaling
        angle = positions.to(torch.float64)[:, None] * inv_freq[None, :]  # [L, D/2]
        cos, sin = angle.cos().to(x.dtype), angle.sin().to(x.dtype)
        if self.rope_pairing == "halfSplit":
            a, b = x[..., :half], x[..., half:]
            return torch.cat([a * cos - b * sin, a * sin + b * cos], dim=-1)
        a, b = x[..., 0::2], x[..., 1::2]
        return torch.stack([a * cos - b * sin, a * sin + b * cos], dim=-1).flatten(-2)

    def rotated_heads(self, x):
        """Queries [B,H,N,D] and keys/values [B,H,S+N,D] (sinks first), RoPE applied."""
        bsz, n, _ = x.shape
        s, h, hkv, d = self.num_sinks, self.n_heads, self.kv_heads, self.head_dim
        q = self.q_proj(x).view(bsz, n, h, d).transpose(1, 2)
        k = self.k_proj(x).view(bsz, n, hkv, d).transpose(1, 2)
        v = self.v_proj(x).view(bsz, n, hkv, d).transpose(1, 2)
        token_positions = torch.arange(s, s + n)
        q, k = self.rotate(q, token_positions), self.rotate(k, token_positions)
        if s:
            sk = self.k_proj(self.sink_states).view(s, hkv, d).transpose(0, 1)[None]
            sv = self.v_proj(self.sink_states).view(s, hkv, d).transpose(0, 1)[None]
            sk = self.rotate(sk, torch.arange(s))
            k = torch.cat([sk.expand(bsz, -1, -1, -1), k], dim=2)
            v = torch.cat([sv.expand(bsz, -1, -1, -1), v], dim=2)
        group = h // hkv
        return q, k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)

    def additive_bias(self, bsz, n, mask, dtype):
        """[B, H, N, S+N]: the causal rule over token keys plus the user's mask."""
        s = self.num_sinks
        bias = torch.zeros(bsz, self.n_heads, n, s + n, dtype=dtype)
        if self.is_causal:
            hidden = torch.triu(torch.ones(n, n, dtype=torch.bool), diagonal=1)
            bias[..., s:] = bias[..., s:].masked_fill(hidden, float("-inf"))
        if mask is not None:
            m = mask.to(dtype)
            if m.dim() == 2:
                m = m[None, None]
            if m.shape[-1] == n and s:  # token-width: sink columns get 0
                bias[..., s:] = bias[..., s:] + m
            else:
                bias = bias + m
        return bias

    def forward(self, x, mask=None):
        bsz, n, _ = x.shape
        q, k, v = self.rotated_heads(x)
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.head_dim)
        scores = scores + self.additive_bias(bsz, n, mask, x.dtype)
        row_max = scores.amax(dim=-1, keepdim=True)
        sees_nothing = torch.isneginf(row_max)
        weights = torch.exp(scores - torch.where(sees_nothing, torch.zeros_like(row_max), row_max))
        weights = weights / weights.sum(dim=-1, keepdim=True).clamp_min(torch.finfo(x.dtype).tiny)
        weights = torch.where(sees_nothing, torch.zeros_like(weights), weights)  # zeros, not NaN
        context = (weights @ v).transpose(1, 2).reshape(bsz, n, self.d_model)
        return self.out_proj(context)

    def forward_with_sdpa(self, x, mask=None):
        """The same output through PyTorch's own attention, and which (b, h, i) see nothing."""
        bsz, n, _ = x.shape
        q, k, v = self.rotated_heads(x)
        bias = self.additive_bias(bsz, n, mask, x.dtype)
        context = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        # Rows that see no key: NaN in older PyTorch, zeros in newer; zeros by DESIGN.md.
        sees_nothing = torch.isneginf(bias.amax(dim=-1, keepdim=True))
        context = torch.where(sees_nothing, torch.zeros_like(context), context)
        return self.out_proj(context.transpose(1, 2).reshape(bsz, n, self.d_model)), sees_nothing


def write_safetensors(path, tensors, metadata):
    """The safetensors format: u64 LE header length, JSON header, then the tensors' bytes."""
    for name in tensors:
        tensors[name] = tensors[name].contiguous()
    if safetensors_torch is not None:
        safetensors_torch.save_file(tensors, path, metadata=metadata)
        return
    names = sorted(tensors)
    header, offset, chunks = {"__metadata__": metadata}, 0, []
    dtypes = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16"}
    for name in names:
        t = tensors[name]
        data = bytes(t.view(torch.uint8).flatten().tolist()) if t.numel() else b""
        header[name] = {"dtype": dtypes[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        chunks.append(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(chunks))


def padding_mask(bsz, n, lengths):
    """[B, 1, N, N]: token keys at or past each row's length hidden (-inf)."""
    m = torch.zeros(bsz, 1, n, n)
    for b, length in enumerate(lengths):
        m[b, :, :, length:] = float("-inf")
    return m


def mixed_mask(shape, generator, hidden=0.15):
    """0 mostly, finite biases in (-3, 3), and -inf for about `hidden` of the entries."""
    u = torch.rand(shape, generator=generator)
    bias = (torch.rand(shape, generator=generator) * 6 - 3)
    m = torch.where(u < 0.3, bias, torch.zeros(shape))
    return m.masked_fill(u > 1 - hidden, float("-inf"))


# name, config, batch, seq, mask kind, weight dtype, prefix, description
CASES = [
    ("mha_causal_halfsplit", dict(d_model=32, n_heads=4), 1, 7, None, "F32", "",
     "plain multi-head attention, causal, RoPE halfSplit"),
    ("mha_bidirectional_interleaved", dict(d_model=32, n_heads=4, rope_pairing="interleaved", is_causal=False),
     2, 9, None, "F32", "", "not causal, RoPE interleaved, batch 2"),
    ("gqa_causal_halfsplit", dict(d_model=64, n_heads=8, kv_heads=2), 2, 12, None, "F32", "layers.3.attn.",
     "GQA 8 query heads on 2 kv heads, causal, weights under a prefix"),
    ("mqa_bidirectional_interleaved", dict(d_model=48, n_heads=6, kv_heads=1, rope_pairing="interleaved",
                                           is_causal=False), 1, 5, None, "F32", "",
     "one kv head for 6 query heads (MQA), not causal"),
    ("sinks_causal", dict(d_model=32, n_heads=4, num_sinks=4), 2, 10, None, "F32", "model.attn.",
     "4 sinks at positions 0..<4, tokens from 4, causal"),
    ("sinks_gqa_interleaved_scaled", dict(d_model=64, n_heads=8, kv_heads=4, num_sinks=2,
                                          rope_pairing="interleaved", rope_scaling=0.25), 1, 16, None, "F32", "",
     "sinks + GQA + interleaved RoPE with ropeScaling 0.25"),
    ("rope_scaled_theta_halfsplit", dict(d_model=32, n_heads=2, rope_theta=500000.0, rope_scaling=0.5,
                                         is_causal=False), 1, 16, None, "F32", "",
     "ropeTheta 500000, ropeScaling 0.5, headDim 16, not causal"),
    ("no_rope_padding_mask", dict(d_model=32, n_heads=4, use_rope=False), 3, 8, "padding", "F32", "",
     "no RoPE, causal, [B,1,N,N] padding mask over 3 rows of different lengths"),
    ("mask_square_sinks_gqa", dict(d_model=32, n_heads=4, kv_heads=2, num_sinks=2, is_causal=False), 2, 8,
     "square", "F32", "", "[N,N] mask of biases and -inf with sinks (sinks stay visible), GQA, not causal"),
    ("mask_full_width_sinks", dict(d_model=32, n_heads=4, num_sinks=3), 2, 6, "fullWidth", "F32", "",
     "[B,1,N,S+N] mask that hides and biases sinks too; one fully hidden row gives zeros; causal"),
    ("mask_per_head_gqa", dict(d_model=64, n_heads=8, kv_heads=2, rope_pairing="interleaved"), 1, 9,
     "perHead", "F32", "", "[1,H,N,N] per-query-head mask with GQA, causal; one fully hidden row"),
    ("single_token_sinks", dict(d_model=32, n_heads=4, num_sinks=4, kv_heads=2), 2, 1, None, "F32", "",
     "one token per sequence with 4 sinks"),
    ("f16_weights_sinks", dict(d_model=32, n_heads=4, num_sinks=2, kv_heads=2), 2, 8, None, "F16", "",
     "weights stored as F16 (expected computed from the F16 values)"),
    ("bf16_weights_scaled", dict(d_model=32, n_heads=4, rope_scaling=0.25, rope_pairing="interleaved"), 1, 11,
     "square", "BF16", "encoder.layers.0.self_attn.",
     "weights stored as BF16 under a prefix, ropeScaling 0.25, [N,N] mask"),
]


def make_mask(kind, bsz, n, module, generator):
    s, h = module.num_sinks, module.n_heads
    if kind is None:
        return None
    if kind == "padding":
        return padding_mask(bsz, n, [n, n - 3, 2][:bsz])
    if kind == "square":
        return mixed_mask((n, n), generator)
    if kind == "fullWidth":
        m = mixed_mask((bsz, 1, n, s + n), generator)
        m[0, 0, 0, :] = float("-inf")  # batch row 0, query 0 sees nothing, sinks included
        return m
    if kind == "perHead":
        m = mixed_mask((1, h, n, n), generator)
        m[0, 5, 4, :] = float("-inf")  # head 5, query 4 sees nothing (no sinks here)
        return m
    raise ValueError(kind)


def config_metadata(config, weight_dtype, prefix, description):
    kv = config.get("kv_heads")
    meta = {
        "dModel": config["d_model"], "nHeads": config["n_heads"],
        "useRoPE": config.get("use_rope", True), "ropeTheta": config.get("rope_theta", 10000.0),
        "ropePairing": config.get("rope_pairing", "halfSplit"),
        "useAttentionSinks": bool(config.get("num_sinks", 0)),
        "numAttentionSinks": config.get("num_sinks", 0) or 4,
        "useGQA": kv is not None, "isCausal": config.get("is_causal", True),
        "prefix": prefix, "weightDType": weight_dtype, "description": description,
    }
    if kv is not None:
        meta["gqaGroups"] = kv
    if config.get("rope_scaling") is not None:
        meta["ropeScaling"] = config["rope_scaling"]
    return {k: (str(v).lower() if isinstance(v, bool) else str(v)) for k, v in meta.items()}


def make_case(index, name, config, bsz, n, mask_kind, weight_dtype, prefix, description, out_dir):
    torch.manual_seed(1000 + index)
    generator = torch.Generator().manual_seed(2000 + index)
    module = DesignAttention(**config)
    storage = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}[weight_dtype]
    with torch.no_grad():
        if module.num_sinks:
            # N(0, 0.02²) sinks barely move the scores; make them matter.
            module.sink_states.copy_(torch.randn(module.num_sinks, module.d_model, generator=generator))
        for p in module.parameters():
            p.copy_(p.to(storage).to(torch.float32))  # the values the file will hold
    x = torch.rand(bsz, n, module.d_model, generator=generator) * 4 - 2
    mask = make_mask(mask_kind, bsz, n, module, generator)

    reference = module.double()
    with torch.no_grad():
        x64, mask64 = x.double(), None if mask is None else mask.double()
        expected = reference(x64, mask64)
        check, sees_nothing = reference.forward_with_sdpa(x64, mask64)
    assert not torch.isnan(expected).any(), f"{name}: NaN in the output"
    assert (expected - check).abs().max() < 1e-12, f"{name}: module disagrees with SDPA"
    blind_rows = sees_nothing.squeeze(-1).all(dim=1)  # [B, N]: no head sees a key
    assert (expected[blind_rows] == 0).all(), f"{name}: a row that sees nothing must be zeros"

    # Autograd of sum(dy * y) in float64, for the backward tests.
    dy = torch.rand(bsz, n, module.d_model, generator=generator) * 2 - 1
    x_grad = x64.clone().requires_grad_(True)
    for parameter in reference.parameters():
        parameter.grad = None
    (reference(x_grad, mask64) * dy.double()).sum().backward()
    gradients = {"grad.input": x_grad.grad}
    gradients.update({"grad." + k: p.grad for k, p in reference.named_parameters()})
    assert all(torch.isfinite(g).all() for g in gradients.values()), f"{name}: non-finite gradient"

    tensors = {prefix + k: v.detach().to(torch.float32).to(storage) for k, v in module.state_dict().items()}
    tensors["input"] = x
    if mask is not None:
        tensors["mask"] = mask
    tensors["expected"] = expected.to(torch.float32)
    tensors["dy"] = dy
    tensors.update({k: g.detach().to(torch.float32) for k, g in gradients.items()})
    path = os.path.join(out_dir, f"{name}.safetensors")
    write_safetensors(path, tensors, config_metadata(config, weight_dtype, prefix, description))
    os.chmod(path, 0o644)
    scale = expected.abs().max().item()
    print(f"{name}: {os.path.getsize(path)} bytes, output scale {scale:.3g}, "
          f"{int(sees_nothing.sum())} (b, head, query) row(s) see nothing")


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=os.path.join(root, "Tests", "AttentionTests", "Fixtures"))
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.set_num_threads(1)  # deterministic reductions
    for index, case in enumerate(CASES):
        make_case(index, *case, args.out)
    total = sum(os.path.getsize(os.path.join(args.out, f)) for f in os.listdir(args.out))
    print(f"{len(CASES)} fixtures, {total} bytes in {args.out}"
          + ("" if safetensors_torch else " (hand-written safetensors)"))
    if total >= 2_000_000:
        sys.exit("fixtures must stay under 2 MB")


if __name__ == "__main__":
    main()
