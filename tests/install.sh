#!/bin/sh
# make install into a DESTDIR: the file list, the example config kept over
# an edited one, and the unit judged by systemd-analyze (when it exists).
# Speaks TAP.
set -u
build=${DEXSYNC_BUILDDIR:?}
src=${DEXSYNC_SRCDIR:?}
dest=$(mktemp -d /tmp/dexsync-install-XXXXXX)
trap 'rm -rf "$dest"' EXIT
n=0
ok() { n=$((n + 1)); echo "ok $n - $1"; }
not_ok() { n=$((n + 1)); echo "not ok $n - $1"; shift; for l in "$@"; do echo "# $l"; done; }
check() { desc=$1; shift; if "$@"; then ok "$desc"; else not_ok "$desc"; fi; }
one() { [ "$(find "$dest" -path "$1" | wc -l)" -eq 1 ]; }

echo "1..11"
${MAKE:-make} -s -C "$build" install DESTDIR="$dest" >"$dest.log" 2>&1
check "make install DESTDIR= succeeds" [ $? -eq 0 ]
check "dexsyncd in sbindir" one '*/sbin/dexsyncd'
check "dexsync in bindir" one '*/bin/dexsync'
check "the example config in sysconfdir" one '*/etc/dexsyncd.conf'
check "the unit in the systemd unit dir" one '*/systemd/system/dexsyncd.service'
check "sysusers and tmpfiles snippets" sh -c "[ \$(find '$dest' -path '*/sysusers.d/dexsyncd.conf' -o -path '*/tmpfiles.d/dexsyncd.conf' | wc -l) -eq 2 ]"
check "the three manual pages" sh -c "[ \$(find '$dest' -name dexsyncd.8 -o -name dexsync.1 -o -name dexsyncd.conf.5 | wc -l) -eq 3 ]"

conf=$(find "$dest" -path '*/etc/dexsyncd.conf')
echo "# edited by the operator" >> "$conf"
${MAKE:-make} -s -C "$build" install DESTDIR="$dest" >>"$dest.log" 2>&1
check "a second install keeps an edited config" grep -q "edited by the operator" "$conf"
rm -f "$dest.log"

unit="$build/systemd/dexsyncd.service"
if [ -z "${SYSTEMD_ANALYZE:-}" ]; then
	for i in 1 2 3; do n=$((n + 1)); echo "ok $n # SKIP systemd-analyze not found"; done
	exit 0
fi
out=$($SYSTEMD_ANALYZE security --offline=true "$unit" 2>&1)
score=$(echo "$out" | sed -n 's/.*Overall exposure level for dexsyncd.service: \([0-9.]*\).*/\1/p')
check "systemd-analyze security: exposure $score <= 1.5" awk -v s="$score" 'BEGIN { exit !(s != "" && s <= 1.5) }'
# verify: nothing but the binary, which is not installed on this machine;
# the manual pages of Documentation= are looked up where we installed them.
mandir=$(dirname "$(dirname "$(find "$dest" -name dexsyncd.8)")")
warn=$(MANPATH="$mandir" $SYSTEMD_ANALYZE verify "$unit" 2>&1 | grep -v 'is not executable: No such file')
if [ -z "$warn" ]; then ok "systemd-analyze verify: no warnings"; else not_ok "systemd-analyze verify: no warnings" "$warn"; fi
grep -q '^ExecStart=/.*/dexsyncd -n -f /.*/dexsyncd.conf$' "$unit"
check "the unit names the real paths" [ $? -eq 0 ]
