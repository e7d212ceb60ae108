#!/usr/bin/env python3
"""A fake Dexra API v1 for dexsync's tests and demo (python3 standard library only).

It serves the five endpoints of dexra-api.md on 127.0.0.1 with Bearer checks,
opaque cursors, limit (default 20, max 100) and the status filter, over a
seeded dataset of any size.  Tests drive it from the same process:

    srv = FakeDexra(conversations=2500).start()
    srv.fault("status", code=503, count=2)       # the next two requests fail
    ...
    srv.requests                                 # every request it saw
    srv.stop()

Faults are queued and each matches the next requests whose path starts with
its prefix: status (any code, optional Retry-After), slow (sleep before
answering), trickle (send the body a byte at a time), malformed (this body
instead), drop (close without answering), reset (close half-way through the
body), ack_lost (apply a write, then answer 500 or drop).  Random faults for
soak tests: srv.random_faults = {"status500": 0.2, "status429": 0.1}.

Switches for the list, all off by default: short_pages = N (at most N items a
page, whatever limit asks), no_total (meta without "total"), claimed_total = N
(meta.total says N), recycle (fresh cursors forever, going round the same
items again), nul_strings (each listed subject and last message text holds a
\u0000; srv.listed(c) is the item as served); loop_cursor and endless as below.
srv.create_status is the status POST /conversations gives ("open").

History: srv.walk_changes = {W: {conversation id: {field: value, ...}}} changes
those conversations just before walk W (1, 2, ...) lists its first page; walks
are counted by first-page requests (no cursor).  Each change applied is in
srv.changes_applied as (walk, id, fields, time.time()); a field "deleted"
set to True removes the conversation, False brings it back as it was.

Run alone (the demo): fakedexra.py --conversations 200 --key K --port-file F;
it stops by itself after --lifetime seconds.
"""

import argparse
import base64
import http.server
import json
import random
import socket
import sys
import threading
import time
import urllib.parse

STATUSES = ("open", "closed", "snoozed")
SUBJECTS = ("Billing question", "Cannot log in", "Feature request: dark mode",
            "Refund for order #{n}", "Invoice {n} is wrong", "Ünïcødé — ça marche?",
            "Password reset \"urgent\"", "API rate limits", "Export to CSV\\Excel",
            "Shipping delay 🚚")
WORDS = ("hello", "please", "help", "account", "invoice", "thanks", "error", "since",
         "yesterday", "login", "page", "crash", "ünïcødé", "naïve", "€", "日本語",
         "line\nbreak", "tab\there", "quote\"d", "back\\slash")
BASE_TIME = 1767225600  # 2026-01-01T00:00:00Z: the dataset does not move with the clock


def iso(ts):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def make_conversation(n, rng):
    """Conversation n of the seeded dataset."""
    text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 40)))
    return {
        "id": "conv_%07d" % n,
        "status": STATUSES[rng.randrange(3)],
        "subject": rng.choice(SUBJECTS).format(n=n),
        "created_at": iso(BASE_TIME - rng.randrange(90 * 86400)),
        "user_id": "u_%d" % (n % 997),
        "last_message": {"id": "msg_%07d_1" % n, "text": text},
    }


class Fault:
    def __init__(self, kind, count, prefix, method, opts):
        self.kind, self.count, self.prefix, self.method, self.opts = kind, count, prefix, method, opts

    def matches(self, method, path):
        return path.startswith(self.prefix) and (self.method is None or self.method == method)


