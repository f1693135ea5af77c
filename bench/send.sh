#!/usr/bin/env bash
# End-to-end send benchmark: `digestif send` into Postfix's smtp-sink on loopback,
# side by side with smtp-source (same message size, count and connections), in
# plain SMTP or over TLS, optionally across a simulated network round trip.
#
# Usage:
#   bench/send.sh [--smoke] [--subscribers N] [--connections "1 4 16"]
#                 [--tls none|starttls|tls] [--relay stunnel|native] [--rtt-ms MS]
#                 [--rate R [--seconds S]] [--source-count M] [--keep]
#                 [--database sqlite|postgres|both] [--senders N]
#
#   --smoke           2,000 subscribers, 1 and 4 connections; checks that it works
#                     (send exits 0, the report and the sink count every message);
#                     then 200 messages over STARTTLS and over implicit TLS at 20 ms.
#   --subscribers N   subscribers to generate, import and send to (default 20000).
#   --tls MODE        none (default); starttls or tls: stunnel in front of the sink
#                     (a certificate from a private CA made here, trusted through
#                     smtp.ca_file); smtp-source goes through a stunnel client.
#   --relay KIND      stunnel (default): smtp-sink, behind stunnel for TLS;
#                     native: bench/smtp_sink.rs, which speaks TLS itself (no proxy
#                     hop, as a relay terminating its own TLS), in clear and over
#                     implicit TLS alike (not starttls).
#   --rtt-ms MS       a round trip of MS ms (bench/latency_proxy.rs, MS/2 each way)
#                     between the sender and the relay, for digestif and smtp-source
#                     alike; the one-round-trip limit (connections / RTT) is printed
#                     next to the rates.
#   --connections L   pool sizes to measure, one send per size (default "1 4 16");
#                     a size given more than once is measured again (ours, then
#                     smtp-source, each time) and the median ratio is printed.
#   --rate R          rate-limit accuracy instead: rate_per_second = R, R × S
#                     subscribers (S = --seconds, default 30), one pool size.
#   --source-count M  messages for smtp-source (default: N, at most 200000).
#   --keep            keep the temporary folder (config, database, logs).
#   --database D      sqlite (default), postgres (a throwaway cluster started here,
#                     one fresh database per send, copied from the imported one), or
#                     both: each connection count on SQLite then on PostgreSQL, and
#                     the ratio postgres/sqlite of digestif's rates.
#   --senders N       on PostgreSQL, N `digestif send` processes at once on the same
#                     database and issue (default 1): the rate is the aggregate (all
#                     messages / wall time until the last exits), RSS the largest.
#   --bin PATH        run this digestif binary instead of the one built here (to
#                     compare two commits: build each, then pass each here in turn;
#                     the bench tools are still built from this tree).
#   --pg-stats        the PostgreSQL cluster with pg_stat_statements: after each send
#                     on PostgreSQL, its statements (calls, server ms, rows), the
#                     ledger's row updates (of which HOT) and the WAL written.
#
# Prints, per connection count: TLS mode, RTT, message size, messages, digestif's rate,
# smtp-source's rate, their ratio, the one-round-trip limit and digestif's share of it,
# digestif's peak RSS, the send's wall time, and the CPU seconds (user + system) of
# digestif, of the PostgreSQL server (all its processes; "-" on SQLite) and of
# smtp-sink during the send (CPU seconds move less with the machine's load than
# rates do); and the import's time and peak RSS.
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
tls=none
relay=stunnel
rtt=0
database=sqlite
senders=1
bin=""
pg_stats=""
while [ $# -gt 0 ]; do
    case "$1" in
    --smoke) smoke=1; subscribers=2000; connections="1 4" ;;
    --subscribers) subscribers=$2; shift ;;
    --connections) connections=$2; shift ;;
    --rate) rate=$2; shift ;;
    --seconds) seconds=$2; shift ;;
    --source-count) source_count=$2; shift ;;
    --tls) tls=$2; shift ;;
    --rtt-ms) rtt=$2; shift ;;
    --relay) relay=$2; shift ;;
    --keep) BENCH_KEEP=1 ;;
    --database) database=$2; shift ;;
    --senders) senders=$2; shift ;;
    --bin) bin=$2; shift ;;
    --pg-stats) pg_stats=1 ;;
    -h | --help) sed -n '2,54p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) bench_log "unknown argument $1 (see --help)"; exit 2 ;;
    esac
    shift
