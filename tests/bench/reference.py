#!/usr/bin/env python3
"""The reference: what a user would write with the standard library.
http.client over one keep-alive connection, json, sqlite3, an upsert per page
in one transaction, rows that did not change left alone.

    reference.py BASE_URL DB"""
import http.client
import json
import sqlite3
import sys
import urllib.parse


def main():
    url = urllib.parse.urlsplit(sys.argv[1])
    conn = http.client.HTTPConnection(url.hostname, url.port)
    db = sqlite3.connect(sys.argv[2])
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = NORMAL")
    db.execute("CREATE TABLE IF NOT EXISTS conversations(id TEXT PRIMARY KEY, status TEXT, subject TEXT,"
               " created_at TEXT, last_message_id TEXT, last_message_text TEXT, raw TEXT)")
    cursor = None
    while True:
        path = url.path + "/conversations?limit=100" + ("&cursor=" + urllib.parse.quote(cursor) if cursor else "")
        conn.request("GET", path, headers={"Authorization": "Bearer bench"})
        page = json.loads(conn.getresponse().read())
        with db:
            db.executemany(
                "INSERT INTO conversations VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET"
                " status = excluded.status, subject = excluded.subject, created_at = excluded.created_at,"
                " last_message_id = excluded.last_message_id, last_message_text = excluded.last_message_text,"
                " raw = excluded.raw WHERE raw IS NOT excluded.raw",
                [(c["id"], c.get("status"), c.get("subject"), c.get("created_at"),
                  (c.get("last_message") or {}).get("id"), (c.get("last_message") or {}).get("text"),
                  json.dumps(c, separators=(",", ":"), ensure_ascii=False)) for c in page["data"]])
        cursor = (page.get("meta") or {}).get("next_cursor")
        if not cursor:
            break
    db.close()


if __name__ == "__main__":
    main()