class FakeDexra:
    def __init__(self, conversations=0, seed=1, key="dx_test_k3y_SECRET_7f3a9", page_default=20):
        self.key = key
        self.page_default = page_default
        self.lock = threading.RLock()
        rng = random.Random(seed)
        self.convs = {}
        for n in range(1, conversations + 1):
            c = make_conversation(n, rng)
            self.convs[c["id"]] = c
        self.users = {}
        self.messages = []          # every message applied, with its Idempotency-Key
        self.created = []           # every conversation created, likewise
        self.patches = []           # every user patch applied, likewise
        self.requests = []          # method, path, query, headers, body, time, conn
        self.connections = set()
        self.faults = []
        self.random_faults = {}
        self.rng = random.Random(seed + 1)
        self.epoch = 0              # cursors of an older epoch are rejected
        self.loop_cursor = False    # answer every page with the same next_cursor
        self.endless = False        # answer every page with a new cursor, forever
        self.huge_cursor = 0        # pad cursors to this many bytes
        self.short_pages = 0        # at most this many items a page (0: limit)
        self.no_total = False       # leave meta.total out
        self.claimed_total = None   # meta.total says this instead
        self.recycle = False        # fresh cursors forever, round the same items
        self.nul_strings = False    # a \u0000 in each subject and message text
        self.on_page = None         # callback(server, page_number) between pages
        self.write_delay = 0        # seconds each POST/PATCH takes
        self.on_write = None        # callback(server, headers) before a POST/PATCH is applied
        self.on_written = None      # callback(server, code, answer) after it, before the answer goes
        self.create_status = "open"  # the status of a conversation POST /conversations makes
        self.next_id = 1
        self.pages_served = 0
        self.walk_changes = {}      # walk number -> {id: {field: value}}
        self.walks_started = 0      # first-page requests served
        self.changes_applied = []   # (walk, id, fields, time)
        self.deleted = {}           # id -> conversation, removed by walk_changes
        self.httpd = None

    # ---- the dataset -------------------------------------------------
    def add(self, n_or_obj):
        with self.lock:
            c = n_or_obj if isinstance(n_or_obj, dict) else make_conversation(n_or_obj, random.Random(n_or_obj))
            self.convs[c["id"]] = c
            return c

    def change(self, cid, **fields):
        with self.lock:
            self.convs[cid].update(fields)

    def delete(self, cid):
        with self.lock:
            del self.convs[cid]

    def listed(self, c):
        """Conversation c as the list serves it (nul_strings)."""
        if not self.nul_strings:
            return c
        c = json.loads(json.dumps(c))
        if isinstance(c.get("subject"), str):
            c["subject"] = c["subject"][:3] + "\x00" + c["subject"][3:]
        if isinstance(c.get("last_message"), dict) and isinstance(c["last_message"].get("text"), str):
            c["last_message"]["text"] = "\x00" + c["last_message"]["text"]
        return c

    def start_walk(self):
        """A first page is asked for: apply walk_changes for this walk."""
        with self.lock:
            self.walks_started += 1
            for cid, fields in self.walk_changes.get(self.walks_started, {}).items():
                fields = dict(fields)
                gone = fields.pop("deleted", None)
                if gone is False and cid in self.deleted:
                    self.convs[cid] = self.deleted.pop(cid)
                if fields:
                    self.convs[cid].update(fields)
                if gone is True:
                    self.deleted[cid] = self.convs.pop(cid)
                self.changes_applied.append((self.walks_started, cid, dict(self.walk_changes[self.walks_started][cid]),
                                             time.time()))

    def expire_cursors(self):
        with self.lock:
            self.epoch += 1

    def fault(self, kind, count=1, prefix="/", method=None, **opts):
        with self.lock:
            self.faults.append(Fault(kind, count, prefix, method, opts))

    def clear_faults(self):
        with self.lock:
            self.faults.clear()
            self.random_faults = {}

    # ---- cursors: opaque to the client --------------------------------
    def encode_cursor(self, offset, status):
        raw = json.dumps({"o": offset, "s": status, "e": self.epoch})
        if self.huge_cursor:
            raw = json.dumps({"o": offset, "s": status, "e": self.epoch, "p": "x" * self.huge_cursor})
        return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")

    def decode_cursor(self, cursor, status):
        try:
            pad = "=" * (-len(cursor) % 4)
            d = json.loads(base64.urlsafe_b64decode(cursor + pad))
            if d["e"] != self.epoch or d["s"] != status or not isinstance(d["o"], int):
                return None
            return d["o"]
        except Exception:
            return None

    # ---- lifecycle -----------------------------------------------------
    def start(self, port=0):
        handler = type("Handler", (Handler,), {"srv": self})
        self.httpd = QuietServer(("127.0.0.1", port), handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        return self

    @property
    def url(self):
        return "http://127.0.0.1:%d/v1" % self.httpd.server_address[1]

    def stop(self):
        if self.httpd:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.httpd = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


class QuietServer(http.server.ThreadingHTTPServer):
    """A client that hung up (a request abandoned at a stop, a killed
    daemon) is what some tests do on purpose: not a traceback."""

    def handle_error(self, request, client_address):
        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go as two writes: no 40 ms stall
    srv = None

    def log_message(self, fmt, *args):
        pass

    # ---- plumbing --------------------------------------------------------
    def send_json(self, code, obj, headers=None, raw=None):
        body = raw if raw is not None else json.dumps(obj, ensure_ascii=False).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def drop(self):
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def take_fault(self, method, path):
        s = self.srv
        with s.lock:
            for f in s.faults:
                if f.matches(method, path):
                    f.count -= 1
                    if f.count <= 0:
                        s.faults.remove(f)
                    return f
            for kind, p in s.random_faults.items():
                if s.rng.random() < p:
                    if kind == "status500":
                        return Fault("status", 1, "/", None, {"code": 500})
                    if kind == "status429":
                        return Fault("status", 1, "/", None, {"code": 429, "retry_after": "0"})
                    return Fault(kind, 1, "/", None, {})
        return None

    def handle_any(self, method):
        s = self.srv
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        url = urllib.parse.urlsplit(self.path)
        path = url.path[3:] if url.path.startswith("/v1") else url.path
        query = dict(urllib.parse.parse_qsl(url.query, keep_blank_values=True))
        with s.lock:
            s.connections.add(self.client_address)
            s.requests.append({"method": method, "path": path, "query": query,
                               "headers": dict(self.headers.items()), "body": body,
                               "time": time.time(), "conn": self.client_address})
        if not url.path.startswith("/v1/"):
            return self.send_json(404, {"error": "not found"})
        if self.headers.get("Authorization") != "Bearer " + s.key:
            return self.send_json(401, {"error": "invalid API key"})
        fault = self.take_fault(method, path)
        if fault and fault.kind != "ack_lost" and self.apply_fault(fault):
            return
        try:
            doc = json.loads(body) if body else None
        except ValueError:
            return self.send_json(400, {"error": "body is not JSON"})
        if method != "GET" and s.write_delay:
            time.sleep(s.write_delay)
        if method != "GET" and s.on_write:
            s.on_write(s, self.headers)
        code, obj = self.route(method, path, query, doc)
        if method != "GET" and s.on_written:
            s.on_written(s, code, obj)
        if fault and fault.kind == "ack_lost" and code < 300:
            if fault.opts.get("drop"):
                return self.drop()
            return self.send_json(500, {"error": "internal error after commit"})
        self.send_json(code, obj)

    def apply_fault(self, f):
        """Answer with fault f; False when the request should go on normally."""
        o = f.opts
        if f.kind == "status":
            headers = {"Retry-After": o["retry_after"]} if "retry_after" in o else {}
            self.send_json(o.get("code", 500), {"error": "injected"}, headers,
                           raw=o.get("body", "").encode() if "body" in o else None)
        elif f.kind == "slow":
            time.sleep(o.get("delay", 5))
            return False
        elif f.kind == "trickle":
            body = b'{"data": [], "meta": {"next_cursor": null}}'
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            try:
                for b in body:
                    self.wfile.write(bytes([b]))
                    self.wfile.flush()
                    time.sleep(o.get("delay", 1))
            except OSError:
                pass
            self.close_connection = True
        elif f.kind == "malformed":
            body = o.get("body", '{"data": [{"id": "x"')
            self.send_json(200, None, raw=body if isinstance(body, bytes) else body.encode())
        elif f.kind == "drop":
            self.drop()
        elif f.kind == "reset":
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            self.wfile.write(b'{"data": [{"id": "conv_')
            self.wfile.flush()
            self.drop()
        else:
            raise ValueError("unknown fault " + f.kind)
        return True

    # ---- the API ---------------------------------------------------------
    def route(self, method, path, query, doc):
        parts = path.strip("/").split("/")
        if method == "GET" and parts == ["conversations"]:
            return self.list_conversations(query)
        if method == "GET" and len(parts) == 2 and parts[0] == "conversations":
            return self.get_conversation(urllib.parse.unquote(parts[1]))
        if method == "POST" and parts == ["conversations"]:
            return self.create_conversation(doc)
        if method == "POST" and parts == ["messages"]:
            return self.send_message(doc)
        if method == "PATCH" and len(parts) == 2 and parts[0] == "users":
            return self.patch_user(urllib.parse.unquote(parts[1]), doc)
        return 404, {"error": "no such endpoint"}

    def list_conversations(self, q):
        s = self.srv
        try:
            limit = int(q.get("limit", s.page_default))
        except ValueError:
            return 400, {"error": "limit is not a number"}
        if limit < 1:
            return 400, {"error": "limit must be positive"}
        limit = min(limit, 100)
        status = q.get("status")
        if status is not None and status not in STATUSES:
            return 400, {"error": "unknown status"}
        with s.lock:
            if s.on_page:
                s.on_page(s, s.pages_served)
            s.pages_served += 1
            offset = 0
            if not q.get("cursor"):
                s.start_walk()
            if q.get("cursor") == "loop" and s.loop_cursor:
                offset = 0
            elif q.get("cursor"):
                offset = s.decode_cursor(q["cursor"], status)
                if offset is None:
                    return 400, {"error": "invalid or expired cursor"}
            rows = [c for _, c in sorted(s.convs.items())
                    if status is None or c["status"] == status]
            size = min(limit, s.short_pages) if s.short_pages else limit
            if s.recycle and rows:
                # The offset grows forever (a fresh cursor each time); the
                # items go round.
                start = offset % len(rows)
                page = rows[start:start + size]
                nxt = s.encode_cursor(offset + len(page), status)
            else:
                page = rows[offset:offset + size]
                nxt = s.encode_cursor(offset + size, status) if offset + size < len(rows) else None
            if s.loop_cursor:
                nxt = "loop"
            elif s.endless:
                nxt = s.encode_cursor(offset + limit, status)
            meta = {"total": len(rows) if s.claimed_total is None else s.claimed_total,
                    "next_cursor": nxt}
            if s.no_total:
                del meta["total"]
            return 200, {"data": [s.listed(c) for c in page], "meta": meta}

    def get_conversation(self, cid):
        s = self.srv
        with s.lock:
            c = s.convs.get(cid)
            if not c:
                return 404, {"error": "no such conversation"}
            return 200, {"id": c["id"], "status": c["status"],
                         "participants": [{"type": "user", "id": c.get("user_id")},
                                          {"type": "admin", "id": "admin_1", "name": "Ada"}]}

    def create_conversation(self, doc):
        s = self.srv
        if not isinstance(doc, dict) or not isinstance(doc.get("user_id"), str):
            return 400, {"error": "user_id is required"}
        with s.lock:
            cid = "conv_new_%d" % s.next_id
            s.next_id += 1
            c = {"id": cid, "status": s.create_status, "subject": doc.get("subject"),
                 "created_at": iso(time.time()), "user_id": doc["user_id"]}
            s.convs[cid] = c
            s.created.append({"id": cid, "doc": doc, "key": self.headers.get("Idempotency-Key")})
            return 201, {"id": cid, "status": c["status"], "created_at": c["created_at"]}

    def send_message(self, doc):
        s = self.srv
        if not isinstance(doc, dict) or not isinstance(doc.get("content"), str):
            return 400, {"error": "content is required"}
        with s.lock:
            c = s.convs.get(doc.get("conversation_id"))
            if not c:
                return 404, {"error": "no such conversation"}
            mid = "msg_sent_%d" % s.next_id
            s.next_id += 1
            c["last_message"] = {"id": mid, "text": doc["content"]}
            s.messages.append({"id": mid, "doc": doc, "key": self.headers.get("Idempotency-Key")})
            return 201, {"id": mid, "conversation_id": c["id"], "status": "sent",
                         "timestamp": int(time.time())}

    def patch_user(self, uid, doc):
        s = self.srv
        if not isinstance(doc, dict):
            return 400, {"error": "body must be an object"}
        with s.lock:
            u = s.users.setdefault(uid, {"id": uid, "email": None, "custom_attributes": {}})
            if "email" in doc:
                u["email"] = doc["email"]
            u["custom_attributes"].update(doc.get("custom_attributes") or {})
            s.patches.append({"id": uid, "doc": doc, "key": self.headers.get("Idempotency-Key")})
            return 200, json.loads(json.dumps(u))

    def do_GET(self):
        self.handle_any("GET")

    def do_POST(self):
        self.handle_any("POST")

    def do_PATCH(self):
        self.handle_any("PATCH")


def main():
    ap = argparse.ArgumentParser(description="fake Dexra API on 127.0.0.1")
    ap.add_argument("--conversations", type=int, default=200)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--key", required=True)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--port-file", help="write the base URL here once listening")
    ap.add_argument("--lifetime", type=float, default=600, help="stop after this many seconds")
    a = ap.parse_args()
    srv = FakeDexra(conversations=a.conversations, seed=a.seed, key=a.key).start(a.port)
    if a.port_file:
        with open(a.port_file + ".tmp", "w") as f:
            f.write(srv.url + "\n")
        import os
        os.rename(a.port_file + ".tmp", a.port_file)
    else:
        print(srv.url, flush=True)
    try:
        time.sleep(a.lifetime)
    except KeyboardInterrupt:
        pass
    srv.stop()


if __name__ == "__main__":
    sys.exit(main())
