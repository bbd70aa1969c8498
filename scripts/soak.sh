#!/usr/bin/env bash
# The soak run: the whole pipeline for minutes under faults against the real services of the
# test environment, then every message reconciled from Kafka to the fact table
# (`fintech-bench soak`; its module documentation lists the faults and the checks).
#
#   scripts/soak.sh                    10 minutes
#   scripts/soak.sh --minutes 30 --rate 2000 --kill-every-secs 20
#
# It is a command, not a test: it runs for as long as asked and exits 1 when a check fails,
# with the workers' logs kept. The figures go to $FINTECH_CACHE/soak/<timestamp>.json.
# The test environment is started only when it is not running, and then stopped again.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export FINTECH_CACHE="${FINTECH_CACHE:-$HOME/.cache/fintech}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$FINTECH_CACHE/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

log() { printf '[soak] %s\n' "$*" >&2; }
die() { printf '[soak] error: %s\n' "$*" >&2; exit 1; }

# libfaketime skews the clock of one producer.
FAKETIME_LIB="${FINTECH_FAKETIME_LIB:-/usr/lib/$(uname -m)-linux-gnu/faketime/libfaketime.so.1}"
if [[ ! -f $FAKETIME_LIB ]]; then
  [[ $(id -u) -eq 0 ]] || die "libfaketime is missing; install Debian's faketime package"
  log "installing libfaketime (Debian's faketime package)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq faketime >/dev/null
fi
export FINTECH_FAKETIME_LIB="$FAKETIME_LIB"

log "building the release binaries into $CARGO_TARGET_DIR"
cargo build --release --locked -p fintech-workers -p fintech-bench

status=$(scripts/testenv.sh status 2>/dev/null || true)
if [[ -z $status ]]; then
  log "the test environment is not running; starting it (and stopping it at the end)"
  trap 'scripts/testenv.sh down' EXIT
  scripts/testenv.sh up
elif grep -q ' stopped$' <<<"$status"; then
  die "the test environment is partly down:"$'\n'"$status"
else
  log "using the running test environment"
fi
set -a
# shellcheck disable=SC1090
. "$(scripts/testenv.sh env)"
set +a

OUT_DIR="$FINTECH_CACHE/soak"
mkdir -p "$OUT_DIR"
OUT="$OUT_DIR/$(date -u +%Y%m%dT%H%M%SZ).json"
"$CARGO_TARGET_DIR/release/fintech-bench" --log-format text --json "$OUT" soak \
  --bootstrap-servers "$KAFKA_BOOTSTRAP_SERVERS" --database-url "$DATABASE_URL" \
  --lake-url "s3://${FINTECH_TEST_BUCKET:-fintech-test}/soak" "$@"
log "figures: $OUT"
