#!/usr/bin/env bash
# The wire's reference: Postfix's smtp-source into smtp-sink on loopback.
# Usage: bench/baseline.sh [--quick]
# Prints one line per case: sessions, message size, mode, count, msg/s.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
trap bench_cleanup EXIT

scale=1
[ "${1:-}" = "--quick" ] && scale=10

bench_ensure_tools
BENCH_TMP=$(mktemp -d)
port=$(bench_free_port)
bench_start_sink "$port" "$BENCH_TMP/sink.out"
bench_machine

printf '%-9s %-7s %-24s %8s %8s\n' sessions size mode count msg/s
# sessions size count
while read -r sessions size count; do
    count=$((count / scale))
    for mode in reuse new; do
        flags=(-d)
        label="reuse (-d)"
        if [ "$mode" = new ]; then flags=(); label="new connection/msg"; fi
        rate=$(bench_smtp_source "$sessions" "$count" "$size" "$port" "${flags[@]}")
        printf '%-9s %-7s %-24s %8s %8s\n' "$sessions" "$size" "$label" "$count" "$rate"
    done
done <<'CASES'
1 40000 6000
4 40000 20000
16 40000 20000
32 7600 60000
CASES
