"""The release attention-bench binary the comparison scripts run (compare_peers.py,
compare_levels.py, profile_levels.py): built with SwiftPM from this checkout."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def build_release_bench(name):
    """Builds `attention-bench` in release mode (SwiftPM's output to stderr, prefixed by `name`)
    and returns its path."""
    command = ["swift", "build", "-c", "release", "--product", "attention-bench"]
    print(f"{name}: " + " ".join(command), file=sys.stderr)
    subprocess.run(command, cwd=ROOT, check=True, stdout=sys.stderr)
    bin_path = subprocess.run(command + ["--show-bin-path"], cwd=ROOT, check=True,
                              capture_output=True, text=True).stdout.strip()
    return os.path.join(bin_path, "attention-bench")
