#!/usr/bin/env bash
# Builds attention-bench in release mode and runs it: with no arguments, the default workload
# (dModel 768, 12 heads, 4 KV heads, RoPE, 4 sinks, causal, seq 256 ... 4096, threads 1 ... all
# processors, flash and reference; about a minute on 2 cores). Installs OpenBLAS, LAPACKE and
# pkg-config first when they are missing (Debian/Ubuntu, via apt-get).
#
# Arguments go to attention-bench (`Scripts/bench.sh --help` lists them), e.g.
#   Scripts/bench.sh --seq 2048 --threads 1,2 --format csv --output bench.csv
# except one, which must come first and goes to the compiler:
#   Scripts/bench.sh --native-cpu ...   builds with -Xswiftc -target-cpu -Xswiftc native,
#                                       to see what code generation for this CPU adds beyond
#                                       the kernels' CPU levels (which every app gets).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
source Scripts/install-deps.sh
install_deps

build=(swift build -c release --product attention-bench)
if [ "${1:-}" = "--native-cpu" ]; then
    shift
    build+=(--scratch-path .build-native -Xswiftc -target-cpu -Xswiftc native)
fi
echo "bench.sh: ${build[*]}" >&2
"${build[@]}" >&2
exec "$("${build[@]}" --show-bin-path)/attention-bench" "$@"
