#!/usr/bin/env bash
# End-to-end send benchmark: `digestif send` into Postfix's smtp-sink on loopback,
# side by side with smtp-source (same message size, count and connections).
#
# Usage:
#   bench/send.sh [--smoke] [--subscribers N] [--connections "1 4 16"]
#                 [--rate R [--seconds S]] [--source-count M] [--keep]
#
#   --smoke           2,000 subscribers, 1 and 4 connections; checks that it works
#                     (send exits 0, the report and the sink count every message).
#   --subscribers N   subscribers to generate, import and send to (default 20000).
#   --connections L   pool sizes to measure, one send per size (default "1 4 16");
#                     a size given more than once is measured again (ours, then
#                     smtp-source, each time) and the median ratio is printed.
#   --rate R          rate-limit accuracy instead: rate_per_second = R, R × S
#                     subscribers (S = --seconds, default 30), one pool size.
#   --source-count M  messages for smtp-source (default: N, at most 200000).
#   --keep            keep the temporary folder (config, database, logs).
#
# Prints, per connection count: message size, messages, digestif's rate, smtp-source's
# rate, their ratio, digestif's peak RSS; and the import's time and peak RSS.
# Every step has a timeout; everything started here is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
. bench/lib.sh
trap bench_cleanup EXIT

smoke=""
subscribers=20000
connections="1 4 16"
rate=""
seconds=30
source_count=""
while [ $# -gt 0 ]; do
    case "$1" in
    --smoke) smoke=1; subscribers=2000; connections="1 4" ;;
    --subscribers) subscribers=$2; shift ;;
    --connections) connections=$2; shift ;;
    --rate) rate=$2; shift ;;
    --seconds) seconds=$2; shift ;;
    --source-count) source_count=$2; shift ;;
    --keep) BENCH_KEEP=1 ;;
    -h | --help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) bench_log "unknown argument $1 (see --help)"; exit 2 ;;
    esac
    shift
done
if [ -n "$rate" ]; then
    subscribers=$(awk -v r="$rate" -v s="$seconds" 'BEGIN { printf "%d", r * s }')
    [ "$connections" = "1 4 16" ] && connections=4
fi
[ -n "$source_count" ] || source_count=$((subscribers < 200000 ? subscribers : 200000))

DATE=2026-11-27
NOW=2026-11-27T06:30:00+01:00
export DIGESTIF_SECRET=bench-secret-0123456789abcdef0123456789
export RUST_LOG=${RUST_LOG:-warn}

bench_ensure_tools
bench_log "building digestif (release)"
timeout 1800 cargo build --release --quiet --bin digestif
BIN=${CARGO_TARGET_DIR:-$REPO/target}/release/digestif
BENCH_TMP=$(mktemp -d "${TMPDIR:-/tmp}/digestif-bench.XXXXXX")
[ -n "${BENCH_KEEP:-}" ] && bench_log "keeping $BENCH_TMP"

