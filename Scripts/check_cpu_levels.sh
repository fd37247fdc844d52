#!/usr/bin/env bash
# Checks that AVX code stays inside the AVX2 and AVX-512 kernel modules (x86-64 only).
#
# Sources/AttentionKernels is compiled at three levels (DESIGN.md §4); the baseline path must
# not reach a single VEX- or EVEX-encoded instruction, or a CPU without AVX dies of SIGILL. Two
# ways that could happen, each checked here in a release build (what an app gets) and in the
# debug test build:
#
#   1. Linked binary (attention-bench, AttentionPackageTests.xctest): every function that holds
#      a VEX/EVEX instruction (a `v…` mnemonic, a ymm/zmm register, an AVX-512 mask register
#      k0–k7) must belong to AttentionKernelsAVX2 or AttentionKernelsAVX512: its demangled name
#      names that module, as a declaration of it or as an extension in it (`(extension in
#      AttentionKernelsAVX512):AttentionKernelInterface.SoftmaxStep.run()`).
#   2. Object files: a weak symbol (nm W: Swift's shared linkage, e.g. a generic specialization
#      `…Tg5` or a `Tf4` signature specialization; weak hidden) defined by more than one module
#      is kept once by the linker, whichever copy comes first. If any copy holds VEX code, the
#      kept one may be the AVX copy, called from the baseline path. That fails too, whatever
#      the linker happened to keep in this build.
#
# OpenBLAS, libc, libm and the Swift runtime are shared libraries, not in these binaries (they
# choose their own code from cpuid). Exit 0 and a one-line summary when clean.
#
#   Scripts/check_cpu_levels.sh            release and debug
#   Scripts/check_cpu_levels.sh release    one configuration
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [ "$(uname -m)" != x86_64 ]; then
    echo "check_cpu_levels: $(uname -m) builds the baseline only; nothing to check"
    exit 0
fi
source Scripts/install-deps.sh
install_deps

upper='AttentionKernelsAVX(2|512)\b'
tab=$'\t'

# `objdump -d` on stdin → "symbol<TAB>count" for every function holding VEX/EVEX instructions.
vex_functions() {
    awk -F'\t' '
        /^[0-9a-f]+ <.*>:$/ { sub(/^[0-9a-f]+ </, ""); sub(/>:$/, ""); name = $0; next }
        NF >= 2 && name != "" {
            split($2, words, " "); op = words[1]
            if ((op ~ /^v/ && op !~ /^(verr|verw|vm[a-z]+)$/) || $2 ~ /%[yz]mm[0-9]|%k[0-7]([^0-9]|$)/)
                count[name]++
        }
        END { for (f in count) printf "%s\t%d\n", f, count[f] }
    '
}

# "name<TAB>…" lines → the same lines whose demangled name does not name an upper-level module.
outside_upper_modules() {
    local lines
    lines=$(cat)
    [ -n "$lines" ] || return 0
    paste <(cut -f1 <<<"$lines" | swift demangle --compact) <(cat <<<"$lines") \
        | grep -vE "^[^$tab]*$upper" | cut -f2- || true
}

failures=0
checked=()

check_binary() {
    local binary=$1
    local found outside
    found=$(objdump -d --no-show-raw-insn "$binary" | vex_functions)
    outside=$(outside_upper_modules <<<"$found")
    if [ -n "$outside" ]; then
        echo "check_cpu_levels: FAIL — VEX/EVEX code outside the AVX2/AVX-512 modules in $binary:" >&2
        swift demangle <<<"$outside" | sed 's/^/    /' >&2
        failures=$((failures + 1))
    fi
    checked+=("$(basename "$binary"): $(grep -c . <<<"$found" || true) functions with VEX, all in upper modules")
}

check_objects() {
    local bin=$1
    local table shared symbol modules object vex offenders=0
    # "module symbol" for every weak function symbol any module of the package or its
    # dependencies defines.
    table=$(for object in "$bin"/*.build/*.o; do
        module=$(basename "$(dirname "$object")" .build)
        nm --defined-only "$object" 2>/dev/null | awk -v m="$module" '$2 == "W" || $2 == "u" { print m, $3 }'
    done | sort -u)
    shared=$(awk '{ n[$2]++ } END { for (s in n) if (n[s] > 1) print s }' <<<"$table" | sort)
    # VEX-holding functions of each upper-level module's objects.
    vex=$(for object in "$bin"/AttentionKernelsAVX2.build/*.o "$bin"/AttentionKernelsAVX512.build/*.o; do
        objdump -d --no-show-raw-insn "$object" | vex_functions | cut -f1
    done | sort -u)
    while read -r symbol; do
        [ -n "$symbol" ] || continue
        modules=$(awk -v s="$symbol" '$2 == s { printf "%s ", $1 }' <<<"$table")
        if grep -qxF -- "$symbol" <<<"$vex"; then
            echo "check_cpu_levels: FAIL — weak $(swift demangle --compact <<<"$symbol")" >&2
            echo "    ($symbol) holds VEX code and is defined in: $modules; the linker keeps one copy" >&2
            offenders=$((offenders + 1))
        fi
    done <<<"$shared"
    if [ "$offenders" -gt 0 ]; then failures=$((failures + 1)); fi
    checked+=("$(basename "$bin") objects: $(grep -c . <<<"$shared" || true) weak symbols shared between modules, none with VEX code")
}

for configuration in "${@:-release debug}"; do
    for each in $configuration; do
        echo "== swift build -c $each" >&2
        case "$each" in
            release) swift build -c release --product attention-bench >/dev/null ;;
            debug) swift build --build-tests >/dev/null ;;
            *) echo "check_cpu_levels: unknown configuration $each" >&2; exit 2 ;;
        esac
        bin=$(swift build -c "$each" --show-bin-path)
        check_objects "$bin"
        for binary in "$bin/attention-bench" "$bin/AttentionPackageTests.xctest"; do
            [ -f "$binary" ] && check_binary "$binary"
        done
    done
done
if [ "$failures" -gt 0 ]; then
    exit 1
fi
echo "check_cpu_levels: ok — $(IFS=';'; echo "${checked[*]}" | sed 's/;/; /g')"