done
case "$tls" in none | starttls | tls) ;; *) bench_log "--tls $tls: want none, starttls or tls"; exit 2 ;; esac
case "$relay" in stunnel | native) ;; *) bench_log "--relay $relay: want stunnel or native"; exit 2 ;; esac
[ "$relay" = native ] && [ "$tls" = starttls ] && { bench_log "--relay native speaks implicit TLS only (--tls none or tls)"; exit 2; }
case "$database" in sqlite | postgres | both) ;; *) bench_log "--database $database: want sqlite, postgres or both"; exit 2 ;; esac
case "$senders" in '' | *[!0-9]* | 0) bench_log "--senders $senders: want a whole number from 1"; exit 2 ;; esac
if [ "$senders" != 1 ] && [ "$database" = sqlite ]; then
    bench_log "--senders $senders needs --database postgres (on SQLite one process sends an issue)"
    exit 2
fi
databases=$database
[ "$database" = both ] && databases="sqlite postgres"
case "$rtt" in '' | *[!0-9.]*) bench_log "--rtt-ms $rtt: want a number of milliseconds"; exit 2 ;; esac
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
timeout 1800 cargo build --release --quiet --bin digestif --example latency_proxy --example smtp_sink
BIN=${CARGO_TARGET_DIR:-$REPO/target}/release/digestif
if [ -n "$bin" ]; then
    [ -x "$bin" ] || { bench_log "--bin $bin: not an executable file"; exit 2; }
    BIN=$(realpath "$bin")
fi
PROXY=${CARGO_TARGET_DIR:-$REPO/target}/release/examples/latency_proxy
NATIVE_SINK=${CARGO_TARGET_DIR:-$REPO/target}/release/examples/smtp_sink
BENCH_TMP=$(mktemp -d "${TMPDIR:-/tmp}/digestif-bench.XXXXXX")
[ -n "${BENCH_KEEP:-}" ] && bench_log "keeping $BENCH_TMP"
CERTS=$BENCH_TMP/certs
bench_make_cert "$CERTS"

