#!/usr/bin/env bash
# Installs what the package builds against when it is missing: OpenBLAS, LAPACKE and pkg-config
# (Debian/Ubuntu, via apt-get; sudo when not root). Sourced by test.sh and bench.sh, which call
# `install_deps`; run directly, it installs and exits.

install_deps() {
    if command -v pkg-config >/dev/null 2>&1 && pkg-config --exists openblas lapacke; then
        return 0
    fi
    echo "$(basename "$0"): installing libopenblas-dev liblapacke-dev pkg-config" >&2
    local sudo=()
    if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then
        sudo=(sudo)
    fi
    "${sudo[@]}" apt-get update
    "${sudo[@]}" apt-get install -y libopenblas-dev liblapacke-dev pkg-config
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    set -euo pipefail
    install_deps
fi