# write_config DIR TRANSPORT PORT POOL RATE: the example config with absolute feed
# paths and the [smtp] section replaced.
write_config() {
    local dir=$1 transport=$2 port=$3 pool=$4 rps=$5
    mkdir -p "$dir"
    awk -v repo="$REPO" -v transport="$transport" -v port="$port" -v pool="$pool" -v rps="$rps" '
        /^\[/ { skip = 0 }
        /^\[smtp\]/ {
            skip = 1
            print "[smtp]"
            print "transport = \"" transport "\""
            print "file_dir = \"outbox\""
            print "host = \"127.0.0.1\""
            print "port = " port
            print "tls = \"none\""
            print "pool_size = " pool
            print "rate_per_second = " rps
            print "timeout_s = 30"
            print "max_attempts = 5"
            print ""
            next
        }
        skip { next }
        { sub(/path = "examples\//, "path = \"" repo "/examples/"); print }
    ' "$REPO/digestif.example.toml" >"$dir/digestif.toml"
}

# timed LOG TIMEOUT CMD...: runs CMD under /usr/bin/time -v with a timeout; sets
# T_WALL (seconds), T_RSS_MB and T_RC. Output goes to LOG, time's report to LOG.time.
timed() {
    local log=$1 limit=$2
    shift 2
    local s e
    s=$(bench_now)
    set +e
    /usr/bin/time -v -o "$log.time" timeout "$limit" "$@" >"$log" 2>&1
    T_RC=$?
    set -e
    e=$(bench_now)
    T_WALL=$(awk -v s="$s" -v e="$e" 'BEGIN { printf "%.2f", e - s }')
    T_RSS_MB=$(awk -F': ' '/Maximum resident set size/ { printf "%.0f", $2 / 1024 }' "$log.time" 2>/dev/null || echo "?")
}

fail() {
    bench_log "FAIL: $*"
    exit 1
}

base=$BENCH_TMP/base
write_config "$base" file 25 1 0
cfg=(--config "$base/digestif.toml")

bench_log "building the issue of $DATE"
timed "$BENCH_TMP/build.log" 120 "$BIN" "${cfg[@]}" build --date "$DATE" --now "$NOW"
[ "$T_RC" = 0 ] || fail "digestif build exited $T_RC: $(tail -n 20 "$BENCH_TMP/build.log")"
build_s=$T_WALL

# One real message: a test copy written by the file transport.
timed "$BENCH_TMP/copy.log" 60 "$BIN" "${cfg[@]}" send --date "$DATE" --now "$NOW" --to size@bench.example.com
[ "$T_RC" = 0 ] || fail "digestif send --to exited $T_RC: $(tail -n 20 "$BENCH_TMP/copy.log")"
eml=$(find "$base/outbox" -type f | head -n 1)
[ -n "$eml" ] || fail "the test copy was not written under $base/outbox"
size=$(wc -c <"$eml")
bench_log "one message: $size bytes"

bench_log "generating and importing $subscribers subscribers"
timeout 300 bench/gen-subscribers.sh "$subscribers" >"$BENCH_TMP/subscribers.csv"
timed "$BENCH_TMP/import.log" $((60 + subscribers / 5000)) "$BIN" "${cfg[@]}" subscribers import "$BENCH_TMP/subscribers.csv"
[ "$T_RC" = 0 ] || fail "import exited $T_RC: $(tail -n 20 "$BENCH_TMP/import.log")"
import_s=$T_WALL
import_rss=$T_RSS_MB
rm -f "$BENCH_TMP/subscribers.csv"

bench_machine
printf 'build of the issue: %ss; import of %s subscribers: %ss, peak RSS %s MB\n' \
    "$build_s" "$subscribers" "$import_s" "$import_rss"
if [ -n "$rate" ]; then
    printf '%-6s %-8s %-9s %-11s %-9s %-10s %-9s\n' conns "size B" messages "target/s" "ours/s" deviation "RSS MB"
else
    printf '%-6s %-8s %-9s %-9s %-14s %-7s %-9s %-8s\n' conns "size B" messages "ours/s" "smtp-source/s" ratio "RSS MB" "send s"
fi

status=0
ratios=()
for c in $connections; do
    run=$BENCH_TMP/c$c
    port=$(bench_free_port)
    write_config "$run" smtp "$port" "$c" "${rate:-0}"
    # Same issue (archive), fresh copy of the imported database: each run sends to all.
    cp -a "$base/digests" "$run/"
    cp "$base"/digestif.db* "$run/"
    sink_flags=()
    [ -n "$smoke" ] && sink_flags=(-c)
    bench_start_sink "$port" "$run/sink.out" "${sink_flags[@]}"

    timed "$run/send.log" $((60 + subscribers / 100)) \
        "$BIN" --config "$run/digestif.toml" --log-format json send --date "$DATE" --now "$NOW"
    sent=$(grep -o 'sent [0-9]*, retried' "$run/send.log" | head -n 1 | cut -d' ' -f2 | tr -d , || true)
    ours=$(bench_rate "${sent:-0}" 0 "$T_WALL")
    if [ "$T_RC" != 0 ] || [ "${sent:-0}" != "$subscribers" ]; then
        bench_log "send with $c connection(s) exited $T_RC, sent ${sent:-?} of $subscribers:"
        bench_log "$(tail -n 20 "$run/send.log")"
        status=1
    fi
    if [ -n "$smoke" ]; then
        sleep 0.2
        got=$(bench_sink_messages "$run/sink.out")
        if [ "$got" != "$subscribers" ]; then
            bench_log "the sink received $got messages, expected $subscribers"
            status=1
        fi
    fi
    if [ -n "$rate" ]; then
        printf '%-6s %-8s %-9s %-11s %-9s %-10s %-9s\n' "$c" "$size" "${sent:-0}" "$rate" "$ours" \
            "$(awk -v o="$ours" -v r="$rate" 'BEGIN { printf "%+.1f%%", (o - r) * 100 / r }')" "$T_RSS_MB"
    else
        theirs=$(bench_smtp_source "$c" "$source_count" "$size" "$port" -d)
        ratios+=("$c $(awk -v o="$ours" -v t="$theirs" 'BEGIN { printf "%.3f", o / t }')")
        printf '%-6s %-8s %-9s %-9s %-14s %-7s %-9s %-8s\n' "$c" "$size" "${sent:-0}" "$ours" "$theirs" \
            "$(awk -v o="$ours" -v t="$theirs" 'BEGIN { printf "%.2f", o / t }')" "$T_RSS_MB" "$T_WALL"
    fi
    bench_stop "$SINK_PID"
    rm -f "$run"/digestif.db*
done

# Repeated sizes: the median ratio of each (runs on a shared machine vary).
if [ ${#ratios[@]} -gt 0 ] && [ "$(printf '%s\n' "${ratios[@]}" | cut -d' ' -f1 | sort | uniq -d)" != "" ]; then
    printf '%s\n' "${ratios[@]}" | sort -k1,1n -k2,2n | awk '
        { c[NR] = $1; r[NR] = $2 }
        END {
            i = 1
            while (i <= NR) {
                j = i; while (j < NR && c[j + 1] == c[i]) j++
                n = j - i + 1
                m = (n % 2) ? r[i + (n - 1) / 2] : (r[i + n / 2 - 1] + r[i + n / 2]) / 2
                list = ""; for (k = i; k <= j; k++) list = list (k > i ? " " : "") sprintf("%.2f", r[k])
                printf "median ratio with %s connection(s) over %d runs: %.2f (%s)\n", c[i], n, m, list
                i = j + 1
            }
        }'
fi

if [ -n "$smoke" ]; then
    if [ "$status" = 0 ]; then echo "smoke: ok"; else echo "smoke: FAILED"; fi
fi
exit "$status"
