#!/usr/bin/env bash
# Import benchmark: `digestif subscribers import` of N generated subscribers into a
# fresh database, then the same file again (every row unchanged), then the file
# with every name changed (every row updated).
#
# Usage:
#   bench/import.sh [--database sqlite|postgres|both] [--subscribers N] [--bin PATH] [--keep]
#
#   --database D      postgres (default): a throwaway PostgreSQL cluster started here
#                     (bench/lib.sh: loopback, synchronous_commit off, fsync on);
#                     sqlite: a file in the temporary folder; both: SQLite then
#                     PostgreSQL.
#   --subscribers N   rows to generate and import (default 1000000).
#   --bin PATH        run this digestif binary instead of building one (to compare
#                     two commits: build each, then pass each here in turn).
#   --keep            keep the temporary folder (config, database, logs).
#
# Prints, per database and pass: the wall time of the whole command (start,
# reading and checking the CSV, writing, exit), rows per second, digestif's user
# and system CPU seconds, the PostgreSQL server's CPU seconds (user + system, all
# its processes) during the pass, digestif's peak RSS, the load average at the
# start of the pass, and digestif's own summary line. On a shared machine the CPU
# seconds move much less than the wall time. Exit status is non-zero if an import fails or
# its summary does not count every row as expected.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
. bench/lib.sh
trap bench_cleanup EXIT

subscribers=1000000
database=postgres
bin=""
while [ $# -gt 0 ]; do
    case "$1" in
    --subscribers) subscribers=$2; shift ;;
    --database) database=$2; shift ;;
    --bin) bin=$2; shift ;;
    --keep) BENCH_KEEP=1 ;;
    -h | --help) sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) bench_log "unknown argument $1 (see --help)"; exit 2 ;;
    esac
    shift
done
case "$database" in sqlite | postgres | both) ;; *) bench_log "--database $database: want sqlite, postgres or both"; exit 2 ;; esac
case "$subscribers" in '' | *[!0-9]* | 0) bench_log "--subscribers $subscribers: want a whole number from 1"; exit 2 ;; esac
databases=$database
[ "$database" = both ] && databases="sqlite postgres"

export DIGESTIF_SECRET=bench-secret-0123456789abcdef0123456789
export RUST_LOG=${RUST_LOG:-warn}

if [ ! -x /usr/bin/time ]; then
    [ "$(id -u)" = 0 ] || { bench_log "install GNU time (apt-get install time)"; exit 1; }
    timeout 300 apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive timeout 300 apt-get install -y -qq time >/dev/null
fi
if [ -n "$bin" ]; then
    BIN=$(realpath "$bin")
else
    bench_log "building digestif (release)"
    timeout 1800 cargo build --release --quiet --bin digestif
    BIN=${CARGO_TARGET_DIR:-$REPO/target}/release/digestif
fi
BENCH_TMP=$(mktemp -d "${TMPDIR:-/tmp}/digestif-bench.XXXXXX")
[ -n "${BENCH_KEEP:-}" ] && bench_log "keeping $BENCH_TMP"

bench_log "generating $subscribers subscribers"
timeout 300 bench/gen-subscribers.sh "$subscribers" >"$BENCH_TMP/subscribers.csv"
# The same addresses, every name different: each row an update.
sed 's/,Reader /,Lecteur /' "$BENCH_TMP/subscribers.csv" >"$BENCH_TMP/renamed.csv"
renamed=$(grep -c ',Lecteur ' "$BENCH_TMP/renamed.csv" || true)

# config DIR URL: the example config with `database` replaced.
config() {
    mkdir -p "$1"
    awk -v url="$2" '/^database = / { print "database = \"" url "\""; next } { print }' \
        "$REPO/digestif.example.toml" >"$1/digestif.toml"
}

if [ "$databases" != sqlite ]; then
    bench_log "starting a PostgreSQL cluster"
    bench_start_postgres
    bench_psql "CREATE DATABASE import"
    config "$BENCH_TMP/postgres" "postgres://postgres@127.0.0.1:$PG_PORT/import"
fi
config "$BENCH_TMP/sqlite" "sqlite://digestif.db"

bench_machine
printf '%-9s %-8s %-8s %-7s %-7s %-6s %-6s %-9s %-6s %-15s %s\n' db pass rows "wall s" "rows/s" "user s" "sys s" \
    "server s" "RSS MB" "load (1 5 15)" summary
status=0
# pass DB NAME FILE WANT: one import of FILE into DB; WANT is what its summary must say.
pass() {
    local db=$1 name=$2 file=$3 want=$4 load log user sys summary server=- cpu0=""
    log=$BENCH_TMP/$db-$name.log
    load=$(cut -d' ' -f1-3 /proc/loadavg)
    [ "$db" = postgres ] && cpu0=$(bench_pg_cpu)
    timed "$log" $((120 + subscribers / 1000)) \
        "$BIN" --config "$BENCH_TMP/$db/digestif.toml" subscribers import "$file"
    user=$(awk -F': ' '/User time/ { print $2 }' "$log.time")
    sys=$(awk -F': ' '/System time/ { print $2 }' "$log.time")
    [ -z "$cpu0" ] || server=$(awk -v a="$cpu0" -v b="$(bench_pg_cpu)" 'BEGIN { printf "%.2f", b - a }')
    summary=$(grep -m1 ' rows: ' "$log" || tail -n 1 "$log")
    printf '%-9s %-8s %-8s %-7s %-7s %-6s %-6s %-9s %-6s %-15s %s\n' "$db" "$name" "$subscribers" "$T_WALL" \
        "$(bench_rate "$subscribers" 0 "$T_WALL")" "$user" "$sys" "$server" "$T_RSS_MB" "$load" "$summary"
    if [ "$T_RC" != 0 ] || ! grep -qF -- "$want" "$log"; then
        bench_log "import into $db ($name) exited $T_RC, expected \"$want\": $(tail -n 5 "$log")"
        status=1
    fi
}

n=$subscribers
for db in $databases; do
    pass "$db" new "$BENCH_TMP/subscribers.csv" "$n rows: $n imported, 0 updated, 0 unchanged, 0 skipped"
    pass "$db" again "$BENCH_TMP/subscribers.csv" "$n rows: 0 imported, 0 updated, $n unchanged, 0 skipped"
    pass "$db" renamed "$BENCH_TMP/renamed.csv" \
        "$n rows: 0 imported, $renamed updated, $((n - renamed)) unchanged, 0 skipped"
done
exit "$status"
