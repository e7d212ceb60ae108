#!/usr/bin/env bash
# The benchmark in one command, from a fresh clone on Debian 12:
#   bash tests/bench/run.sh [--sizes 100000,1000000] [--runs 3]
# Installs what is missing (nginx, curl, GNU time and the build packages),
# builds into _build/ if needed, and prints the table.
set -eu
cd "$(dirname "$0")/../.."
. .ci/deps nginx-light curl time
if [ ! -x _build/dexsyncd ]; then
	autoreconf -fi >/dev/null 2>&1
	mkdir -p _build
	(cd _build && ../configure -q && make -j2 >/dev/null)
fi
exec python3 tests/bench/bench.py _build "$@"
