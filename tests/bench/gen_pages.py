#!/usr/bin/env python3
"""Write N conversations as Dexra list pages of 100: DIR/p0.json, p1.json, ...
Page k's meta.next_cursor is "p(k+1)", so a web server can map the cursor
to a file name.  Sizes are like a support desk's: subjects of a few words,
last messages of a few bytes to 2 KB, unicode and JSON escapes throughout.

    gen_pages.py N DIR [K]

With K (1..10), the same pages after K walks of 10 % changes each: the
conversations whose position i has i % 10 < K have the next status, and
one in three of them a new last message (so the K-th walk over them, after
the (K-1)-th, finds exactly 10 % changed)."""
import json
import os
import random
import sys

WORDS = ("hello", "please", "help", "account", "invoice", "thanks", "error", "since", "yesterday",
         "login", "page", "crash", "refund", "order", "shipping", "password", "ünïcødé", "naïve",
         "€", "日本語", "quote\"d", "back\\slash", "tab\there", "line\nbreak", "emoji 🚚")
STATUSES = ("open", "closed", "snoozed")


def main():
    n, out = int(sys.argv[1]), sys.argv[2]
    changed = int(sys.argv[3]) if len(sys.argv) > 3 else 0
    os.makedirs(out, exist_ok=True)
    rng = random.Random(42)
    pages = (n + 99) // 100
    for p in range(pages):
        data = []
        for i in range(p * 100, min(n, p * 100 + 100)):
            words = min(int(rng.expovariate(1 / 22)) + 2, 300)   # mean ~ 150 bytes, up to ~2 KB
            data.append({
                "id": "conv_%08x" % (i * 2654435761 % (1 << 32)),
                "status": STATUSES[rng.randrange(3)],
                "subject": " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 8))).capitalize(),
                "created_at": "2026-%02d-%02dT%02d:%02d:%02dZ" % (rng.randint(1, 10), rng.randint(1, 28),
                                                                  rng.randrange(24), rng.randrange(60),
                                                                  rng.randrange(60)),
                "user_id": "u_%d" % rng.randrange(50000),
                "last_message": {"id": "msg_%d" % (i * 7 + 1),
                                 "text": " ".join(rng.choice(WORDS) for _ in range(words))[:2048]},
            })
        for k, c in enumerate(data):
            i = p * 100 + k
            if i % 10 < changed:
                c["status"] = STATUSES[(STATUSES.index(c["status"]) + 1) % 3]
                if i % 3 == 0:
                    c["last_message"]["id"] += "_v2"
        meta = {"total": n, "next_cursor": "p%d" % (p + 1) if p + 1 < pages else None}
        with open(os.path.join(out, "p%d.json" % p), "w") as f:
            json.dump({"data": data, "meta": meta}, f, ensure_ascii=False, separators=(",", ":"))


if __name__ == "__main__":
    main()
