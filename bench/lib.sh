#!/usr/bin/env bash
# Shared helpers for the benchmark scripts: tools, free ports, smtp-sink, timing.
# Sourced, not run. Every process started here is recorded in BENCH_PIDS and
# stopped by bench_cleanup (installed as an EXIT trap by the caller).

SMTP_SINK=/usr/sbin/smtp-sink
SMTP_SOURCE=/usr/sbin/smtp-source
BENCH_PIDS=()

bench_log() { printf '%s\n' "$*" >&2; }

# Installs Postfix's smtp-sink/smtp-source, stunnel (TLS in front of the sink),
# openssl (its certificate) and GNU time from Debian when absent.
# Postfix's tools run without the mail system being started.
bench_ensure_tools() {
    local need=()
    [ -x "$SMTP_SINK" ] && [ -x "$SMTP_SOURCE" ] || need+=(postfix)
    [ -x /usr/bin/time ] || need+=(time)
    command -v python3 >/dev/null || need+=(python3)
    command -v stunnel4 >/dev/null || command -v stunnel >/dev/null || need+=(stunnel4)
    command -v openssl >/dev/null || need+=(openssl)
    if [ ${#need[@]} -gt 0 ]; then
        if [ "$(id -u)" != 0 ]; then
            bench_log "missing ${need[*]}: install them (apt-get install ${need[*]}) or run as root"
            return 1
        fi
        bench_log "installing ${need[*]} from Debian"
        export DEBIAN_FRONTEND=noninteractive
        timeout 300 apt-get update -qq >/dev/null
        timeout 300 apt-get install -y -qq "${need[@]}" >/dev/null
    fi
}

# Prints a free TCP port on 127.0.0.1.
bench_free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# Seconds since the epoch with nanoseconds.
bench_now() { date +%s.%N; }

# bench_rate COUNT START END -> messages per second, integer.
bench_rate() { awk -v n="$1" -v s="$2" -v e="$3" 'BEGIN { printf "%d", n / (e - s) }'; }

# bench_start_sink PORT OUTFILE [-c]: starts smtp-sink on 127.0.0.1:PORT, waits
# until it accepts connections. Sets SINK_PID. With -c the sink writes running
# counters to OUTFILE (one write per message: it costs the sink ~1/3 of its
# rate, so rate runs go without it and checks of the count go with it).
bench_start_sink() {
    local port=$1 out=$2
    shift 2
    "$SMTP_SINK" "$@" -u "$(id -un)" "127.0.0.1:$port" 1000 >"$out" 2>&1 &
    SINK_PID=$!
    BENCH_PIDS+=("$SINK_PID")
    bench_wait_port "$port" smtp-sink "$out"
}

# bench_start_native_sink BIN OUTFILE [--cert PEM --key PEM]: bench/smtp_sink.rs on
# a free loopback port (implicit TLS with a certificate). Sets SINK_PID and SINK_PORT;
# OUTFILE gets its port, then `mesg=N` every second, like smtp-sink -c.
bench_start_native_sink() {
    local bin=$1 out=$2
    shift 2
    : >"$out"
    "$bin" --listen 127.0.0.1:0 "$@" >"$out" 2>&1 &
    SINK_PID=$!
    BENCH_PIDS+=("$SINK_PID")
    SINK_PORT=$(bench_printed_port "$out" "the native sink")
}

# bench_printed_port LOG NAME: the port a tool of ours printed as the first line of
# LOG (it listens on port 0); waits up to 5 s, fails naming NAME and showing LOG.
bench_printed_port() {
    local log=$1 name=$2 port i
    for i in $(seq 1 50); do
        port=$(head -n 1 "$log" | tr -dc 0-9)
        if [ -n "$port" ]; then
            echo "$port"
            return 0
        fi
        sleep 0.1
    done
    bench_log "$name did not start: $(cat "$log")"
    return 1
}

# bench_wait_port PORT NAME LOG: waits until 127.0.0.1:PORT accepts connections.
bench_wait_port() {
    local port=$1 name=$2 log=$3 i
    for i in $(seq 1 50); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    bench_log "$name did not start on port $port: $(tail -n 20 "$log")"
    return 1
}

# bench_make_cert DIR: a private CA (DIR/ca.pem) and a certificate for 127.0.0.1
# and localhost signed by it (DIR/relay.pem, DIR/relay.key), as a relay with a
# private CA has; digestif trusts it through `smtp.ca_file`.
bench_make_cert() {
    local dir=$1
    mkdir -p "$dir"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
        -subj "/CN=bench relay CA" -keyout "$dir/ca.key" -out "$dir/ca.pem" 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -subj "/CN=localhost" -keyout "$dir/relay.key" -out "$dir/relay.csr" 2>/dev/null
    printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n' >"$dir/relay.ext"
    openssl x509 -req -in "$dir/relay.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" \
        -CAcreateserial -days 2 -extfile "$dir/relay.ext" -out "$dir/relay.pem" 2>/dev/null
}

# bench_start_stunnel DIR MODE ACCEPT_PORT CONNECT_PORT [client]: stunnel on
# 127.0.0.1:ACCEPT_PORT forwarding to 127.0.0.1:CONNECT_PORT. MODE is "tls"
# (implicit TLS) or "starttls" (SMTP STARTTLS, RFC 3207). As a server (default) it
# presents DIR/relay.pem; with "client" it speaks TLS to CONNECT_PORT (for
# smtp-source, which has no TLS of its own). Sets STUNNEL_PID.
bench_start_stunnel() {
    local dir=$1 mode=$2 accept=$3 connect=$4 role=${5:-server}
    local conf=$dir/stunnel-$accept.conf bin
    bin=$(command -v stunnel4 || command -v stunnel)
    {
        printf 'foreground = yes\npid =\ndebug = 3\nsocket = l:TCP_NODELAY=1\nsocket = r:TCP_NODELAY=1\n'
        printf '[relay]\naccept = 127.0.0.1:%s\nconnect = 127.0.0.1:%s\n' "$accept" "$connect"
        if [ "$role" = client ]; then
            printf 'client = yes\nverifyChain = yes\nCAfile = %s\ncheckHost = localhost\n' "$dir/ca.pem"
        else
            printf 'cert = %s\nkey = %s\n' "$dir/relay.pem" "$dir/relay.key"
        fi
        [ "$mode" = starttls ] && printf 'protocol = smtp\n'
    } >"$conf"
    "$bin" "$conf" >"$conf.log" 2>&1 &
    STUNNEL_PID=$!
    BENCH_PIDS+=("$STUNNEL_PID")
    bench_wait_port "$accept" stunnel "$conf.log"
}

# bench_start_proxy BIN LOG TO_PORT RTT_MS: the latency proxy (bench/latency_proxy.rs)
# on a free loopback port, forwarding to TO_PORT with RTT_MS / 2 each way.
# Sets PROXY_PID and PROXY_PORT.
bench_start_proxy() {
    local bin=$1 log=$2 to=$3 rtt=$4
    : >"$log" # exists before the background start opens it
    "$bin" --listen 127.0.0.1:0 --to "127.0.0.1:$to" \
        --delay-ms "$(awk -v r="$rtt" 'BEGIN { print r / 2 }')" >"$log" 2>&1 &
    PROXY_PID=$!
    BENCH_PIDS+=("$PROXY_PID")
    PROXY_PORT=$(bench_printed_port "$log" "the latency proxy")
}

# bench_sink_messages OUTFILE: messages the sink has counted so far (its last "mesg=N").
bench_sink_messages() {
    tr '\r' '\n' <"$1" | grep -o 'mesg=[0-9]*' | tail -n 1 | cut -d= -f2 | sed 's/^$/0/' || echo 0
}

# bench_stop PID: stops one process started here.
bench_stop() {
    local pid=$1
    if kill -0 "$pid" 2>/dev/null; then
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
}

bench_cleanup() {
    local pid
    for pid in "${BENCH_PIDS[@]}"; do bench_stop "$pid"; done
    if [ -n "${BENCH_PG_STOP:-}" ]; then eval "$BENCH_PG_STOP" >/dev/null 2>&1 || true; fi
    if [ -n "${BENCH_TMP:-}" ] && [ -d "$BENCH_TMP" ] && [ -z "${BENCH_KEEP:-}" ]; then
        rm -rf "$BENCH_TMP"
    fi
}

# bench_smtp_source SESSIONS COUNT SIZE PORT [extra flags]: runs smtp-source
# reusing each connection (-d, as a pooled sender does), prints msg/s.
bench_smtp_source() {
    local sessions=$1 count=$2 size=$3 port=$4
    shift 4
    local s e
    s=$(bench_now)
    timeout 600 "$SMTP_SOURCE" "$@" -s "$sessions" -m "$count" -l "$size" \
        -f from@example.com -t to@example.com "127.0.0.1:$port" >/dev/null
    e=$(bench_now)
    bench_rate "$count" "$s" "$e"
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

# Machine facts, one line.
bench_machine() {
    printf 'nproc=%s cpu="%s" kernel=%s load="%s"\n' "$(nproc)" \
        "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')" \
        "$(uname -r)" "$(cut -d' ' -f1-3 /proc/loadavg)"
}

# bench_start_postgres: a throwaway PostgreSQL cluster in a folder of its own (Debian's
# postgresql, installed when absent; initdb and the server as the postgres user
# when run as root) on a free loopback port, durability as SQLite's WAL with
# synchronous = NORMAL (fsync on, synchronous_commit off: a killed server loses
# nothing committed, a power cut may lose the last commits). Sets PG_PORT;
# stopped by bench_cleanup. BENCH_PG_OPTS adds server options (e.g.
# "-c shared_preload_libraries=pg_stat_statements").
bench_start_postgres() {
    local dir bin pre=()
    bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
    if [ -z "$bin" ]; then
        [ "$(id -u)" = 0 ] || { bench_log "install postgresql (apt-get install postgresql)"; return 1; }
        bench_log "installing postgresql from Debian"
        export DEBIAN_FRONTEND=noninteractive
        timeout 300 apt-get update -qq >/dev/null
        timeout 600 apt-get install -y -qq postgresql >/dev/null
        bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
    fi
    # Not under the bench's private folder: the server runs as another user.
    dir=$(mktemp -d "${TMPDIR:-/tmp}/digestif-bench-pg.XXXXXX")
    BENCH_PG_STOP="rm -rf '$dir'"
    if [ "$(id -u)" = 0 ]; then
        chown postgres:postgres "$dir"
        pre=(runuser -u postgres --)
    fi
    "${pre[@]}" "$bin/initdb" -A trust -U postgres -E UTF8 --locale=C -D "$dir/data" >"$dir/initdb.log" 2>&1 ||
        { bench_log "initdb failed: $(tail -n 5 "$dir/initdb.log")"; return 1; }
    PG_PORT=$(bench_free_port)
    "${pre[@]}" "$bin/pg_ctl" start -w -t 60 -D "$dir/data" -l "$dir/log" \
        -o "-k $dir -p $PG_PORT -c listen_addresses=127.0.0.1 -c synchronous_commit=off -c max_connections=200 -c shared_buffers=256MB ${BENCH_PG_OPTS:-}" \
        >/dev/null 2>&1 || { bench_log "pg_ctl start failed: $(tail -n 5 "$dir/log")"; return 1; }
    BENCH_PG_STOP="${pre[*]} '$bin/pg_ctl' stop -m fast -D '$dir/data'; rm -rf '$dir'"
    BENCH_PG_DATA=$dir/data
}

# bench_pg_cpu: CPU seconds (user + system) the bench cluster's processes have used
# so far: the postmaster, its live children and those it has reaped.
bench_pg_cpu() {
    local pm
    pm=$(head -n 1 "$BENCH_PG_DATA/postmaster.pid")
    { echo "$pm"; ps -o pid= --ppid "$pm"; } | while read -r p; do
        awk '{ print $14 + $15 + $16 + $17 }' "/proc/$p/stat" 2>/dev/null || true
    done | awk -v hz="$(getconf CLK_TCK)" '{ s += $1 } END { printf "%.2f", s / hz }'
}

# bench_psql SQL: runs SQL on the bench cluster's postgres database.
bench_psql() {
    bench_psql_out "$1" >/dev/null
}

# bench_psql_out SQL [DATABASE]: runs SQL on the bench cluster (the postgres
# database by default) and prints the result, unaligned, columns split by "|".
bench_psql_out() {
    local bin
    bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
    "$bin/psql" -q -X -A -t -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" -U postgres \
        -d "${2:-postgres}" -c "$1"
}

# bench_cpu_of PID: CPU seconds (user + system) process PID has used so far.
bench_cpu_of() {
    awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / hz }' "/proc/$1/stat" 2>/dev/null || echo 0
}
