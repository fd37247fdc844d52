#!/usr/bin/env bash
# Checks that an app can depend on this package *by version*, as apps do once it is released:
# SwiftPM applies stricter rules to version-pinned dependencies than to local, branch or revision
# ones (historically it refused any target with `unsafeFlags`; from a dependency manifest of
# `swift-tools-version: 6.2` on it accepts them, DESIGN.md §4).
#
#   bash Scripts/check_pinned_app.sh [REPO_ROOT]      # default: the repository of this script
#
# What it tests: the committed HEAD of REPO_ROOT. Uncommitted changes are not included; commit
# (or stash) first. The repository under test is only read: its HEAD is pushed into a temporary
# bare repository and tagged `0.0.0-ci.g<shortsha>` there; no tag or ref is created in
# REPO_ROOT. A scratch app package in another temporary directory depends on that bare
# repository through `.package(url: "file://…", exact: "<tag>")`, uses the `Attention`
# product, runs one forward and checks the output's shape and finiteness. It is built in release
# and debug and run in both. SwiftPM's shared cache, manifest cache and fingerprint store are
# redirected into the temporary directory, so nothing is left in ~/.swiftpm or ~/.cache.
# Works offline: the dependency's own dependencies resolve like in normal builds of this package
# (the machine's git `insteadOf` rewrite of https://github.com/ to a local mirror).
# Exits non-zero with a message naming the cause when SwiftPM refuses the package's flags or
# anything else fails. Set KEEP_PINNED_APP=1 to keep the temporary directory for inspection.
set -euo pipefail

script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="${1:-$script_dir/..}"
repo="$(git -C "$repo" rev-parse --show-toplevel)"

say() { echo "check_pinned_app: $*"; }
fail() { echo "check_pinned_app: FAILED: $*" >&2; exit 1; }

source "$script_dir/install-deps.sh"
install_deps

sha="$(git -C "$repo" rev-parse HEAD)"
short="$(git -C "$repo" rev-parse --short=10 HEAD)"
# `g` keeps the pre-release identifier alphanumeric: an all-digit short SHA with a leading zero
# would not be valid semver.
tag="0.0.0-ci.g$short"
if [[ -n "$(git -C "$repo" status --porcelain --untracked-files=no)" ]]; then
    say "note: $repo has uncommitted changes; they are NOT tested (committed HEAD $short only)"
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/pinned-app.XXXXXX")"
cleanup() {
    if [[ "${KEEP_PINNED_APP:-0}" == 1 ]]; then say "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

# The dependency: a bare repository holding only HEAD of the repo under test, as a tag. `git push`
# from the repo reads it and writes only into the new repository (a path remote has no tracking
# refs); it works from a detached HEAD (CI) and from a shallow clone.
dep="$work/Attention.git"
git init --quiet --bare "$dep"
git -C "$dep" config receive.shallowUpdate true
git -C "$repo" push --quiet "$dep" "$sha:refs/tags/$tag"
say "testing $short as $tag (file://$dep)"

# The app: depends on this package only, by exact version. The package identity is the last
# path component of the URL without `.git`, "attention".
app="$work/PinnedApp"
mkdir -p "$app/Sources/PinnedApp"
cat > "$app/Package.swift" <<EOF
// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "PinnedApp",
    dependencies: [
        .package(url: "file://$dep", exact: "$tag"),
    ],
    targets: [
        .executableTarget(
            name: "PinnedApp",
            dependencies: [.product(name: "Attention", package: "attention")]
        ),
    ]
)
EOF
cat > "$app/Sources/PinnedApp/main.swift" <<'EOF'
import Attention
#if canImport(Glibc)
import Glibc  // exit
#elseif canImport(Darwin)
import Darwin
#endif

let batch = 2, seq = 8, dModel = 64
let config = try AttentionConfig(dModel: dModel, nHeads: 4, useGQA: true, gqaGroups: 2)
let attention = try MultiHeadAttention(config: config, seed: 42)
let x = try Tensor(shape: [batch, seq, dModel],
                   scalars: (0..<batch * seq * dModel).map { _ in Float.random(in: -1...1) })
let y = try attention.forward(x)
guard y.shape == [batch, seq, dModel] else {
    print("PinnedApp: wrong output shape \(y.shape), expected \([batch, seq, dModel])")
    exit(1)
}
guard y.scalars.allSatisfy({ $0.isFinite }), y.scalars.contains(where: { $0 != 0 }) else {
    print("PinnedApp: output has non-finite values or is all zero")
    exit(1)
}
print("PinnedApp: forward OK, shape \(y.shape)")
EOF

swiftpm_options=(
    --package-path "$app"
    --scratch-path "$work/build"
    --cache-path "$work/cache"
    --security-path "$work/security"
    --manifest-cache local
)

build_and_run() {
    local configuration="$1" log="$work/build-$1.log"
    local start=$SECONDS
    if ! swift build -c "$configuration" "${swiftpm_options[@]}" >"$log" 2>&1; then
        cat "$log" >&2
        if grep -qiE "unsafe (build )?flags|is not allowed" "$log"; then
            fail "SwiftPM refuses the flags of $short when pinned by version (exact: \"$tag\"):" \
                "$(grep -iE "unsafe (build )?flags|is not allowed" "$log" | head -3)." \
                "unsafeFlags in a version-pinned dependency need 'swift-tools-version: 6.2'" \
                "or later in Package.swift (DESIGN.md §4)"
        fi
        fail "swift build -c $configuration of the pinned app failed (log above)"
    fi
    if grep -qiE "unsafe (build )?flags" "$log"; then
        cat "$log" >&2
        say "warning: SwiftPM mentions unsafe flags (log above)"
    fi
    local bin
    bin="$(swift build -c "$configuration" "${swiftpm_options[@]}" --show-bin-path)/PinnedApp"
    "$bin" || fail "the pinned app ($configuration) failed at run time"
    say "$configuration: built and ran in $((SECONDS - start)) s"
}

build_and_run release
build_and_run debug
say "OK: an app pinned to $tag (exact:) builds and runs"
