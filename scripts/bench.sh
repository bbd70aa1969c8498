#!/usr/bin/env bash
# Benchmarks of every stage (`fintech-bench <stage>`), each in a process of its own, against
# the real services of the test environment. Prints each stage's summary and a table, and
# writes every figure with the machine they ran on to one JSON file:
#
#   scripts/bench.sh                  every stage
#   scripts/bench.sh load transform   only these (generate bronze stream stream-pair load
#                                     transform quickstart operator)
#
# Stages the benchmark issue measures on one core run pinned to core $FINTECH_BENCH_CORE
# (default 1) with taskset; the services themselves are not pinned. `stream-pair` is the
# stream stage with two streamers in one consumer group, on both cores, over 4 partitions. The test environment is
# started only when it is not running, and then stopped again at the end. Results go to
# $FINTECH_CACHE/bench/<timestamp>.json, with each stage's log and summary beside it.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export FINTECH_CACHE="${FINTECH_CACHE:-$HOME/.cache/fintech}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$FINTECH_CACHE/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
CORE="${FINTECH_BENCH_CORE:-1}"
ALL_STAGES=(generate bronze stream stream-pair load transform quickstart operator)

log() { printf '[bench] %s\n' "$*" >&2; }
die() { printf '[bench] error: %s\n' "$*" >&2; exit 1; }

stages=("$@")
((${#stages[@]})) || stages=("${ALL_STAGES[@]}")
for stage in "${stages[@]}"; do
  [[ " ${ALL_STAGES[*]} " == *" $stage "* ]] || die "unknown stage $stage; choose from: ${ALL_STAGES[*]}"
done
command -v python3 >/dev/null || die "python3 is required to collect the figures"
command -v taskset >/dev/null || die "taskset (util-linux) is required to pin stages to one core"
(( CORE < $(nproc) )) || die "FINTECH_BENCH_CORE=$CORE but this machine has $(nproc) cores"

needs_services=0
for stage in "${stages[@]}"; do
  case $stage in stream | stream-pair | load | transform | operator) needs_services=1 ;; esac
done

log "building the release binary into $CARGO_TARGET_DIR"
# fintech-bench runs the fintech binary beside it for the commands it measures.
cargo build --release --locked -p fintech-workers -p fintech-bench
BIN="$CARGO_TARGET_DIR/release/fintech-bench"
if [[ " ${stages[*]} " == *" operator "* ]]; then
  cargo build --release --locked -p fintech-operator --bins --examples
fi

if ((needs_services)); then
  status=$(scripts/testenv.sh status 2>/dev/null || true)
  if [[ -z $status ]]; then
    log "the test environment is not running; starting it (and stopping it at the end)"
    trap 'scripts/testenv.sh down' EXIT
    scripts/testenv.sh up
  elif grep -q ' stopped$' <<<"$status"; then
    die "the test environment is partly down:"$'\n'"$status"$'\n'"restart it with scripts/testenv.sh down && scripts/testenv.sh up"
  else
    log "using the running test environment"
  fi
  set -a
  # shellcheck disable=SC1090
  . "$(scripts/testenv.sh env)"
  set +a
fi

STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT_DIR="$FINTECH_CACHE/bench"
RUN_DIR="$OUT_DIR/$STAMP"
mkdir -p "$RUN_DIR"
LAKE="s3://${FINTECH_TEST_BUCKET:-fintech-test}/bench"

export BENCH_STARTED_AT=$(date -u +%FT%TZ)
export BENCH_LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
log "load average before: $BENCH_LOAD_BEFORE"

for stage in "${stages[@]}"; do
  pin=()
  subcommand=$stage
  case $stage in
    generate) args=() ; pin=(taskset -c "$CORE") ;;
    bronze) args=() ; pin=(taskset -c "$CORE") ;;
    stream) args=(--bootstrap-servers "$KAFKA_BOOTSTRAP_SERVERS" --lake-url "$LAKE") ; pin=(taskset -c "$CORE") ;;
    stream-pair)
      subcommand=stream
      args=(--bootstrap-servers "$KAFKA_BOOTSTRAP_SERVERS" --lake-url "$LAKE" --streamers 2 --partitions 4) ;;
    load) args=(--database-url "$DATABASE_URL" --lake-url "$LAKE") ; pin=(taskset -c "$CORE") ;;
    transform) args=(--database-url "$DATABASE_URL" --lake-url "$LAKE") ;;
    quickstart) args=() ;;
    operator) args=() ;;
  esac
  log "stage $stage${pin:+ (pinned to core $CORE)}"
  command=("$BIN" --log-format json "$subcommand")
  # The operator is its own binary; its benchmark starts it against the test API server.
  [[ $stage == operator ]] && command=("$CARGO_TARGET_DIR/release/examples/apply_to_ready" --runs 20)
  "${pin[@]}" "${command[@]}" "${args[@]}" --json "$RUN_DIR/$stage.json" \
    >"$RUN_DIR/$stage.txt" 2>"$RUN_DIR/$stage.log" ||
    { tail -n 30 "$RUN_DIR/$stage.log" >&2; die "stage $stage failed; its log is $RUN_DIR/$stage.log"; }
  cat "$RUN_DIR/$stage.txt"