# write_config DIR TRANSPORT PORT POOL RATE [TLS [DATABASE]]: the example config with
# absolute feed paths and the [smtp] section replaced (TLS: trusting the bench's
# private CA); DATABASE (a postgres:// URL) in place of the SQLite file.
write_config() {
    local dir=$1 transport=$2 port=$3 pool=$4 rps=$5 mode=${6:-none} url=${7:-sqlite://digestif.db}
    mkdir -p "$dir"
    awk -v repo="$REPO" -v transport="$transport" -v port="$port" -v pool="$pool" -v rps="$rps" \
        -v tls="$mode" -v ca="$CERTS/ca.pem" -v url="$url" '
        /^database = / { print "database = \"" url "\""; next }
        /^\[/ { skip = 0 }
        /^\[smtp\]/ {
            skip = 1
            print "[smtp]"
            print "transport = \"" transport "\""
            print "file_dir = \"outbox\""
            print "host = \"127.0.0.1\""
            print "port = " port
            print "tls = \"" tls "\""
            if (tls != "none") print "ca_file = \"" ca "\""
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

fail() {
    bench_log "FAIL: $*"
    exit 1
}

# start_relay DIR TLS RTT [sink flags]: smtp-sink, with stunnel in front of it for
# TLS and the latency proxy in front of that for RTT > 0. Sets SEND_PORT (where
# digestif connects), SOURCE_PORT (where smtp-source does: through a stunnel client
# for TLS), SINK_OUT and RELAY_PIDS.
start_relay() {
    local dir=$1 mode=$2 ms=$3 sink_port front
    shift 3
    mkdir -p "$dir"
    RELAY_PIDS=()
    sink_port=$(bench_free_port)
    SINK_OUT=$dir/sink.out
    if [ "$relay" = native ]; then
        local tls_args=()
        [ "$mode" = tls ] && tls_args=(--cert "$CERTS/relay.pem" --key "$CERTS/relay.key")
        bench_start_native_sink "$NATIVE_SINK" "$SINK_OUT" "${tls_args[@]}"
        RELAY_PIDS+=("$SINK_PID")
        SEND_PORT=$SINK_PORT
        SOURCE_PORT=$SINK_PORT
        if [ "$ms" != 0 ]; then
            bench_start_proxy "$PROXY" "$dir/proxy.log" "$SINK_PORT" "$ms"
            RELAY_PIDS+=("$PROXY_PID")
            SEND_PORT=$PROXY_PORT
            SOURCE_PORT=$PROXY_PORT
        fi
        if [ "$mode" != none ]; then
            SOURCE_PORT=$(bench_free_port)
            bench_start_stunnel "$CERTS" "$mode" "$SOURCE_PORT" "$SEND_PORT" client
            RELAY_PIDS+=("$STUNNEL_PID")
        fi
        return 0
    fi
    bench_start_sink "$sink_port" "$SINK_OUT" "$@"
    RELAY_PIDS+=("$SINK_PID")
    front=$sink_port
    if [ "$mode" != none ]; then
        front=$(bench_free_port)
        bench_start_stunnel "$CERTS" "$mode" "$front" "$sink_port"
        RELAY_PIDS+=("$STUNNEL_PID")
    fi
    SEND_PORT=$front
    if [ "$ms" != 0 ]; then
        bench_start_proxy "$PROXY" "$dir/proxy.log" "$front" "$ms"
        RELAY_PIDS+=("$PROXY_PID")
        SEND_PORT=$PROXY_PORT
    fi
    SOURCE_PORT=$SEND_PORT
    if [ "$mode" != none ]; then
        SOURCE_PORT=$(bench_free_port)
        bench_start_stunnel "$CERTS" "$mode" "$SOURCE_PORT" "$SEND_PORT" client
        RELAY_PIDS+=("$STUNNEL_PID")
    fi
}

stop_relay() {
    local pid
    for pid in "${RELAY_PIDS[@]}"; do bench_stop "$pid"; done
}

# limit_of CONNS RTT: the one-round-trip limit, connections / RTT, in msg/s ("-" at RTT 0).
limit_of() {
    awk -v c="$1" -v r="$2" 'BEGIN { if (r > 0) printf "%d", c * 1000 / r; else printf "-" }'
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

# The PostgreSQL base: the same issue built there (its frozen copy lives in the
# database), then the same subscribers imported; each send gets a copy of it.
if [ "$databases" != sqlite ]; then
    bench_log "starting a PostgreSQL cluster"
    [ -z "$pg_stats" ] || BENCH_PG_OPTS="${BENCH_PG_OPTS:-} -c shared_preload_libraries=pg_stat_statements"
    bench_start_postgres
    [ -z "$pg_stats" ] || bench_psql "CREATE EXTENSION pg_stat_statements"
    bench_psql "CREATE DATABASE base"
    base_pg=$BENCH_TMP/base-pg
    write_config "$base_pg" file 25 1 0 none "postgres://postgres@127.0.0.1:$PG_PORT/base"
    timed "$BENCH_TMP/build-pg.log" 120 "$BIN" --config "$base_pg/digestif.toml" build --date "$DATE" --now "$NOW"
    [ "$T_RC" = 0 ] || fail "digestif build on PostgreSQL exited $T_RC: $(tail -n 20 "$BENCH_TMP/build-pg.log")"
fi

bench_log "generating and importing $subscribers subscribers"
timeout 300 bench/gen-subscribers.sh "$subscribers" >"$BENCH_TMP/subscribers.csv"
imports=()
for db in $databases; do
    dir=$base
    [ "$db" = postgres ] && dir=$base_pg
    timed "$BENCH_TMP/import-$db.log" $((60 + subscribers / 5000)) \
        "$BIN" --config "$dir/digestif.toml" subscribers import "$BENCH_TMP/subscribers.csv"
    [ "$T_RC" = 0 ] || fail "import into $db exited $T_RC: $(tail -n 20 "$BENCH_TMP/import-$db.log")"
    imports+=("$(printf 'import of %s subscribers into %s: %ss, peak RSS %s MB' \
        "$subscribers" "$db" "$T_WALL" "$T_RSS_MB")")
done
rm -f "$BENCH_TMP/subscribers.csv"

bench_machine
printf 'build of the issue: %ss\n' "$build_s"
printf '%s\n' "${imports[@]}"
if [ -n "$rate" ]; then
    printf '%-9s %-3s %-6s %-9s %-7s %-8s %-9s %-11s %-9s %-10s %-9s\n' db snd conns tls "rtt ms" "size B" messages \
        "target/s" "ours/s" deviation "RSS MB"
else
    printf '%-9s %-3s %-6s %-9s %-7s %-8s %-9s %-9s %-14s %-7s %-10s %-9s %-9s %-8s %-6s %-8s %s\n' db snd conns tls "rtt ms" "size B" \
        messages "ours/s" "smtp-source/s" ratio "1-RTT/s" "of 1-RTT" "RSS MB" "send s" "cpu s" "pg cpu s" "sink cpu s"
fi

status=0
ratios=()
db_rates=()

# run_senders DIR N TIMEOUT [send args]: N `digestif send` processes at once on
# DIR's config; sets T_WALL (until the last exits), T_RSS_MB (the largest), T_RC
# (the first non-zero exit) and sent (messages, all processes together).
run_senders() {
    local run=$1 n=$2 limit=$3 i s e rc pids=()
    shift 3
    if [ "$n" = 1 ]; then
        timed "$run/send.log" "$limit" \
            "$BIN" --config "$run/digestif.toml" --log-format json send --date "$DATE" --now "$NOW" "$@"
        sent=$(grep -o 'sent [0-9]*, retried' "$run/send.log" | head -n 1 | cut -d' ' -f2 | tr -d , || true)
        return
    fi
    s=$(bench_now)
    for i in $(seq 1 "$n"); do
        /usr/bin/time -v -o "$run/send$i.log.time" timeout "$limit" \
            "$BIN" --config "$run/digestif.toml" --log-format json send --date "$DATE" --now "$NOW" "$@" \
            >"$run/send$i.log" 2>&1 &
        pids+=("$!")
    done
    T_RC=0
    for i in "${pids[@]}"; do
        rc=0
        wait "$i" || rc=$?
        [ "$T_RC" != 0 ] || T_RC=$rc
    done
    e=$(bench_now)
    T_WALL=$(awk -v s="$s" -v e="$e" 'BEGIN { printf "%.2f", e - s }')
    T_RSS_MB=$(cat "$run"/send*.log.time | awk -F': ' '/Maximum resident set size/ { if ($2 > m) m = $2 } END { printf "%.0f", m / 1024 }')
    sent=$(cat "$run"/send*.log | grep -o 'sent [0-9]*, retried' | cut -d' ' -f2 | tr -d , | awk '{ n += $1 } END { print n + 0 }')
    cat "$run"/send*.log >"$run/send.log"
}
# pg_report DATABASE WAL0: what the send did on the server (--pg-stats): the
# statements by server time, the ledger's row changes, the WAL written since WAL0.
pg_report() {
    local name=$1 wal0=$2
    printf -- '-- %s: statements by server time (calls, total ms, ms a call, rows)\n' "$name"
    bench_psql_out "SELECT calls, round(total_exec_time::numeric, 1), round((total_exec_time / calls)::numeric, 3),
            rows, regexp_replace(left(query, 110), '\s+', ' ', 'g')
        FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid
        WHERE d.datname = '$name' ORDER BY total_exec_time DESC LIMIT 12"
    printf -- '-- %s: deliveries rows (inserted, updated, of which HOT, deleted; autovacuum and autoanalyze runs), WAL bytes of the cluster\n' "$name"
    # The senders' backends report their table counts as they exit.
    sleep 1
    bench_psql_out "SELECT n_tup_ins, n_tup_upd, n_tup_hot_upd, n_tup_del, autovacuum_count, autoanalyze_count
        FROM pg_stat_user_tables WHERE relname = 'deliveries'" "$name"
    bench_psql_out "SELECT pg_current_wal_lsn() - '$wal0'::pg_lsn"
}

# measure NAME CONNS TLS RTT [LIMIT]: one send of the imported database (a fresh
# copy) through a fresh relay, then smtp-source through the same relay; prints a row.
# With LIMIT, `send --limit LIMIT` (a short run over a slow path).
measure() {
    local name=$1 c=$2 mode=$3 ms=$4 limit=${5:-}
    local run=$BENCH_TMP/$name want=$subscribers count=$source_count
    local sink_flags=() limit_args=()
    [ -n "$smoke" ] && sink_flags=(-c)
    if [ -n "$limit" ]; then
        want=$limit
        count=$limit
        limit_args=(--limit "$limit")
    fi
    start_relay "$run" "$mode" "$ms" "${sink_flags[@]}"
    # Same issue (archive), fresh copy of the imported database: each run sends to all.
    local pg_db=run_${name//[^a-zA-Z0-9]/_} nsend=1
    if [ "$db" = postgres ]; then
        nsend=$senders
        bench_psql "CREATE DATABASE $pg_db TEMPLATE base"
        write_config "$run" smtp "$SEND_PORT" "$c" "${rate:-0}" "$mode" \
            "postgres://postgres@127.0.0.1:$PG_PORT/$pg_db"
        cp -a "$base_pg/digests" "$run/"
    else
        write_config "$run" smtp "$SEND_PORT" "$c" "${rate:-0}" "$mode"
        cp -a "$base/digests" "$run/"
        cp "$base"/digestif.db* "$run/"
    fi

    local pg_cpu=- pg_cpu0="" wal0="" sink_cpu0 our_cpu sink_cpu
    if [ "$db" = postgres ]; then
        pg_cpu0=$(bench_pg_cpu)
        if [ -n "$pg_stats" ]; then
            bench_psql "SELECT pg_stat_statements_reset()"
            wal0=$(bench_psql_out "SELECT pg_current_wal_lsn()")
        fi
    fi
    sink_cpu0=$(bench_cpu_of "$SINK_PID")
    run_senders "$run" "$nsend" $((120 + want / 20)) "${limit_args[@]}"
    sink_cpu=$(awk -v a="$sink_cpu0" -v b="$(bench_cpu_of "$SINK_PID")" 'BEGIN { printf "%.2f", b - a }')
    [ -z "$pg_cpu0" ] || pg_cpu=$(awk -v a="$pg_cpu0" -v b="$(bench_pg_cpu)" 'BEGIN { printf "%.2f", b - a }')
    our_cpu=$(cat "$run"/send*.log.time | awk -F': ' '/(User|System) time/ { s += $2 } END { printf "%.2f", s }')
    [ -z "$wal0" ] || pg_report "$pg_db" "$wal0" >"$run/pg-stats.txt"
    ours=$(bench_rate "${sent:-0}" 0 "$T_WALL")
    if [ "$T_RC" != 0 ] || [ "${sent:-0}" != "$want" ]; then
        bench_log "send with $c connection(s), tls $mode, rtt $ms ms exited $T_RC, sent ${sent:-?} of $want:"
        bench_log "$(tail -n 20 "$run/send.log")"
        status=1
    fi
    if [ -n "$smoke" ]; then
        for _ in $(seq 1 20); do # the native sink reports every second
            got=$(bench_sink_messages "$SINK_OUT")
            [ "$got" = "$want" ] && break
            sleep 0.2
        done
        if [ "$got" != "$want" ]; then
            bench_log "the sink received $got messages, expected $want"
            status=1
        fi
    fi
    local one_rtt share label=$mode
    [ "$relay" = native ] && label=$mode-nat
    one_rtt=$(limit_of "$c" "$ms")
    share=$(awk -v o="$ours" -v l="$one_rtt" 'BEGIN { if (l == "-") printf "-"; else printf "%.2f", o / l }')
    if [ -n "$rate" ]; then
        printf '%-9s %-3s %-6s %-9s %-7s %-8s %-9s %-11s %-9s %-10s %-9s\n' "$db" "$nsend" "$c" "$label" "$ms" "$size" "${sent:-0}" \
            "$rate" "$ours" \
            "$(awk -v o="$ours" -v r="$rate" 'BEGIN { printf "%+.1f%%", (o - r) * 100 / r }')" "$T_RSS_MB"
    else
        theirs=$(bench_smtp_source "$c" "$count" "$size" "$SOURCE_PORT" -d)
        [ -n "$limit" ] || ratios+=("$c${db_key:+-$db} $(awk -v o="$ours" -v t="$theirs" 'BEGIN { printf "%.3f", o / t }')")
        printf '%-9s %-3s %-6s %-9s %-7s %-8s %-9s %-9s %-14s %-7s %-10s %-9s %-9s %-8s %-6s %-8s %s\n' "$db" "$nsend" "$c" "$label" "$ms" "$size" \
            "${sent:-0}" "$ours" "$theirs" \
            "$(awk -v o="$ours" -v t="$theirs" 'BEGIN { printf "%.2f", o / t }')" "$one_rtt" "$share" \
            "$T_RSS_MB" "$T_WALL" "$our_cpu" "$pg_cpu" "$sink_cpu"
        [ ! -f "$run/pg-stats.txt" ] || cat "$run/pg-stats.txt"
    fi
    [ -n "$limit" ] || db_rates+=("$c $db $ours")
    stop_relay
    rm -f "$run"/digestif.db*
    if [ "$db" = postgres ]; then bench_psql "DROP DATABASE $pg_db"; fi
}

db_key=""
[ "$database" = both ] && db_key=1 # each database's ratios apart
for c in $connections; do
    for db in $databases; do
        measure "$db-c$c-$tls-$rtt" "$c" "$tls" "$rtt"
    done
done
if [ "$database" = both ]; then
    # Each round's pair (the n-th SQLite and the n-th PostgreSQL send of a
    # connection count, run one after the other), then their median.
    printf '%s\n' "${db_rates[@]}" | awk '
        { k = $1 SUBSEP $2; n[k]++; rate[k, n[k]] = $3; if (!($1 in seen)) { seen[$1] = 1; order[++m] = $1 } }
        END {
            for (i = 1; i <= m; i++) {
                c = order[i]; list = ""; r = 0
                for (j = 1; j <= n[c, "postgres"] && j <= n[c, "sqlite"]; j++) {
                    s = rate[c, "sqlite", j]; p = rate[c, "postgres", j]
                    if (s <= 0) continue
                    q[++r] = p / s
                    printf "postgres/sqlite with %s connection(s), round %d: %.2f (%s vs %s msg/s)\n", c, j, p / s, p, s
                }
                if (r > 1) {
                    for (a = 1; a <= r; a++) for (b = a + 1; b <= r; b++) if (q[b] < q[a]) { t = q[a]; q[a] = q[b]; q[b] = t }
                    med = (r % 2) ? q[(r + 1) / 2] : (q[r / 2] + q[r / 2 + 1]) / 2
                    for (a = 1; a <= r; a++) list = list (a > 1 ? " " : "") sprintf("%.2f", q[a])
                    printf "postgres/sqlite with %s connection(s), median of %d rounds: %.2f (%s)\n", c, r, med, list
                }
            }
        }'
fi
if [ -n "$smoke" ]; then
    # TLS and latency: a short run each way, so that these paths cannot rot.
    measure smoke-starttls 4 starttls 20 200
    measure smoke-tls 4 tls 20 200
    saved_relay=$relay relay=native
    measure smoke-native-tls 4 tls 0 200
    relay=$saved_relay
fi

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
