#!/usr/bin/env bash
# Runs the XCTest suite. Installs OpenBLAS, LAPACKE and pkg-config first when they are missing
# (Debian/Ubuntu, via apt-get). Extra arguments go to `swift test`, e.g. `--filter ValidationTests`.
#
# Without arguments, the kernel-level tests (the AttentionCase matrix and fuzz cases against the
# oracle, the PyTorch fixtures, FlashAttention, DotProducts, NonFinite and CPULevel tests) then
# run again at each CPU level below the active one (`ATTENTION_CPU_LEVEL`, DESIGN.md §4), so the
# baseline and AVX2 copies of the kernels are tested on an AVX-512 or AVX2 machine too. Each
# rerun asserts it really ran at that level (ATTENTION_EXPECT_CPU_LEVEL). About 20 s a level (2 cores).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
source Scripts/install-deps.sh
install_deps
if [ "$#" -gt 0 ]; then
    exec swift test "$@"
fi
swift test

kernel_tests='^AttentionTests\.(AttentionCaseTests|PyTorchFixtureTests|FlashAttentionTests|DotProductsTests|NonFiniteTests|CPULevelTests)/'
# The library says which level is active (the CPU's, or lower when ATTENTION_CPU_LEVEL is set).
levels=$(swift test --skip-build --filter '^AttentionTests\.CPULevelTests/testActiveLevelIsTheOneTheRunExpects$' 2>&1 \
    | grep -m1 -o 'CPULevel: active [a-z0-9]*, supported [a-z0-9]*' || true)
if [ -z "$levels" ]; then
    echo "test.sh: CPULevelTests printed no 'CPULevel: active …' line" >&2
    exit 1
fi
active=${levels#CPULevel: active }
active=${active%%,*}
echo "test.sh: $levels" >&2
for level in baseline avx2 avx512; do
    [ "$level" = "$active" ] && break
    echo "== ATTENTION_CPU_LEVEL=$level swift test --skip-build --filter '$kernel_tests'" >&2
    ATTENTION_CPU_LEVEL=$level ATTENTION_EXPECT_CPU_LEVEL=$level swift test --skip-build --filter "$kernel_tests"
done
