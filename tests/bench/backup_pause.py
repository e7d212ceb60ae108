#!/usr/bin/env python3
"""The longest wait a committing client sees during an initial mirror of N
conversations, with `dexsync backup` running back to back beside it (1) or
not (0).  Run after bench.py, with its nginx serving WORK on PORT:

    python3 tests/bench/backup_pause.py BUILD WORK PORT N 0|1
"""
import os, sqlite3, subprocess, sys, threading, time, re
B, work, port = os.path.abspath(sys.argv[1]), sys.argv[2], int(sys.argv[3])
n, with_backup = int(sys.argv[4]), sys.argv[5] == "1"
db = work + "/bp.db"
def conf(base):
    p = work + "/bp.conf"
    open(p, "w").write('database = "%s"\nlog-level = info\napi { base-url = "http://127.0.0.1:%d/%s/v1" api-key = "bench" max-rate = 0 }\nsync { fetch-details = false }\n' % (db, port, base))
    os.chmod(p, 0o600)
    return p
for f in os.listdir(work):
    if f.startswith("bp.db") or f.startswith("bp-copy"):
        os.remove(os.path.join(work, f))
subprocess.run([B + "/dexsyncd", "-f", conf("empty"), "-1"], check=True, capture_output=True)
stop = threading.Event(); waits = []; backups = []
def probe():
    con = sqlite3.connect(db, timeout=120, isolation_level=None)
    while not stop.is_set():
        t = time.time(); con.execute("BEGIN IMMEDIATE"); con.execute("COMMIT"); waits.append(time.time() - t); time.sleep(0.02)
def backup():
    k = 0
    while not stop.is_set():
        out = "%s/bp-copy-%d.db" % (work, k); k += 1
        t = time.time()
        p = subprocess.run([B + "/dexsync", "-d", db, "backup", out], capture_output=True, text=True)
        backups.append((time.time() - t, p.returncode, p.stderr.strip()[-200:]))
        if os.path.exists(out): os.remove(out)
ths = [threading.Thread(target=probe)] + ([threading.Thread(target=backup)] if with_backup else [])
for th in ths: th.start()
t = time.time()
p = subprocess.run([B + "/dexsyncd", "-f", conf("n%d" % n), "-1"], capture_output=True, text=True)
wall = time.time() - t
stop.set()
for th in ths: th.join()
m = re.search(r"walk completed: .* ([0-9.]+) s$", p.stderr, re.M)
ws = sorted(waits)
print("N=%d backups=%s walk %.2f s (log %s s), probe commits %d, longest wait %.2f s, p99 %.3f s" % (n, with_backup, wall, m.group(1) if m else "?", len(ws), ws[-1], ws[int(len(ws) * 0.99)]))
if with_backup:
    print("backups: %d, each %.1f-%.1f s, failures %s" % (len(backups), min(b[0] for b in backups), max(b[0] for b in backups), [b for b in backups if b[1]][:2]))
