#!/usr/bin/env bash
# Runs digestif's whole test suite on a fresh machine: installs the real parts
# the tests talk to (an SMTP server, Postfix, Dovecot, a headless browser, PostgreSQL), then `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
# Postfix: the real MTA that returns a refused message as a DSN (tests/it/bounces.rs).
[ -x /usr/sbin/postfix ] || need_apt+=(postfix)
# PostgreSQL: the store tests start a throwaway cluster of their own (initdb, pg_ctl).
if ! command -v pg_ctl >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; then
    need_apt+=(postgresql)
fi
# Dovecot: the real IMAP and POP3 server whose mailbox `serve` and `bounces --mailbox` read.
[ -x /usr/sbin/dovecot ] || need_apt+=(dovecot-imapd)
[ -x /usr/lib/dovecot/pop3 ] || need_apt+=(dovecot-pop3d)
# openssl: makes and signs with the stand-in SNS certificate of the SES webhook test.
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
if [ ${#need_apt[@]} -gt 0 ]; then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
    else
        echo "test.sh: please install: ${need_apt[*]} (browser, Postfix and Dovecot tests will be skipped; PostgreSQL tests fail)" >&2
    fi
fi

# aiosmtpd: the real SMTP server the delivery tests send through.
if ! python3 -c 'import aiosmtpd' >/dev/null 2>&1; then
    python3 -m pip install --quiet --disable-pip-version-check aiosmtpd
fi
# dkimpy (with PyNaCl for Ed25519): the independent DKIM verifier of the signing tests.
if ! python3 -c 'import dkim, nacl' >/dev/null 2>&1; then
    python3 -m pip install --quiet --disable-pip-version-check dkimpy pynacl
fi

# Most tests wait on a real server or process (PostgreSQL, Postfix, Dovecot, aiosmtpd,
# chromium, digestif itself) far longer than they compute: run four at a time per core
# rather than one (at most 16), so the waits overlap (BENCHMARKS.md §13). A
# RUST_TEST_THREADS (or --test-threads) of the caller's wins.
if [ -z "${RUST_TEST_THREADS:-}" ]; then
    cores=$(nproc 2>/dev/null || echo 2)
    threads=$((cores * 4))
    [ "$threads" -le 16 ] || threads=16
    export RUST_TEST_THREADS=$threads
fi
cargo test --all-targets "$@"
