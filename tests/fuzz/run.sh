#!/bin/sh
# Build the libFuzzer harnesses with clang (ASan + UBSan) and run each (or
# the ones named: page conf retry_after attribute escape search) for
# SECONDS (default 30) from its seed corpus.  A crash fails the run and
# leaves the input in tests/fuzz/crashes/; make it a regression test.
#
#   tests/fuzz/run.sh BUILD_DIR [SECONDS [HARNESS...]]
set -eu
build=$(cd "${1:?usage: run.sh BUILD_DIR [SECONDS]}" && pwd)
seconds=${2:-30}
shift $(($# < 2 ? $# : 2))
harnesses=${*:-page conf retry_after attribute escape search}
here=$(cd "$(dirname "$0")" && pwd)
src=$here/../../src
out=$(mktemp -d /tmp/dexsync-fuzz-XXXXXX)
trap 'rm -rf "$out"' EXIT
CC=${CC:-clang}
flags="-g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -D_GNU_SOURCE
	-I$build -I$build/src -I$src -DSYSCONFDIR=\"/etc\" -DLOCALSTATEDIR=\"/var\""
libs=$(pkg-config --cflags --libs libcurl jansson libconfuse sqlite3)

build_one() {	# name sources...
	name=$1; shift
	$CC $flags -o "$out/$name" "$here/$name.c" "$@" $libs
}
build_one fuzz_page "$src/page.c"
build_one fuzz_conf "$src/conf.c" "$src/confurl.c" "$src/log.c" "$src/escape.c"
build_one fuzz_retry_after "$src/api.c" "$src/backoff.c" "$src/log.c" "$src/notify.c" "$src/escape.c" \
	"$src/metrics.c"
build_one fuzz_attribute "$src/queue.c" "$src/escape.c"
build_one fuzz_escape "$src/escape.c"
build_one fuzz_search "$src/search.c" "$src/db.c" "$src/ftsbuild.c" "$src/lock.c" "$src/log.c" "$src/escape.c" "$src/report.c" \
	$(pkg-config --libs sqlite3) -lm

mkdir -p "$here/crashes"
status=0
for t in $harnesses; do
	work="$out/corpus-$t"
	mkdir -p "$work"
	cp "$here/corpus/$t/"* "$work/" 2>/dev/null || true
	if "$out/fuzz_$t" -max_total_time="$seconds" -max_len=65536 -timeout=10 -rss_limit_mb=2048 \
		-artifact_prefix="$here/crashes/$t-" -print_final_stats=1 "$work" >"$out/$t.log" 2>&1; then
		execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$out/$t.log")
		cov=$(grep -o 'cov: [0-9]*' "$out/$t.log" | tail -n 1)
		echo "fuzz_$t: ok, $execs runs in ${seconds} s, $cov, corpus $(ls "$work" | wc -l)"
	else
		echo "fuzz_$t: FAILED"; tail -n 40 "$out/$t.log"; status=1
	fi
done
exit $status
