#!/usr/bin/env bash
# Coverage-guided fuzzing (libFuzzer + AddressSanitizer) of the safetensors parser and the sharded
# checkpoint index parser, which read files a user brings (mapped since checkpoints may be
# many GB). Compiles Scripts/fuzz/FuzzCheckpointParsers.swift with the parser sources alone
# (swiftc -sanitize=fuzzer,address; Linux), seeds the corpus with the committed fixtures and a
# few indexes, runs for a bounded time and prints libFuzzer's final statistics.
#
#   Scripts/fuzz_checkpoints.sh [seconds]     # default 60; a crash leaves crash-* in .build/fuzz
#
# Exit status: libFuzzer's (0 when nothing was found). Not part of CI: its time is unbounded by
# nature; a crash it finds is kept as a regression test in SafeTensorsTests.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
out=.build/fuzz
mkdir -p "$out/corpus" "$out/seeds"
sources=(Sources/Attention/SafeTensors.swift Sources/Attention/SafeTensorsJSON.swift
         Sources/Attention/ShardedCheckpoint.swift Sources/Attention/AttentionError.swift
         Sources/Attention/Tensor.swift)
# (ld.gold warns about every ASan helper symbol; the log keeps that noise out of sight.)
swiftc -sanitize=fuzzer,address -parse-as-library -O -g -module-name Attention \
    "${sources[@]}" Scripts/fuzz/FuzzCheckpointParsers.swift -o "$out/fuzz-checkpoints" 2> "$out/build.log" \
    || { cat "$out/build.log" >&2; exit 1; }
cp Tests/AttentionTests/Fixtures/*.safetensors Tests/AttentionTests/Fixtures/Optimizers/*.safetensors "$out/seeds/"
printf '%s' '{"metadata": {"total_size": 8}, "weight_map": {"a.weight": "model-00001-of-00002.safetensors"}}' > "$out/seeds/index.json"
printf '%s' '{"weight_map": {}}' > "$out/seeds/empty-index.json"
cd "$out"
# libFuzzer reports the crash; Swift's own backtracer, running under ASan, would only add noise.
export SWIFT_BACKTRACE=enable=no
set +e
./fuzz-checkpoints -max_total_time="$seconds" -print_final_stats=1 -timeout=10 -rss_limit_mb=2048 \
    -max_len=65536 corpus seeds > fuzz.log 2>&1
status=$?
set -e
grep -E "^#[0-9]+[[:space:]]+(INITED|DONE)|stat::|ERROR|SUMMARY|crash-" fuzz.log || true
exit "$status"
