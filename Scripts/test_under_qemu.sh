#!/usr/bin/env bash
# Runs the kernel-level tests on an emulated CPU without AVX (x86-64 only): qemu-user's
# `-cpu Nehalem` (SSE4.2, no AVX, no FMA) runs the host's own debug test binary, with the host's
# dynamic loader, Swift runtime and OpenBLAS (its RUNPATH finds /opt/swift's libraries).
#
# Proves on this machine what a CPU without AVX would show (DESIGN.md §4): cpuid reports no
# AVX, so `CPULevel.active` is `baseline` even with `ATTENTION_CPU_LEVEL=avx2` asked
# (testActiveLevelIsTheOneTheRunExpects), and nothing these tests execute — the kernels, the
# library, the Swift runtime, OpenBLAS, which pick their code from cpuid too — is VEX-encoded:
# qemu raises SIGILL on such an instruction, and a planted `vxorps` checks that first, so the
# run cannot pass vacuously. Installs Debian's qemu-user when `qemu-x86_64` is missing. TCG is
# 3–10x slower than the host: about 1.5 minutes on 2 cores once the tests are built.
#
#   Scripts/test_under_qemu.sh                 the kernel-level classes
#   Scripts/test_under_qemu.sh FILTER          an XCTest filter instead, e.g. AttentionTests.FlashAttentionTests
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [ "$(uname -m)" != x86_64 ]; then
    echo "test_under_qemu: $(uname -m) has no x86-64 levels; nothing to test"
    exit 0
fi
source Scripts/install-deps.sh
install_deps
if ! command -v qemu-x86_64 >/dev/null 2>&1; then
    echo "test_under_qemu: installing qemu-user" >&2
    sudo=()
    if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then sudo=(sudo); fi
    "${sudo[@]}" apt-get update
    "${sudo[@]}" apt-get install -y qemu-user
fi

cpu=Nehalem
# The kernel-level classes, less AttentionCase's shape matrix (about 4 minutes alone under TCG;
# it varies head widths, blocks and worker counts, which Scripts/test.sh covers at every level
# the host has). The semantic matrix and the 1,000 fuzz cases stay.
tests=(CPULevelTests DotProductsTests FlashAttentionTests NonFiniteTests PyTorchFixtureTests
       AttentionCaseTests/testKernelsMatchOracleOverTheSemanticMatrix
       AttentionCaseTests/testThousandRandomCasesMatchTheOracle)
filter=${1:-$(printf 'AttentionTests.%s,' "${tests[@]}" | sed 's/,$//')}
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

# The control: the emulated CPU must refuse AVX, or a clean run below would prove nothing.
clang=$(dirname "$(command -v swift)")/clang
if [ -x "$clang" ]; then
    printf 'int main(void) { __asm__ volatile("vxorps %%ymm0, %%ymm0, %%ymm0"); return 0; }\n' >"$scratch/vex.c"
    "$clang" -O0 "$scratch/vex.c" -o "$scratch/vex"
    status=0
    { qemu-x86_64 -cpu "$cpu" "$scratch/vex"; } 2>/dev/null || status=$?
    if [ "$status" -ne 132 ]; then
        echo "test_under_qemu: FAIL — qemu -cpu $cpu ran an AVX instruction (exit $status, not SIGILL)" >&2
        exit 1
    fi
    echo "test_under_qemu: control ok — qemu -cpu $cpu raises SIGILL on vxorps %ymm0" >&2
else
    echo "test_under_qemu: no clang beside swift; skipping the SIGILL control" >&2
fi

swift build --build-tests
binary=$(swift build --show-bin-path)/AttentionPackageTests.xctest

# Asking for AVX2 on a CPU without it must still give the baseline (testActiveLevelIsTheOneTheRunExpects).
echo "== qemu-x86_64 -cpu $cpu, ATTENTION_CPU_LEVEL=avx2: $filter" >&2
status=0
ATTENTION_CPU_LEVEL=avx2 ATTENTION_EXPECT_CPU_LEVEL=baseline \
    qemu-x86_64 -cpu "$cpu" "$binary" "$filter" >"$scratch/log" 2>&1 || status=$?
grep -E "error:|Executed .* tests*, with" "$scratch/log" | tail -20 >&2 || true
if [ "$status" -gt 128 ]; then
    echo "test_under_qemu: FAIL — the test binary died of signal $((status - 128)) ($(kill -l $((status - 128))))" >&2
    exit 1
elif [ "$status" -ne 0 ]; then
    echo "test_under_qemu: FAIL — tests failed under -cpu $cpu (exit $status)" >&2
    exit 1
fi
levels=$(grep -m1 -o 'CPULevel: active [a-z0-9]*, supported [a-z0-9]*' "$scratch/log" || true)
if [ -z "$levels" ] && [ "$#" -gt 0 ]; then
    levels="CPULevelTests not in the filter"
elif [ "$levels" != "CPULevel: active baseline, supported baseline" ]; then
    echo "test_under_qemu: FAIL — expected the baseline level under -cpu $cpu, got '${levels:-no CPULevel line}'" >&2
    exit 1
fi
echo "test_under_qemu: ok — $(grep -o 'Executed [0-9]* tests*, with [0-9]* failures*' "$scratch/log" | tail -1) under qemu -cpu $cpu, no SIGILL; $levels (ATTENTION_CPU_LEVEL=avx2 asked)"
