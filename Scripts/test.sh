#!/usr/bin/env bash
# Runs the XCTest suite. Installs OpenBLAS, LAPACKE and pkg-config first when they are missing
# (Debian/Ubuntu, via apt-get). Extra arguments go to `swift test`, e.g. `--filter ValidationTests`.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
source Scripts/install-deps.sh
install_deps
exec swift test "$@"
