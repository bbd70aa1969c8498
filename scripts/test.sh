#!/usr/bin/env bash
# The one test command. It checks formatting and lints, starts the real services of the
# test environment (scripts/testenv.sh), runs every test tier against them, and stops the
# services again, also when a test fails.
#
# Everything it builds is cached outside the clone, under $FINTECH_CACHE
# (default ~/.cache/fintech), so a second run only recompiles what changed.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export FINTECH_CACHE="${FINTECH_CACHE:-$HOME/.cache/fintech}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$FINTECH_CACHE/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

step() {
  local label=$1 start
  shift
  start=$(date +%s)
  echo "==> $label"
  "$@"
  echo "==> $label: $(($(date +%s) - start)) s"
}

# Each change of a crate links new test binaries (about 0.5 GB each) beside the old ones,
# and cargo never removes those; keeping the newest of each name keeps the cache from
# filling the disk. A binary removed by mistake is only linked again by the next build.
prune_old_test_binaries() {
  local deps="$CARGO_TARGET_DIR/debug/deps"
  [[ -d $deps ]] || return 0
  find "$deps" -maxdepth 1 -type f -executable -regextype posix-extended \
    -regex '.*/[A-Za-z0-9_-]+-[0-9a-f]{16}' -printf '%T@ %p\n' |
    sort -rn |
    awk '{ name = $2; sub(/-[0-9a-f]+$/, "", name); if (seen[name]++) print $2 }' |
    xargs -r rm -f
}

command -v cargo >/dev/null || { echo "cargo is required; install Rust with rustup" >&2; exit 1; }
rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt clippy

step "format check" cargo fmt --all -- --check
step "lint" cargo clippy --workspace --all-targets --locked -- -D warnings
# Build the tests before starting the services, so the services are not left idle.
step "build tests" cargo test --workspace --locked --no-run
step "prune old test binaries" prune_old_test_binaries

trap 'scripts/testenv.sh down' EXIT
step "test environment" scripts/testenv.sh up
set -a
# shellcheck disable=SC1090
. "$(scripts/testenv.sh env)"
set +a

step "tests (unit, embedded and against the real services)" \
  cargo test --workspace --locked -- --include-ignored
