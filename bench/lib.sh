#!/usr/bin/env bash
# Shared helpers for the benchmark scripts: tools, free ports, smtp-sink, timing.
# Sourced, not run. Every process started here is recorded in BENCH_PIDS and
# stopped by bench_cleanup (installed as an EXIT trap by the caller).

SMTP_SINK=/usr/sbin/smtp-sink
SMTP_SOURCE=/usr/sbin/smtp-source
BENCH_PIDS=()

bench_log() { printf '%s\n' "$*" >&2; }

# Installs Postfix's smtp-sink/smtp-source and GNU time from Debian when absent.
# Postfix's tools run without the mail system being started.
bench_ensure_tools() {
    local need=()
    [ -x "$SMTP_SINK" ] && [ -x "$SMTP_SOURCE" ] || need+=(postfix)
    [ -x /usr/bin/time ] || need+=(time)
    command -v python3 >/dev/null || need+=(python3)
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
    local i
    for i in $(seq 1 50); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    bench_log "smtp-sink did not start on port $port: $(cat "$out")"
    return 1
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

# Machine facts, one line.
bench_machine() {
    printf 'nproc=%s cpu="%s" kernel=%s load="%s"\n' "$(nproc)" \
        "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')" \
        "$(uname -r)" "$(cut -d' ' -f1-3 /proc/loadavg)"
}
