#!/usr/bin/env bash
# Checks that the flash kernel's softmax vectorises in a plain `swift build -c release`, which
# is what an app depending on this package gets (baseline x86-64 or arm64, no -target-cpu).
# Disassembles the per-block step (`FlashAttention.accumulate`, where the SIMD exp and row
# passes are inlined), counts packed vs scalar float instructions, and fails on a call to a
# scalar exp in it. Exit 0 and a one-line summary when it vectorises.
set -euo pipefail
cd "$(dirname "$0")/.."
swift build -c release --target Attention >/dev/null
binary=$(swift build -c release --show-bin-path)/Attention.build/FlashAttention.swift.o
body=$(objdump -d --no-show-raw-insn "$binary" | awk '/FlashA0O10accumulate.*>:$/ {f=1} f && /^$/ {f=0} f')
if [ -z "$body" ]; then
    echo "check_vectorization: FlashAttention.accumulate not found in $binary" >&2
    exit 1
fi
case "$(uname -m)" in
    x86_64)
        packed=$(grep -cE '\s(mul|add|sub|max)ps\s' <<<"$body" || true)
        scalar=$(grep -cE '\s(mul|add|sub|max)ss\s' <<<"$body" || true) ;;
    *)
        packed=$(grep -cE '\sf(mul|add|sub|max|fma)\s+v[0-9]+\.4s' <<<"$body" || true)
        scalar=$(grep -cE '\sf(mul|add|sub|max|fma)\s+s[0-9]+' <<<"$body" || true) ;;
esac
if grep -qE 'call.*(expf|exp2f|\bexp\b)' <<<"$body"; then
    echo "check_vectorization: FAIL — accumulate calls a scalar exp" >&2
    exit 1
fi
echo "FlashAttention.accumulate: $packed packed and $scalar scalar float arithmetic instructions"
if [ "$packed" -lt 40 ] || [ "$packed" -le "$scalar" ]; then
    echo "check_vectorization: FAIL — the softmax passes did not vectorise" >&2
    exit 1
fi
echo "check_vectorization: ok"
