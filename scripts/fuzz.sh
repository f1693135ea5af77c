#!/bin/sh
# Coverage-guided fuzzing of the parsers that read outside input: feeds, one
# subscribers CSV row, link tokens, the config file, an issue's editor.toml,
# an SMTP server's replies.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]     default: 600 s each, every target
#
# Needs the nightly toolchain (rustup toolchain install nightly) and cargo-fuzz
# (installed here if missing). Each target starts from fuzz/seeds/<target> and
# keeps what it learns in fuzz/corpus/<target>; a crashing input is written to
# fuzz/artifacts/<target>/ and the script exits 1: copy it into
# fuzz/seeds/<target>/ once fixed, so that every later run replays it.
# FUZZ_FLAGS is passed to `cargo fuzz run` (e.g. FUZZ_FLAGS=-O: no debug
# assertions, a faster build and more runs per second).
set -eu
cd "$(dirname "$0")/.."
SECONDS_EACH=${1:-600}
[ $# -gt 0 ] && shift
TARGETS=${*:-"feed csv_row token config editor smtp_reply"}
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
status=0
for t in $TARGETS; do
    mkdir -p "fuzz/corpus/$t"
    echo "== $t: ${SECONDS_EACH}s"
    # shellcheck disable=SC2086
    if ! cargo +nightly fuzz run ${FUZZ_FLAGS:-} "$t" "fuzz/corpus/$t" "fuzz/seeds/$t" -- \
        -max_total_time="$SECONDS_EACH" -max_len=65536 -timeout=10 -print_final_stats=1; then
        echo "== $t: CRASH (see fuzz/artifacts/$t/)"
        status=1
    fi
done
exit $status
