#!/usr/bin/env bash
# The demo: install what is missing, build, start the bundled fake Dexra on
# 127.0.0.1 with sample data, mirror it with one `dexsyncd -1`, queue and
# deliver a few writes, and show what the mirror holds.  Everything lives in
# ./demo/ and the fake server stops by itself.
set -eu
cd "$(dirname "$0")"
. .ci/deps

if [ ! -x _build/dexsyncd ] || [ ! -x _build/dexsync ]; then
	echo "== building"
	autoreconf -fi >/dev/null 2>&1
	mkdir -p _build
	(cd _build && ../configure -q && make -j2 >/dev/null)
fi
rm -rf demo && mkdir demo
key="demo-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"

echo "== starting the fake Dexra API with 500 conversations"
python3 tests/fakedexra.py --conversations 500 --key "$key" --port-file demo/url --lifetime 120 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 50); do [ -s demo/url ] && break; sleep 0.1; done

umask 077
cat > demo/dexsyncd.conf <<CONF
database = "$PWD/demo/mirror.db"
api {
    base-url = "$(cat demo/url)"
    api-key  = "$key"
    max-rate = 100
}
sync {
    max-details = 50
}
CONF

echo "== dexsyncd -n -1: one walk and one outbox drain"
_build/dexsyncd -f demo/dexsyncd.conf -n -1

echo "== queuing writes with dexsync"
dexsync() { _build/dexsync -f demo/dexsyncd.conf "$@"; }
dexsync send conv_0000001 "Thanks, the refund is on its way."
echo "Internal: customer is on the enterprise plan" | dexsync send conv_0000001 --note
dexsync update-user u_42 --email jane@example.com plan=enterprise ltv=1200
new=$(dexsync new-conversation u_42 --subject "Welcome aboard" --tag onboarding)
dexsync send "$new" "Hello Jane, welcome!"
dexsync outbox

echo "== dexsyncd -n -1 again: the outbox is delivered"
_build/dexsyncd -f demo/dexsyncd.conf -n -1
dexsync outbox

echo "== the mirror, with sqlite3"
sqlite3 -header -column demo/mirror.db <<'SQL'
SELECT * FROM report_by_status;
SELECT id, status, substr(subject, 1, 30) AS subject, created_at
FROM conversations ORDER BY created_at DESC LIMIT 5;
SELECT id, conversation_id, origin, substr(text, 1, 30) AS text
FROM messages WHERE origin = 'outbox';
SELECT id, email, custom_attributes FROM users;
SELECT * FROM report_sync_history;
SQL
echo "== done: the mirror is demo/mirror.db; try: sqlite3 demo/mirror.db"
