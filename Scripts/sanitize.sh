#!/usr/bin/env bash
# Runs the whole XCTest suite under AddressSanitizer (with LeakSanitizer) and under
# ThreadSanitizer. Each build gets its own scratch folder (.build-asan, .build-tsan).
#
#   Scripts/sanitize.sh            both sanitizers
#   Scripts/sanitize.sh address    one of them
#
# Leak checking: Scripts/lsan.supp hides XCTest's own allocations, matched on the top stack
# frames only, so a leak in the library still fails the run.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source Scripts/install-deps.sh
install_deps

run() {
    local sanitizer=$1
    echo "== swift test --sanitize=$sanitizer" >&2
    swift build --build-tests --sanitize="$sanitizer" --scratch-path ".build-$sanitizer-san"
    local bin
    bin=$(swift build --sanitize="$sanitizer" --scratch-path ".build-$sanitizer-san" --show-bin-path)
    case "$sanitizer" in
        address)
            ASAN_OPTIONS=detect_leaks=1:malloc_context_size=5 \
            LSAN_OPTIONS="suppressions=$PWD/Scripts/lsan.supp" \
                "$bin/AttentionPackageTests.xctest" ;;
        thread)
            TSAN_OPTIONS=halt_on_error=1 "$bin/AttentionPackageTests.xctest" ;;
    esac
}

for sanitizer in "${@:-address thread}"; do
    for each in $sanitizer; do run "$each"; done
done
echo "sanitize: all clean" >&2
