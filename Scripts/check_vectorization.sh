#!/usr/bin/env bash
# Checks that the flash kernel's softmax step and its backward step vectorise in a plain
# `swift build -c release`, which is what an app depending on this package gets. The steps live
# in the kernel modules (Sources/AttentionKernels, compiled once per CPU level, DESIGN.md §4):
# `LevelKernels.softmaxStep` with `SoftmaxStep.run`, and `LevelKernels.backwardStep` with
# `BackwardStep.run`, the SIMD exp and row passes inlined into each. Disassembles each level's
# copy of each (the largest function named for the step in that module's objects) and fails on
# a call to a scalar exp in it;
#   baseline (x86-64 SSE2, or arm64): more packed than scalar float arithmetic, at least 40;
#   AVX2 (x86-64-v3): ymm registers and fused multiply-adds (`vfmadd`), no zmm;
#   AVX-512 (x86-64-v4): zmm registers and `vfmadd`.
# Exit 0 and a one-line summary when all vectorise.
set -euo pipefail
cd "$(dirname "$0")/.."
swift build -c release --target Attention >/dev/null
bin=$(swift build -c release --show-bin-path)

# The disassembly of the largest function of step $2 (softmax or backward) in one kernel
# module's objects.
step_body() {
    local module=$1 step=$2 dump name pattern
    case $step in
        softmax) pattern='<\$s[^ ]*(LevelB0O11softmaxStep|SoftmaxStepV0A[0-9]+Kernels[A-Za-z0-9]+E3runyyF)' ;;
        backward) pattern='<\$s[^ ]*(LevelB0O12backwardStep|BackwardStepV0A[0-9]+Kernels[A-Za-z0-9]+E3runyyF)' ;;
    esac
    dump=$(objdump -d --no-show-raw-insn "$bin/$module.build"/*.o)
    name=$(awk '/^[0-9a-f]+ <.*>:$/ { name = $2; next } /:\t/ && name != "" { n[name]++ }
                END { for (f in n) print n[f], f }' <<<"$dump" \
        | grep -E "$pattern" \
        | sort -rn | awk 'NR == 1 { print $2 }')
    if [ -z "$name" ]; then
        echo "check_vectorization: no $step step found in $bin/$module.build" >&2
        return 1
    fi
    awk -v start="$name" '$2 == start { f = 1 } f && /^$/ { f = 0 } f' <<<"$dump"
}

count() { grep -cE "$1" <<<"$2" || true; }

failed=0
summary=()
fail() { echo "check_vectorization: FAIL — $1" >&2; failed=1; }

levels=(Baseline)
if [ "$(uname -m)" = x86_64 ]; then levels+=(AVX2 AVX512); fi
for step in softmax backward; do
for level in "${levels[@]}"; do
    body=$(step_body "AttentionKernels$level" $step)
    if grep -qE 'call.*(expf|exp2f|\bexp\b)' <<<"$body"; then
        fail "the $level $step step calls a scalar exp"
    fi
    case "$(uname -m)-$level" in
        x86_64-Baseline)
            packed=$(count '\s(mul|add|sub|max)ps\s' "$body")
            scalar=$(count '\s(mul|add|sub|max)ss\s' "$body")
            vex=$(count '%[yz]mm|\sv[a-z0-9]+\s' "$body")
            summary+=("$step baseline $packed packed / $scalar scalar float ops")
            if [ "$packed" -lt 40 ] || [ "$packed" -le "$scalar" ]; then fail "the baseline $step passes did not vectorise"; fi
            if [ "$vex" -gt 0 ]; then fail "the baseline $step step holds $vex VEX instructions"; fi ;;
        x86_64-AVX2 | x86_64-AVX512)
            ymm=$(count '%ymm' "$body")
            zmm=$(count '%zmm' "$body")
            fma=$(count '\svfn?m(add|sub)[0-9]+[ps]s\s' "$body")
            summary+=("$step $level $ymm on ymm, $zmm on zmm, $fma fma")
            if [ "$fma" -lt 5 ]; then fail "the $level $step step has $fma fused multiply-adds (the exp polynomial alone has 5)"; fi
            if [ "$level" = AVX2 ] && { [ "$ymm" -lt 40 ] || [ "$zmm" -gt 0 ]; }; then
                fail "the AVX2 $step step is not on ymm registers ($ymm ymm, $zmm zmm)"
            fi
            if [ "$level" = AVX512 ] && [ "$zmm" -lt 20 ]; then fail "the AVX-512 $step step is not on zmm registers ($zmm)"; fi ;;
        *)
            packed=$(count '\sf(mul|add|sub|max|fma)\s+v[0-9]+\.4s' "$body")
            scalar=$(count '\sf(mul|add|sub|max|fma)\s+s[0-9]+' "$body")
            summary+=("$step baseline $packed packed / $scalar scalar float ops")
            if [ "$packed" -lt 40 ] || [ "$packed" -le "$scalar" ]; then fail "the baseline $step passes did not vectorise"; fi ;;
    esac
done
done
echo "step instructions: $(IFS=';'; echo "${summary[*]}" | sed 's/;/; /g')"
if [ "$failed" -ne 0 ]; then exit 1; fi
echo "check_vectorization: ok"