done

export BENCH_LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
export BENCH_FINISHED_AT=$(date -u +%FT%TZ)
log "load average after: $BENCH_LOAD_AFTER"
export BENCH_NPROC=$(nproc)
export BENCH_CPU=$(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
export BENCH_MEM_KB=$(awk '/^MemTotal/ {print $2}' /proc/meminfo)
export BENCH_KERNEL=$(uname -r)
export BENCH_RUSTC=$(rustc --version)
export BENCH_COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
# Captured first: `git status | grep -q` can kill git with SIGPIPE, which pipefail reports.
changes=$(git status --porcelain 2>/dev/null || true)
export BENCH_DIRTY=$([[ -n $changes ]] && echo true || echo false)
export BENCH_CORE=$CORE BENCH_RUN_DIR=$RUN_DIR BENCH_STAGES="${stages[*]}"

python3 - "$OUT_DIR/$STAMP.json" <<'PY'
import json, os, sys

env = os.environ
stages = env["BENCH_STAGES"].split()
pinned = {"generate", "bronze", "stream", "load"}
reports = []
for stage in stages:
    with open(os.path.join(env["BENCH_RUN_DIR"], stage + ".json")) as f:
        report = json.load(f)
    # stream-pair runs the stream subcommand; the table names the stage.
    report["stage"] = stage
    report["pinned_to_core"] = int(env["BENCH_CORE"]) if stage in pinned else None
    reports.append(report)
result = {
    "started_at": env["BENCH_STARTED_AT"],
    "finished_at": env["BENCH_FINISHED_AT"],
    "machine": {
        "nproc": int(env["BENCH_NPROC"]),
        "cpu": env["BENCH_CPU"],
        "memory_gib": round(int(env["BENCH_MEM_KB"]) / 1024 / 1024, 1),
        "kernel": env["BENCH_KERNEL"],
        "rustc": env["BENCH_RUSTC"],
        "load_average_before": env["BENCH_LOAD_BEFORE"],
        "load_average_after": env["BENCH_LOAD_AFTER"],
    },
    "commit": env["BENCH_COMMIT"],
    "uncommitted_changes": env["BENCH_DIRTY"] == "true",
    "stages": reports,
}
with open(sys.argv[1], "w") as f:
    json.dump(result, f, indent=2)
    f.write("\n")

def number(value, decimals=0):
    if value is None:
        return "-"
    return f"{value:,.{decimals}f}"

m = result["machine"]
print()
print(f"{m['cpu']}, {m['nproc']} cores, {m['memory_gib']} GiB, Linux {m['kernel']}, {m['rustc']}")
print(f"load average before {m['load_average_before']}, after {m['load_average_after']}")
print()
header = f"{'stage':<11} {'core':>4} {'rows':>11} {'seconds':>9} {'rows/s':>11} {'MB/s':>8} {'peak RSS MB':>11}  targets"
print(header)
print("-" * len(header))
for r in reports:
    targets = ", ".join(
        f"{t['figure']} {'>=' if 'at_least' in t else '<='} "
        f"{number(t.get('at_least', t.get('at_most')))}: "
        f"{'met' if t['met'] else 'MISSED' if t['met'] is False else 'not measured'}"
        for t in r["targets"]
    )
    core = "-" if r["pinned_to_core"] is None else str(r["pinned_to_core"])
    print(
        f"{r['stage']:<11} {core:>4} {number(r.get('rows')):>11} {number(r.get('seconds'), 2):>9} "
        f"{number(r.get('rows_per_sec')):>11} {number(r.get('mb_per_sec'), 1):>8} "
        f"{number(r.get('peak_rss_mb'), 1):>11}  {targets}"
    )
print()
print(f"figures: {sys.argv[1]}")
PY
