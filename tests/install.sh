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

echo "1..18"
${MAKE:-make} -s -C "$build" install DESTDIR="$dest" >"$dest.log" 2>&1
check "make install DESTDIR= succeeds" [ $? -eq 0 ]
check "dexsyncd in sbindir" one '*/sbin/dexsyncd'
check "dexsync in bindir" one '*/bin/dexsync'
check "the example config in sysconfdir" one '*/etc/dexsyncd.conf'
check "the unit in the systemd unit dir" one '*/systemd/system/dexsyncd.service'
check "the template unit in the systemd unit dir" one '*/systemd/system/dexsyncd@.service'
check "sysusers and tmpfiles snippets" sh -c "[ \$(find '$dest' -path '*/sysusers.d/dexsyncd.conf' -o -path '*/tmpfiles.d/dexsyncd.conf' | wc -l) -eq 2 ]"
sysusers=$(find "$dest" -path '*/sysusers.d/dexsyncd.conf')
check "sysusers.d: the group dexsync-read" grep -q '^g dexsync-read ' "$sysusers"
tmpfiles=$(find "$dest" -path '*/tmpfiles.d/dexsyncd.conf')
check "tmpfiles.d: dexsync-read may read the state directory, and what is made in it" \
	grep -q '^a+ /var/lib/dexsyncd .*group:dexsync-read:r-x,default:group:dexsync-read:r-x' "$tmpfiles"
check "the three manual pages" sh -c "[ \$(find '$dest' -name dexsyncd.8 -o -name dexsync.1 -o -name dexsyncd.conf.5 | wc -l) -eq 3 ]"

conf=$(find "$dest" -path '*/etc/dexsyncd.conf')
echo "# edited by the operator" >> "$conf"
${MAKE:-make} -s -C "$build" install DESTDIR="$dest" >>"$dest.log" 2>&1
check "a second install keeps an edited config" grep -q "edited by the operator" "$conf"
rm -f "$dest.log"

template=$(find "$dest" -path '*/systemd/system/dexsyncd@.service')
# One config, state directory and key per instance, and nothing shared.
check "the template: config, state directory and key per instance" sh -c "
	grep -q '^ExecStart=/.*/dexsyncd -n -f /.*/dexsyncd/%i.conf\$' '$template' &&
	grep -q '^StateDirectory=dexsyncd/%i\$' '$template' &&
	grep -q '^LoadCredential=api-key:/.*/dexsyncd/%i.api-key\$' '$template' &&
	[ \$(grep -c '^StateDirectory=\|^LoadCredential=\|^ExecStart=' '$template') -eq 3 ]"

unit="$build/systemd/dexsyncd.service"
if [ -z "${SYSTEMD_ANALYZE:-}" ]; then
	for i in 1 2 3 4 5 6; do n=$((n + 1)); echo "ok $n # SKIP systemd-analyze not found"; done
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

# The template, as two instances: both verified and scored (exposure at
# most 1.2, as hardened as the plain unit).
units=$(mktemp -d /tmp/dexsync-units-XXXXXX)
cp "$template" "$units/"
for i in alpha beta; do
	ln -s dexsyncd@.service "$units/dexsyncd@$i.service"
	warn=$(MANPATH="$mandir" $SYSTEMD_ANALYZE verify "$units/dexsyncd@$i.service" 2>&1 | grep -v 'is not executable: No such file')
	if [ -z "$warn" ]; then ok "systemd-analyze verify dexsyncd@$i: no warnings"; else not_ok "systemd-analyze verify dexsyncd@$i: no warnings" "$warn"; fi
done
out=$($SYSTEMD_ANALYZE security --offline=true "$units/dexsyncd@alpha.service" 2>&1)
score=$(echo "$out" | sed -n 's/.*Overall exposure level for dexsyncd@alpha.service: \([0-9.]*\).*/\1/p')
check "systemd-analyze security dexsyncd@alpha: exposure $score <= 1.2" awk -v s="$score" 'BEGIN { exit !(s != "" && s <= 1.2) }'
rm -rf "$units"
