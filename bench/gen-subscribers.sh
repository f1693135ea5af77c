#!/usr/bin/env bash
# Writes N subscribers as CSV to stdout, streaming (a million rows in about a second).
# Usage: bench/gen-subscribers.sh N > subscribers.csv
# Rows cycle through both locales, every category and names present or absent,
# so that a send renders every variant and personalises every kind of greeting.
set -euo pipefail
n=${1:?usage: gen-subscribers.sh N}
LC_ALL=C awk -v n="$n" 'BEGIN {
    print "email,name,locale,categories"
    split("Monde|Économie|Culture|Sport|Monde;Sport|", cats, "|")
    for (i = 1; i <= n; i++) {
        name = (i % 5 == 0) ? "" : "Reader " i
        locale = (i % 3 == 0) ? "en" : "fr"
        printf "reader%d@bench.example.com,%s,%s,%s\n", i, name, locale, cats[i % 6 + 1]
    }
}'
