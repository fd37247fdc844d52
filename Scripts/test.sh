#!/usr/bin/env bash
# Runs the XCTest suite. Installs OpenBLAS, LAPACKE and pkg-config first when they are missing
# (Debian/Ubuntu, via apt-get). Extra arguments go to `swift test`, e.g. `--filter ValidationTests`.
set -euo pipefail

if ! command -v pkg-config >/dev/null 2>&1 || ! pkg-config --exists openblas lapacke; then
    echo "test.sh: installing libopenblas-dev liblapacke-dev pkg-config" >&2
    SUDO=()
    if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then
        SUDO=(sudo)
    fi
    "${SUDO[@]}" apt-get update
    "${SUDO[@]}" apt-get install -y libopenblas-dev liblapacke-dev pkg-config
fi

cd "$(dirname "${BASH_SOURCE[0]}")/.."
exec swift test "$@"
