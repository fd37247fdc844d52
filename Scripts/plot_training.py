#!/usr/bin/env python3
"""Draws attention-train's loss curve as a PNG.

    .build/release/attention-train --csv loss.csv
    python3 Scripts/plot_training.py loss.csv -o loss.png

Reads the CSV attention-train writes (step,train_loss,eval_loss,grad_norm,tokens_per_second,
seconds; row 0 holds the initial evaluation loss) and plots, on a log scale against the step,
the training loss of every step (dropout on, thin line) and the evaluation loss on the fixed
probe batch (dropout off, markers), with the factor the evaluation loss fell by in the title.
Needs matplotlib (`pip install matplotlib`), in a virtual environment outside the repository;
nothing in Scripts/test.sh or CI uses it.
"""

import argparse
import csv
import os
import sys


def read_curve(path):
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError as error:
        sys.exit(f"plot_training.py: cannot read {path}: {error.strerror}")
    expected = ["step", "train_loss", "eval_loss", "grad_norm", "tokens_per_second", "seconds"]
    if not rows or list(rows[0].keys()) != expected:
        sys.exit(f"plot_training.py: {path} is not attention-train CSV output (columns {','.join(expected)})")
    train = [(int(r["step"]), float(r["train_loss"])) for r in rows if r["train_loss"]]
    evaluation = [(int(r["step"]), float(r["eval_loss"])) for r in rows if r["eval_loss"]]
    if not evaluation:
        sys.exit(f"plot_training.py: {path} has no evaluation loss")
    return train, evaluation


def main(argv):
    parser = argparse.ArgumentParser(description="Plots attention-train's loss curve.")
    parser.add_argument("csv", help="attention-train --csv output")
    parser.add_argument("-o", "--output", help="PNG to write (default: the CSV's name with .png)")
    args = parser.parse_args(argv)
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        sys.exit("plot_training.py: needs matplotlib (pip install matplotlib)")
    train, evaluation = read_curve(args.csv)
    output = args.output or os.path.splitext(args.csv)[0] + ".png"

    figure, axes = plt.subplots(figsize=(7, 4.2), dpi=120)
    if train:
        axes.plot(*zip(*train), linewidth=0.8, alpha=0.6, label="training loss (dropout on)")
    axes.plot(*zip(*evaluation), marker="o", markersize=3, label="evaluation loss (probe batch, dropout off)")
    axes.set_yscale("log")
    axes.set_xlabel("step")
    axes.set_ylabel("mean squared error against the teacher")
    fell = evaluation[0][1] / evaluation[-1][1]
    axes.set_title(f"attention-train: student vs teacher, evaluation loss fell {fell:.0f}×")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(output)
    print(f"plot_training.py: wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
