#!/usr/bin/env python3
"""Writes the optimizer fixtures: five steps of torch.optim.SGD / torch.optim.AdamW on a small
attention layer's parameters, and one torch.nn.utils.clip_grad_norm_.

    python3 Scripts/make_optimizer_fixtures.py    # writes Tests/AttentionTests/Fixtures/Optimizers/*.safetensors

Needs `torch` (the CPU build is enough); never run by Scripts/test.sh (the fixtures are
committed). Each file is one optimizer configuration:

  <param>                 the parameters before the first step, float32, named as the layer's
                          state dict (q_proj.weight [16, 16], k_proj.weight and v_proj.weight
                          [8, 16], out_proj.weight [16, 16], sink_states [2, 16])
  step<t>.grad.<param>    the gradient handed to step t (t = 0..4), float32, U(-1, 1) times a
                          per-parameter scale (1, 0.1, 0.01, 1, 0.5) so the parameters differ
                          in magnitude; step 2's sink gradient is zero (a frozen-looking step)
  step<t>.<param>         the parameters after step t
  __metadata__            optimizer ("sgd" or "adamw") and its hyperparameters as PyTorch took
                          them: lr, momentum, dampening, weight_decay, nesterov; or lr, beta1,
                          beta2, eps, weight_decay

clip_grad_norm.safetensors holds step0's gradients of sgd_momentum.safetensors, max_norm in the
metadata, and what clip_grad_norm_ made of them: clipped.<param> and total_norm [1].

Gradients are given, not computed, so the fixtures test the optimizers alone.
"""

import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_fixtures import write_safetensors  # noqa: E402

SHAPES = {"q_proj.weight": [16, 16], "k_proj.weight": [8, 16], "v_proj.weight": [8, 16],
          "out_proj.weight": [16, 16], "sink_states": [2, 16]}
SCALES = {"q_proj.weight": 1.0, "k_proj.weight": 0.1, "v_proj.weight": 0.01, "out_proj.weight": 1.0,
          "sink_states": 0.5}
STEPS = 5

CONFIGS = [
    ("sgd_plain", "sgd", dict(lr=0.1)),
    ("sgd_momentum", "sgd", dict(lr=0.05, momentum=0.9, dampening=0.1, weight_decay=0.01)),
    ("sgd_nesterov", "sgd", dict(lr=0.05, momentum=0.8, weight_decay=0.02, nesterov=True)),
    ("adamw_defaults", "adamw", dict()),
    ("adamw_custom", "adamw", dict(lr=0.01, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.1)),
]


def uniform(generator, shape, scale):
    return ((torch.rand(shape, generator=generator, dtype=torch.float64) * 2 - 1) * scale).float()


def make(name, kind, options, out_dir):
    generator = torch.Generator().manual_seed(1234)
    params = {key: torch.nn.Parameter(uniform(generator, shape, 1.0)) for key, shape in SHAPES.items()}
    tensors = {key: p.detach().clone() for key, p in params.items()}
    optimizer = (torch.optim.SGD if kind == "sgd" else torch.optim.AdamW)(params.values(), **options)
    for t in range(STEPS):
        for key, p in params.items():
            grad = uniform(generator, SHAPES[key], SCALES[key])
            if t == 2 and key == "sink_states":
                grad.zero_()
            p.grad = grad
            tensors[f"step{t}.grad.{key}"] = grad.clone()
        optimizer.step()
        for key, p in params.items():
            tensors[f"step{t}.{key}"] = p.detach().clone()
    group = optimizer.param_groups[0]
    if kind == "sgd":
        keys = ["lr", "momentum", "dampening", "weight_decay", "nesterov"]
        metadata = {key: repr(group[key]) for key in keys}
    else:
        metadata = {"lr": repr(group["lr"]), "beta1": repr(group["betas"][0]), "beta2": repr(group["betas"][1]),
                    "eps": repr(group["eps"]), "weight_decay": repr(group["weight_decay"])}
    metadata["optimizer"] = kind
    metadata["torch"] = torch.__version__
    write_safetensors(os.path.join(out_dir, f"{name}.safetensors"), tensors, metadata)
    return tensors


def make_clip(source, out_dir, max_norm=2.5):
    params = []
    tensors = {}
    for key in SHAPES:
        p = torch.nn.Parameter(torch.zeros(SHAPES[key]))
        p.grad = source[f"step0.grad.{key}"].clone()
        tensors[f"grad.{key}"] = p.grad.clone()
        params.append((key, p))
    total = torch.nn.utils.clip_grad_norm_([p for _, p in params], max_norm)
    for key, p in params:
        tensors[f"clipped.{key}"] = p.grad.clone()
    tensors["total_norm"] = total.reshape(1).float()
    write_safetensors(os.path.join(out_dir, "clip_grad_norm.safetensors"), tensors,
                      {"max_norm": repr(max_norm), "torch": torch.__version__})


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out_dir = os.path.join(root, "Tests", "AttentionTests", "Fixtures", "Optimizers")
    os.makedirs(out_dir, exist_ok=True)
    torch.set_num_threads(1)
    made = {name: make(name, kind, options, out_dir) for name, kind, options in CONFIGS}
    make_clip(made["sgd_momentum"], out_dir)
    total = sum(os.path.getsize(os.path.join(out_dir, f)) for f in os.listdir(out_dir))
    print(f"{len(CONFIGS) + 1} optimizer fixtures, {total} bytes in {out_dir}")


if __name__ == "__main__":
    main()
