#!/usr/bin/env python3
"""Full-text search (SPEC 4 `search`, 5 conversations_fts/messages_fts): the
index kept in step by every write, built at the end of an initial mirror and
by the migration, dexsync search and its exit statuses, and the README's
sqlite3 search recipes run verbatim."""
import csv
import hashlib
import io
import json
import os
import re
import shlex
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import tap  # noqa: E402
from harness import DEXSYNC, SANITIZED, OutboxTest  # noqa: E402

SRCDIR = os.environ.get("DEXSYNC_SRCDIR", os.path.join(os.path.dirname(__file__), "..", ".."))


def conv(cid, subject, text, status="open", created="2026-03-01T10:00:00Z"):
    return {"id": cid, "status": status, "subject": subject, "created_at": created,
            "user_id": "u_1", "last_message": {"id": "msg_" + cid, "text": text}}


KNOWN = [
    conv("conv_exp", "Launch bug in the reports", "the CSV is empty", "open", "2026-03-01T10:00:00Z"),
    conv("conv_exps", "Question", "Our launches fail since Monday", "closed", "2026-04-01T10:00:00Z"),
    conv("conv_cafe", "Café order missing", "nothing arrived", "snoozed", "2026-05-01T10:00:00Z"),
    conv("conv_plain", "Coffee machine", "the cafe downstairs is closed", "open", "2026-06-01T10:00:00Z"),
    conv("conv_old", "Zeppelin delivery late", "where is it", "open", "2026-07-01T10:00:00Z"),
    conv("conv_gone", "Walrus invoice", "walrus walrus", "open", "2026-08-01T10:00:00Z"),
]


class SearchTest(OutboxTest):
    conversations = 30

    def setUp(self):
        super().setUp()
        for c in KNOWN:
            self.srv.add(json.loads(json.dumps(c)))     # a copy: tests change them
        p = self.once()
        self.assertEqual(p.returncode, 0, p.stderr)

    def search(self, *args):
        return self.dexsync("search", *args)

    def found(self, *args):
        p = self.search(*args, "--format", "json", "--limit", "1000")
        self.assertIn(p.returncode, (0, 1), p.stderr)
        rows = json.loads(p.stdout)
        self.assertEqual(p.returncode, 0 if rows else 1, "exit 0 with matches, 1 without")
        return [r["id"] for r in rows]

    def fts_ok(self):
        for t in ("conversations_fts", "messages_fts"):
            self.sql("INSERT INTO %s(%s, rank) VALUES ('integrity-check', 1)" % (t, t))

    # ---- what is found ---------------------------------------------------
    def test_subject_and_last_message_words(self):
        self.assertEqual(sorted(self.found("launch")), ["conv_exp", "conv_exps"])
        p = self.search("launch")
        self.assertEqual(p.returncode, 0)
        lines = p.stdout.splitlines()
        self.assertEqual(lines[0].split(), ["id", "status", "created_at", "subject", "matched", "snippet"])
        self.assertRegex(p.stdout, r"conv_exp .*subject .*\[Launch\] bug")
        self.assertRegex(p.stdout, r"conv_exps .*(last_message|message) .*Our \[launches\] fail")
        self.assertEqual(self.found("empty AND csv"), ["conv_exp"])
        self.assertEqual(self.found('"launches fail"'), ["conv_exps"])
        self.assertEqual(sorted(self.found("laun*")), ["conv_exp", "conv_exps"])
        self.assertEqual(self.found("launch NOT bug"), ["conv_exps"])
        self.assertEqual(self.found("subject:launch"), ["conv_exp"])

    def test_diacritics_both_ways(self):
        self.assertEqual(sorted(self.found("cafe")), ["conv_cafe", "conv_plain"])
        self.assertEqual(sorted(self.found("café")), ["conv_cafe", "conv_plain"])
        self.assertEqual(sorted(self.found("CAFÉ")), ["conv_cafe", "conv_plain"])

    def test_changed_subject_and_message_no_longer_match_their_old_words(self):
        self.srv.change("conv_old", subject="Airship delivery late",
                        last_message={"id": "msg_new", "text": "found it"})
        p = self.once()
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(self.found("zeppelin"), [])
        self.assertEqual(self.found("airship"), ["conv_old"])
        self.assertEqual(self.sql("SELECT rowid FROM conversations_fts WHERE conversations_fts MATCH 'zeppelin'"), [])
        self.fts_ok()

    def test_sent_message_is_found(self):
        p = self.dexsync("send", "conv_plain", "Xylophone lessons are cancelled")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(self.found("xylophone"), [], "not before it is sent")
        self.drain_until_done()
        p = self.search("xylophone", "--format", "json")
        self.assertEqual(p.returncode, 0, p.stderr)
        rows = json.loads(p.stdout)
        self.assertEqual([(r["id"], r["matched"]) for r in rows], [("conv_plain", "message")])
        self.assertTrue(rows[0]["message_id"].startswith("msg_sent_"))
        self.fts_ok()

    def test_status_since_limit_and_gone(self):
        self.assertEqual(self.found("launch", "--status", "closed"), ["conv_exps"])
        self.assertEqual(self.found("launch", "--status", "snoozed"), [])
        self.assertEqual(self.found("launch", "--since", "2026-03-15"), ["conv_exps"])
        p = self.search("launch", "--limit", "1", "--format", "json")
        self.assertEqual((p.returncode, len(json.loads(p.stdout))), (0, 1))
        self.srv.delete("conv_gone")
        # Seen before this second: a row first seen by the walk that finds
        # it gone (an outbox creation meanwhile) is not marked gone.
        self.sql("UPDATE conversations SET first_seen_at = '2026-01-01T00:00:00Z'")
        p = self.once()
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(self.scalar("SELECT gone_at IS NOT NULL FROM conversations WHERE id = 'conv_gone'"), 1)
        self.assertEqual(self.found("walrus"), [])
        self.assertEqual(self.found("walrus", "--all"), ["conv_gone"])

    def test_formats(self):
        p = self.search("launch", "--format", "csv", "--status", "open")
        self.assertEqual(p.returncode, 0, p.stderr)
        rows = list(csv.reader(io.StringIO(p.stdout, newline="")))
        self.assertEqual(rows[0], ["id", "status", "created_at", "subject", "matched", "snippet"])
        self.assertEqual(rows[1][:5], ["conv_exp", "open", "2026-03-01T10:00:00Z",
                                       "Launch bug in the reports", "subject"])
        self.assertIn("[Launch]", rows[1][5])
        p = self.search("cafe", "--format", "json")
        rows = {r["id"]: r for r in json.loads(p.stdout)}
        r = rows["conv_cafe"]
        self.assertNotIn("[", r["snippet"])
        spans = [r["snippet"][a:b] for a, b in r["highlights"]]
        self.assertEqual(spans, ["Café"])
        self.assertEqual(set(r), {"id", "status", "created_at", "subject", "matched", "message_id",
                                  "rank", "snippet", "highlights"})
        self.assertLess(r["rank"], 0)
        p = self.search("nothingmatchesthis", "--format", "json")
        self.assertEqual((p.returncode, json.loads(p.stdout)), (1, []))
        p = self.search("nothingmatchesthis")
        self.assertEqual((p.returncode, p.stdout), (1, ""))

    def test_best_rank_first(self):
        self.srv.add(conv("conv_many", "Walrus", "walrus walrus walrus"))
        self.assertEqual(self.once().returncode, 0)
        ids = self.found("walrus")
        self.assertEqual(ids[0], "conv_many")
        ranks = [r["rank"] for r in json.loads(self.search("walrus", "--format", "json").stdout)]
        self.assertEqual(ranks, sorted(ranks))

    def test_filters_past_the_first_window(self):
        """The best ranked matches are looked at first (4 x the limit); a
        filter that passes none of them still finds the weaker matches that
        pass, in rank order, as a query over every match would."""
        for i in range(12):
            self.srv.add(conv("conv_lag%02d" % i, "Lagoon lagoon", "lagoon lagoon lagoon", "open"))
        self.srv.add(conv("conv_lagc1", "Question about the lagoon and other long words here",
                          "nothing", "closed", "2026-09-01T10:00:00Z"))
        self.srv.add(conv("conv_lagc2", "Lagoon", "a lagoon view", "closed", "2026-09-02T10:00:00Z"))
        self.assertEqual(self.once().returncode, 0)
        def first(limit, *args):
            p = self.search("lagoon", "--format", "json", "--limit", str(limit), *args)
            self.assertEqual(p.returncode, 0, p.stderr)
            return [r["id"] for r in json.loads(p.stdout)]

        self.assertEqual(first(1, "--status", "closed"), ["conv_lagc2"])
        self.assertEqual(first(2, "--status", "closed"), ["conv_lagc2", "conv_lagc1"])
        self.assertEqual(first(1, "--since", "2026-09-02"), ["conv_lagc2"])
        # The whole list, by rank, whatever the limit cuts it to.
        every = self.found("lagoon")
        self.assertEqual(len(every), 14)
        for limit in (1, 3, 13):
            self.assertEqual(first(limit), every[:limit])

    def test_a_word_in_more_rows_than_are_ranked(self):
        """More than 5,000 matches of a table: the 5,000 mirrored last are
        ranked (a notice says so), so a common word answers in milliseconds
        at a million rows; a filter that none of those pass still finds the
        older matches, ranked; a message table of few matches is ranked
        whole."""
        con = sqlite3.connect(self.db)
        with con:
            # Mirrored first (lowest rowids): the best match of all, and
            # the only closed ones.
            con.execute("INSERT INTO conversations(id, status, subject, raw, first_seen_at, changed_at)"
                        " VALUES ('conv_best', 'open', 'Quokka quokka quokka', '{}', 'x', 'x')")
            con.executemany("INSERT INTO conversations(id, status, subject, raw, first_seen_at, changed_at)"
                            " VALUES (?, 'closed', ?, '{}', 'x', 'x')",
                            [("conv_oldc%d" % i, "quokka " + "filler " * i) for i in range(3)])
            con.execute("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 5100)"
                        " INSERT INTO conversations(id, status, subject, last_message_text, raw,"
                        " first_seen_at, changed_at)"
                        " SELECT 'conv_q' || i, 'open', 'About a quokka and the ' || i || ' others',"
                        " 'one quokka', '{}', 'x', 'x' FROM n")
            con.execute("INSERT INTO messages(id, conversation_id, text, origin, raw)"
                        " VALUES ('m_q', 'conv_q7', 'quokka quokka', 'listed', '{}')")
        con.close()
        p = self.search("quokka", "--format", "json", "--limit", "10")
        self.assertEqual(p.returncode, 0, p.stderr)
        rows = json.loads(p.stdout)
        self.assertEqual(len(rows), 10)
        ranks = [r["rank"] for r in rows]
        self.assertEqual(ranks, sorted(ranks))
        self.assertNotIn("conv_best", [r["id"] for r in rows], "the oldest match is not ranked")
        self.assertIn("conv_q7", [r["id"] for r in rows], "the message's match is ranked")
        self.assertRegex(p.stderr, r"^dexsync: notice: search: more than 5000 .* the 5000 mirrored last"
                         r" of each are ranked .*\n$")
        # None of the candidates is closed: every match is ranked then.
        p = self.search("quokka", "--status", "closed", "--format", "json")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual([r["id"] for r in json.loads(p.stdout)], ["conv_oldc0", "conv_oldc1", "conv_oldc2"])
        self.assertEqual(p.stderr, "", "every match was ranked: no notice")
        # A prefix: each shown row of both tables gets its marked snippet
        # (made in one pass a table, not one query a row).
        p = self.search("quok*", "--format", "csv", "--limit", "50")
        self.assertEqual(p.returncode, 0, p.stderr)
        rows = list(csv.DictReader(io.StringIO(p.stdout)))
        self.assertEqual(len(rows), 50)
        self.assertTrue(all("[quokka]" in r["snippet"].lower() for r in rows), rows)
        self.assertIn("message", [r["matched"] for r in rows])
        # A rarer word: all its matches ranked, no notice.
        p = self.search("quokka AND 4242", "--format", "json")
        self.assertEqual((p.returncode, p.stderr), (0, ""))
        self.assertEqual([r["id"] for r in json.loads(p.stdout)], ["conv_q4242"])

    # ---- errors --------------------------------------------------------
    def test_malformed_queries_get_one_line_naming_the_problem(self):
        cases = {
            "export AND": "ends too early",
            '"export bug': "phrase\" is not closed",
            "user@example.com": "'@' is not part of the query syntax",
            "AND export": "operator AND needs a word",
            "export)": "a ) has no ( before it",
            "foo:bar": "there is no column foo",
            "text:launch OR subject:launch": "'subject:' is a column of conversations and 'text:' one of messages",
            "SUBJECT:launch OR text:launch": "'SUBJECT:' is a column of conversations and 'text:' one of messages",
            # A column of one table, with the other's problem: that one is told.
            "text:": "a word is missing after an operator (AND, OR, NOT, +) or a column (text:)",
            "subject:launch OR": "ends too early",
            "text:launch OR foo:bar": "there is no column foo",
            "foo:bar OR subject:launch": "there is no column foo",
            "*export": "cannot start with '*'",
            "   ": "the query is empty",
            "a\x1bb": "control character",
        }
        for query, why in cases.items():
            p = self.search(query)
            self.assertEqual(p.returncode, 2, query)
            self.assertEqual(p.stdout, "")
            self.assertEqual(len(p.stderr.strip().splitlines()), 1, p.stderr)
            self.assertIn(why, p.stderr)
            self.assertNotIn("fts5:", p.stderr, "not SQLite's message alone")
            self.assertNotIn("\x1b", p.stderr)
        for args in (["--status", "pending"], ["--since", "yesterday"], ["--since", "2026-13-45"],
                     ["--since", "2026-02-29"], ["--since", "2026-11-26T24:00:00Z"], ["--limit", "0"],
                     ["--format", "html"], []):
            p = self.search(*(["launch"] if args else []), *args)
            self.assertEqual(p.returncode, 2, args)
            self.assertEqual(len(p.stderr.strip().splitlines()), 1, p.stderr)
        p = self.dexsync("-d", os.path.join(self.dir, "missing.db"), "search", "x", db=False)
        self.assertEqual(p.returncode, 2, "a missing database is an error, not 'none found'")

    # ---- read-only -----------------------------------------------------
    def test_search_never_writes(self):
        # (The -shm file is the readers' shared memory, not the database.)
        def digest(name):
            with open(os.path.join(self.dir, name), "rb") as f:
                return hashlib.sha256(f.read()).hexdigest()

        def state():
            return {n: digest(n) for n in ("mirror.db", "mirror.db-wal")}
        before = state()
        os.chmod(self.db, 0o444)
        try:
            self.assertEqual(self.search("launch").returncode, 0)
            self.assertEqual(self.search("launch AND").returncode, 2)
        finally:
            os.chmod(self.db, 0o644)
        self.assertEqual(state(), before)

    # ---- plain SQL keeps the index right -------------------------------
    def test_plain_sql_insert_update_delete(self):
        con = sqlite3.connect(self.db)
        with con:
            con.execute("INSERT INTO conversations(id, status, subject, raw, first_seen_at, changed_at)"
                        " VALUES ('conv_sql', 'open', 'Quokka sighting', '{}', 'x', 'x')")
            con.execute("INSERT INTO messages(id, conversation_id, text, origin, raw)"
                        " VALUES ('m_sql', 'conv_sql', 'a platypus too', 'listed', '{}')")
        self.assertEqual(self.found("quokka"), ["conv_sql"])
        self.assertEqual(self.found("platypus"), ["conv_sql"])
        with con:
            con.execute("UPDATE conversations SET subject = 'Wombat sighting' WHERE id = 'conv_sql'")
            con.execute("UPDATE messages SET text = 'an echidna' WHERE id = 'm_sql'")
        self.assertEqual((self.found("quokka"), self.found("platypus")), ([], []))
        self.assertEqual((self.found("wombat"), self.found("echidna")), (["conv_sql"], ["conv_sql"]))
        with con:
            con.execute("DELETE FROM messages WHERE id = 'm_sql'")
        self.assertEqual(self.found("echidna"), [])
        con.close()
        self.fts_ok()

    # ---- building the index --------------------------------------------
    def test_initial_mirror_builds_the_index_at_its_end(self):
        # setUp's first walk was an initial mirror.
        self.assertEqual(self.scalar("SELECT count(*) FROM sync_state WHERE key GLOB 'deferred_index:*'"), 0)
        triggers = {r[0] for r in self.sql("SELECT name FROM sqlite_schema WHERE type = 'trigger'"
                                           " AND name GLOB '*_fts_*'")}
        self.assertEqual(len(triggers), 6, triggers)
        self.fts_ok()
        self.assertEqual(self.scalar("SELECT count(*) FROM conversations_fts"),
                         self.scalar("SELECT count(*) FROM conversations"))

    def test_initial_mirror_log_and_unchanged_rewalk(self):
        os.remove(self.db)
        for suffix in ("-wal", "-shm"):
            if os.path.exists(self.db + suffix):
                os.remove(self.db + suffix)
        p = self.once()
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("an initial mirror: 2 full-text indexes are built at its end", p.stderr)
        built = re.findall(r"built the deferred full-text index (\w+) in \d+\.\d+ s", p.stderr)
        self.assertEqual(sorted(built), ["conversations_fts", "messages_fts"])
        # Two at once: conversations_fts by a second thread, into a scratch
        # file that is gone after.
        self.assertRegex(p.stderr, r"full-text index conversations_fts in \d+\.\d+ s \(beside the others\)")
        self.assertRegex(p.stderr, r"the 2 deferred full-text indexes are built in \d+\.\d+ s")
        self.assertFalse(os.path.exists(self.db + "-ftsbuild"))
        self.fts_ok()

        def fts_pages():
            return self.sql("SELECT 'c', id, block FROM conversations_fts_data UNION ALL "
                            "SELECT 'm', id, block FROM messages_fts_data ORDER BY 1, 2")
        before = fts_pages()
        p = self.once()
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertNotIn("full-text", p.stderr)
        self.assertEqual(fts_pages(), before, "an unchanged re-walk writes nothing to the index")
        self.assertEqual(self.found("zeppelin"), ["conv_old"])

    def fresh_mirror(self):
        """An initial mirror into an empty database: its stderr."""
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(self.db + suffix):
                os.remove(self.db + suffix)
        p = self.once()
        self.assertEqual(p.returncode, 0, p.stderr)
        return p.stderr

    def assert_index_whole(self):
        self.fts_ok()
        for t, content in (("conversations_fts", "conversations"), ("messages_fts", "messages")):
            self.assertEqual(self.scalar("SELECT count(*) FROM %s_docsize" % t),
                             self.scalar("SELECT count(*) FROM %s" % content), t)
        self.assertEqual(sorted(self.found("launch")), ["conv_exp", "conv_exps"])
        self.assertEqual(self.scalar("SELECT count(*) FROM sync_state WHERE key GLOB 'deferred_index:*'"), 0)

    def test_a_scratch_file_a_crash_left_is_built_over(self):
        with open(self.db + "-ftsbuild", "wb") as f:
            f.write(b"not a database, what a crash half-way left" * 1000)
        err = self.fresh_mirror()
        self.assertRegex(err, r"conversations_fts in \d+\.\d+ s \(beside the others\)")
        self.assertFalse(os.path.exists(self.db + "-ftsbuild"))
        self.assert_index_whole()

    def test_a_link_where_the_scratch_file_goes_is_removed_not_followed(self):
        precious = os.path.join(self.dir, "precious")
        with open(precious, "wb") as f:
            f.write(b"")                    # an empty file SQLite would write a database into
        os.symlink(precious, self.db + "-ftsbuild")
        err = self.fresh_mirror()
        self.assertRegex(err, r"conversations_fts in \d+\.\d+ s \(beside the others\)")
        self.assertEqual(os.path.getsize(precious), 0)
        self.assertFalse(os.path.lexists(self.db + "-ftsbuild"))
        self.assert_index_whole()

    def preload(self, source):
        """source compiled into an LD_PRELOAD library: its path."""
        src, lib = os.path.join(self.dir, "preload.c"), os.path.join(self.dir, "preload.so")
        with open(src, "w") as f:
            f.write(source)
        subprocess.run(["cc", "-shared", "-fPIC", "-o", lib, src, "-ldl"], check=True, timeout=60)
        return lib

    NO_THREAD = r"""
#include <errno.h>
#include <pthread.h>

int pthread_create(pthread_t *t, const pthread_attr_t *a, void *(*fn)(void *), void *arg)
{
	(void)t, (void)a, (void)fn, (void)arg;
	return EAGAIN;
}
"""

    @unittest.skipIf(SANITIZED, "an LD_PRELOAD library ahead of the sanitizers' runtime: the plain suite runs it")
    def test_without_a_thread_the_tables_are_ranked_one_after_the_other(self):
        # messages_fts is ranked by a second thread; with none, the same
        # answer comes from the one connection, after a notice.
        lib = self.preload(self.NO_THREAD)
        for query in (["launch"], ["export", "--format", "json"], ["text:bulk"], ["subject:launch"], ["+"],
                      ["walrus", "--all", "--format", "csv"]):
            p = self.search(*query)
            q = subprocess.run([DEXSYNC, "-d", self.db, "search"] + query, capture_output=True, text=True,
                               timeout=30, env=self.env({"LD_PRELOAD": lib}))
            self.assertEqual((q.returncode, q.stdout), (p.returncode, p.stdout), query)
            self.assertEqual(q.stderr, "dexsync: notice: search: no thread: Resource temporarily unavailable; "
                             "the two tables are ranked one after the other\n" + p.stderr, query)

    SWAP_AT_THE_SECOND_OPEN = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>

/* Just before the search's second connection is opened (the one opened
 * with SQLITE_OPEN_NOFOLLOW): another database renamed over the first. */
int sqlite3_open_v2(const char *path, sqlite3 **db, int flags, const char *vfs)
{
	int (*real)(const char *, sqlite3 **, int, const char *) =
		(int (*)(const char *, sqlite3 **, int, const char *))dlsym(RTLD_NEXT, "sqlite3_open_v2");
	const char *other = getenv("SWAP_OTHER");

	if ((flags & SQLITE_OPEN_NOFOLLOW) && other)
		(void)!rename(other, path);
	return real(path, db, flags, vfs);
}
"""

    def replacement_with_zebras(self):
        """A copy of the mirror whose every message is about zebras: its path."""
        other = os.path.join(self.dir, "other.db")
        con = sqlite3.connect(self.db)      # its WAL empty: it would be read with the other file too
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        con.close()
        shutil.copyfile(self.db, other)
        con = sqlite3.connect(other)
        self.assertGreater(con.execute("UPDATE messages SET text = 'zebra crossing'").rowcount, 0)
        con.commit()
        con.close()
        self.assertEqual(self.search("zebra").returncode, 1)
        return other

    @unittest.skipIf(SANITIZED, "an LD_PRELOAD library ahead of the sanitizers' runtime: the plain suite runs it")
    def test_a_database_replaced_mid_search_is_not_mixed_in(self):
        # The thread's connection is opened by name: a file renamed over
        # the database just before is refused, and both tables are ranked
        # on the command's connection, from the file it opened.
        other = self.replacement_with_zebras()
        lib = self.preload(self.SWAP_AT_THE_SECOND_OPEN)
        p = subprocess.run([DEXSYNC, "-d", self.db, "search", "zebra"], capture_output=True, text=True,
                           timeout=30, env=self.env({"LD_PRELOAD": lib, "SWAP_OTHER": other}))
        self.assertFalse(os.path.exists(other), "the shim did not run")
        self.assertEqual((p.returncode, p.stdout), (1, ""), p.stderr)
        self.assertEqual(p.stderr, "dexsync: notice: database %s: no second connection: the file was replaced or "
                                   "removed\n" % self.db)
        self.assertEqual(self.search("zebra").returncode, 0, "the other file is in place now")

    NOT_MOVED = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <sqlite3.h>

/* SQLite's "has the file moved" compares inode numbers only: a file of
 * another file system with the same number passes.  As if it did here. */
int sqlite3_file_control(sqlite3 *db, const char *schema, int op, void *arg)
{
	int (*real)(sqlite3 *, const char *, int, void *) =
		(int (*)(sqlite3 *, const char *, int, void *))dlsym(RTLD_NEXT, "sqlite3_file_control");

	if (op != SQLITE_FCNTL_HAS_MOVED)
		return real(db, schema, op, arg);
	*(int *)arg = 0;
	return SQLITE_OK;
}
"""

    @unittest.skipIf(SANITIZED, "an LD_PRELOAD library ahead of the sanitizers' runtime: the plain suite runs it")
    def test_what_the_thread_found_in_another_file_is_not_shown(self):
        # When the check cannot tell the files apart, what the thread
        # ranked there is shown only if it matches here too: nothing.
        other = self.replacement_with_zebras()
        lib = self.preload(self.SWAP_AT_THE_SECOND_OPEN + self.NOT_MOVED)
        p = subprocess.run([DEXSYNC, "-d", self.db, "search", "zebra", "--format", "json"], capture_output=True,
                           text=True, timeout=30, env=self.env({"LD_PRELOAD": lib, "SWAP_OTHER": other}))
        self.assertFalse(os.path.exists(other), "the shim did not run")
        self.assertEqual((p.returncode, p.stdout, p.stderr), (1, "[]\n", ""))

    UNLINK_AT_THE_THREAD = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

/* Just before the search's thread starts: its connection's file unlinked
 * (the database opened by another name of it). */
int pthread_create(pthread_t *t, const pthread_attr_t *a, void *(*fn)(void *), void *arg)
{
	int (*real)(pthread_t *, const pthread_attr_t *, void *(*)(void *), void *) =
		(int (*)(pthread_t *, const pthread_attr_t *, void *(*)(void *), void *))dlsym(RTLD_NEXT,
											"pthread_create");
	const char *name = getenv("UNLINK_NAME");

	if (name)
		(void)!unlink(name);
	return real(t, a, fn, arg);
}
"""

    @unittest.skipIf(SANITIZED, "an LD_PRELOAD library ahead of the sanitizers' runtime: the plain suite runs it")
    def test_a_second_connection_that_fails_leaves_the_ranking_to_the_first(self):
        # The name removed after both connections opened: the thread's
        # first read fails (its WAL needs the name); the first connection,
        # already reading, ranks messages too.
        con = sqlite3.connect(self.db)      # its WAL empty: the other name reads without it
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        con.close()
        name = os.path.join(self.dir, "link.db")
        os.link(self.db, name)
        want = self.search("launch OR export", "--format", "json")
        lib = self.preload(self.UNLINK_AT_THE_THREAD)
        p = subprocess.run([DEXSYNC, "-d", name, "search", "launch OR export", "--format", "json"],
                           capture_output=True, text=True, timeout=30,
                           env=self.env({"LD_PRELOAD": lib, "UNLINK_NAME": name}))
        self.assertFalse(os.path.exists(name), "the shim did not run")
        self.assertEqual((p.returncode, p.stdout), (0, want.stdout), p.stderr)
        self.assertRegex(p.stderr, r"^dexsync: notice: search: the second connection failed \([^\n]+\); messages "
                                   r"are ranked on the first\n$")

    AT_THE_SECOND_OPEN = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <sqlite3.h>
#include <stdlib.h>

/* Just before the search's second connection is opened (with
 * SQLITE_OPEN_NOFOLLOW), after its first began reading: $AT_OPEN, so that
 * the two connections read two snapshots. */
int sqlite3_open_v2(const char *path, sqlite3 **db, int flags, const char *vfs)
{
	int (*real)(const char *, sqlite3 **, int, const char *) =
		(int (*)(const char *, sqlite3 **, int, const char *))dlsym(RTLD_NEXT, "sqlite3_open_v2");
	const char *cmd = getenv("AT_OPEN");

	if ((flags & SQLITE_OPEN_NOFOLLOW) && cmd) {
		unsetenv("LD_PRELOAD"); /* not in the command's own SQLite */
		(void)!system(cmd);
	}
	return real(path, db, flags, vfs);
}
"""

    def search_with_a_walk_between(self, sql, *args):
        """dexsync search ARGS, with sql committed between its two
        connections' snapshots."""
        change = [sys.executable, "-c", "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); "
                  "c.executescript(sys.argv[2]); c.commit()", self.db, sql]
        lib = self.preload(self.AT_THE_SECOND_OPEN)
        return subprocess.run([DEXSYNC, "-d", self.db, "search"] + list(args), capture_output=True, text=True,
                              timeout=30, env=self.env({"LD_PRELOAD": lib,
                                                        "AT_OPEN": " ".join(map(shlex.quote, change))}))

    def commit(self, query, *params):
        con = sqlite3.connect(self.db, timeout=10)
        with con:
            con.execute(query, params)
        con.close()

    def add_message(self, mid, conv_id, text):
        self.commit("INSERT INTO messages (id, conversation_id, text, origin, raw) VALUES (?, ?, ?, 'listed', '{}')",
                    mid, conv_id, text)

    @unittest.skipIf(SANITIZED, "an LD_PRELOAD library ahead of the sanitizers' runtime: the plain suite runs it")
    def test_a_walk_between_the_snapshots_hides_no_match(self):
        # The thread's snapshot has conv_old open: its strong match fills
        # --limit 1 there, and is not open in the rows' snapshot.  The
        # weaker match, open in both, is shown.
        self.commit("UPDATE conversations SET status = 'closed' WHERE id = 'conv_old'")
        self.add_message("m_strong", "conv_old", "quagga quagga quagga")
        self.add_message("m_weak", "conv_plain", "one quagga among many other words in this message")
        p = self.search_with_a_walk_between("UPDATE conversations SET status = 'open' WHERE id = 'conv_old'",
                                            "quagga", "--status", "open", "--limit", "1", "--format", "json")
        self.assertEqual(self.scalar("SELECT status FROM conversations WHERE id = 'conv_old'"), "open")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual([r["id"] for r in json.loads(p.stdout)], ["conv_plain"])
        # A message the walk stored, better than its conversation's own
        # match (its subject), is not in the rows' snapshot: the subject's
        # match is shown.
        self.commit("UPDATE conversations SET subject = 'okapi sighting' WHERE id = 'conv_cafe'")
        p = self.search_with_a_walk_between("INSERT INTO messages (id, conversation_id, text, origin, raw) "
                                            "VALUES ('m_new', 'conv_cafe', 'okapi okapi okapi', 'listed', '{}')",
                                            "okapi", "--format", "json")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual([(r["id"], r["matched"]) for r in json.loads(p.stdout)], [("conv_cafe", "subject")])

    @unittest.skipIf(SANITIZED, "an LD_PRELOAD library ahead of the sanitizers' runtime: the plain suite runs it")
    def test_while_a_walk_runs_one_snapshot_ranks_both_tables(self):
        # A walk's commit between the two snapshots could take from the
        # second one a match the first holds (conv_old closed there): while
        # a walk runs, no second connection is opened, and the match is shown.
        self.add_message("m_q", "conv_old", "quokka here")
        self.commit("UPDATE conversations SET subject = 'quokka subject', status = 'closed' WHERE id = 'conv_plain'")
        self.commit("INSERT INTO sync_runs (started_at) VALUES ('2026-11-27T00:00:00Z')")   # 'running'
        p = self.search_with_a_walk_between("UPDATE conversations SET status = 'closed' WHERE id = 'conv_old'; "
                                            "UPDATE conversations SET status = 'open' WHERE id = 'conv_plain'",
                                            "quokka", "--status", "open", "--format", "json")
        self.assertEqual(self.scalar("SELECT status FROM conversations WHERE id = 'conv_old'"), "open",
                         "a second connection was opened")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual([r["id"] for r in json.loads(p.stdout)], ["conv_old"])

    AT_JOIN = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdlib.h>

/* After the command's connection ranked, before the rows are read: the
 * command $AT_JOIN. */
int pthread_join(pthread_t t, void **ret)
{
	int (*real)(pthread_t, void **) = (int (*)(pthread_t, void **))dlsym(RTLD_NEXT, "pthread_join");
	const char *cmd = getenv("AT_JOIN");

	if (cmd) {
		unsetenv("LD_PRELOAD");
		(void)!system(cmd);
	}
	return real(t, ret);
}
"""

    @unittest.skipIf(SANITIZED, "an LD_PRELOAD library ahead of the sanitizers' runtime: the plain suite runs it")
    def test_rows_are_shown_as_they_were_ranked(self):
        # A status changed between the ranking and the reading of the rows:
        # the row is shown as it was when it passed --status, not as "closed"
        # under --status open.
        lib = self.preload(self.AT_JOIN)
        change = [sys.executable, "-c", "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); "
                  "c.execute(\"UPDATE conversations SET status = 'closed' WHERE id = 'conv_exp'\"); c.commit()",
                  self.db]
        p = subprocess.run([DEXSYNC, "-d", self.db, "search", "launch", "--status", "open", "--format", "json"],
                           capture_output=True, text=True, timeout=30,
                           env=self.env({"LD_PRELOAD": lib, "AT_JOIN": " ".join(map(shlex.quote, change))}))
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(self.scalar("SELECT status FROM conversations WHERE id = 'conv_exp'"), "closed",
                         "the change was made")
        rows = json.loads(p.stdout)
        self.assertIn("conv_exp", [r["id"] for r in rows])
        self.assertEqual({r["status"] for r in rows}, {"open"})

    SWAP_AT_THE_THREAD = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

/* Just before the build's thread starts, while the scratch file exists:
 * a link to another file in its place. */
int pthread_create(pthread_t *t, const pthread_attr_t *a, void *(*fn)(void *), void *arg)
{
	int (*real)(pthread_t *, const pthread_attr_t *, void *(*)(void *), void *) =
		(int (*)(pthread_t *, const pthread_attr_t *, void *(*)(void *), void *))dlsym(RTLD_NEXT,
											"pthread_create");
	const char *scratch = getenv("SWAP_SCRATCH"), *target = getenv("SWAP_TARGET");

	if (scratch && target && access(scratch, F_OK) == 0 && unlink(scratch) == 0)
		(void)!symlink(target, scratch);
	return real(t, a, fn, arg);
}
"""

    @unittest.skipIf(SANITIZED, "an LD_PRELOAD library ahead of the sanitizers' runtime: the plain suite runs it")
    def test_a_link_put_in_the_scratch_files_place_is_not_written_through(self):
        # The scratch file is made new, then attached by name: a link put
        # in its place meanwhile (by an LD_PRELOAD library, just before the
        # thread starts) is refused, and the indexes are built in place.
        shim = self.preload(self.SWAP_AT_THE_THREAD)
        victim = os.path.join(self.dir, "victim")
        open(victim, "wb").close()
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(self.db + suffix):
                os.remove(self.db + suffix)
        p = self.once(env={"LD_PRELOAD": shim, "SWAP_SCRATCH": self.db + "-ftsbuild", "SWAP_TARGET": victim})
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(os.path.getsize(victim), 0, "written through the link")
        self.assertIn("the full-text indexes are built in place, one after the other", p.stderr)
        self.assertFalse(os.path.lexists(self.db + "-ftsbuild"))
        self.assert_index_whole()

    def test_no_scratch_file_builds_the_indexes_in_place(self):
        os.mkdir(self.db + "-ftsbuild")      # in the way: neither removed nor opened
        with open(os.path.join(self.db + "-ftsbuild", "x"), "w") as f:
            f.write("x")
        err = self.fresh_mirror()
        self.assertIn("cannot remove %s-ftsbuild: Is a directory" % self.db, err)
        self.assertIn("the full-text indexes are built in place, one after the other", err)
        self.assertNotIn("beside the others", err)
        built = re.findall(r"built the deferred full-text index (\w+) in \d+\.\d+ s", err)
        self.assertEqual(sorted(built), ["conversations_fts", "messages_fts"])
        self.assert_index_whole()
        shutil.rmtree(self.db + "-ftsbuild")

    @unittest.skipIf(SANITIZED, "three walks a second apart: the plain suite runs it")
    def test_a_daemon_keeps_the_index_it_built_in_step(self):
        # The daemon's own connection goes on writing the index the build's
        # connections made: its next walk's changes are found, the old words
        # not, and FTS5 finds nothing wrong.
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(self.db + suffix):
                os.remove(self.db + suffix)
        self.conf = self.write_conf(sync="interval = 1s", outbox="poll-interval = 1s")
        proc = self.spawn("-n")
        self.wait_for(lambda: os.path.exists(self.db) and self.walks_ok() >= 1, timeout=30,
                      what="the initial mirror")
        self.srv.change("conv_old", subject="Blimp delivery late")
        self.wait_for(lambda: self.walks_ok() >= 3, timeout=30, what="two more walks")
        self.kill(proc, signal.SIGTERM)
        self.assertEqual(self.found("blimp"), ["conv_old"])
        self.assertEqual(self.found("zeppelin"), [])
        self.assert_index_whole()

    @unittest.skipIf(SANITIZED, "a 4,000-conversation walk at 40 pages a second: the plain suite runs it")
    def test_rows_written_during_the_build_are_all_indexed(self):
        # A user's plain SQL writes rows all along an initial mirror, each
        # as soon as the write lock is free: before the build (indexed by
        # it), while it holds the lock (they wait, then their triggers
        # index them), and after.
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(self.db + suffix):
                os.remove(self.db + suffix)
        for n in range(4000):
            self.srv.add(conv("conv_bulk%05d" % n, "Bulk subject %d" % n, "bulk text %d" % n))
        self.conf = self.write_conf(api="max-rate = 40", sync="page-size = 50")
        proc = self.spawn("-n", "-1", "-l", "info")
        self.wait_for(lambda: self.scalar_or("SELECT count(*) FROM conversations", 0) > 0, timeout=60,
                      what="a first page")
        con = sqlite3.connect(self.db, timeout=60, isolation_level=None)
        n = 0
        while n == 0 or proc.poll() is None:
            con.execute("INSERT INTO conversations(id, subject, raw, first_seen_at, changed_at) "
                        "VALUES (?, ?, '{}', '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z')",
                        ("conv_w%d" % n, "wr%05d" % n))
            con.execute("INSERT INTO messages(id, conversation_id, text, origin, raw) "
                        "VALUES (?, ?, ?, 'outbox', '{}')", ("msg_w%d" % n, "conv_w%d" % n, "wm%05d" % n))
            n += 1
            time.sleep(0.002)
        con.close()
        _, err = self.finish(proc)
        self.assertEqual(proc.returncode, 0, err)
        self.assertIn("the 2 deferred full-text indexes are built", err)
        for i in range(n):
            self.assertEqual(self.sql("SELECT c.id FROM conversations_fts f JOIN conversations c "
                                      "ON c.rowid = f.rowid WHERE conversations_fts MATCH ?", "wr%05d" % i),
                             [("conv_w%d" % i,)])
            self.assertEqual(self.sql("SELECT m.id FROM messages_fts f JOIN messages m "
                                      "ON m.rowid = f.rowid WHERE messages_fts MATCH ?", "wm%05d" % i),
                             [("msg_w%d" % i,)])
        self.fts_ok()

    def walks_ok(self):
        try:
            return self.scalar("SELECT count(*) FROM sync_runs WHERE outcome = 'ok'")
        except sqlite3.OperationalError:
            return 0

    def test_an_interrupted_initial_mirror_then_a_migration(self):
        # Killed before its end: the keys of the deferred indexes stay.  A
        # migration puts them back first, full-text ones rebuilt in place.
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(self.db + suffix):
                os.remove(self.db + suffix)
        self.conf = self.write_conf(api="max-rate = 2", sync="page-size = 5")
        proc = self.spawn("-n", "-1")
        self.wait_for(lambda: self.scalar_or("SELECT count(*) FROM conversations", 0) > 0, timeout=60,
                      what="a first page")
        self.kill(proc)
        values = self.sql("SELECT value FROM sync_state WHERE key GLOB 'deferred_index:*_fts'")
        self.assertEqual(len(values), 2)
        for (value,) in values:
            # The form dexsync 0.1 reads too: its rebuild, then the triggers.
            self.assertRegex(value, r"^INSERT INTO .*VALUES \('hashsize'.*\('rebuild'\); CREATE TRIGGER ")
        p = self.search("launch")
        self.assertIn("notice: search: the full-text index is not built yet", p.stderr)
        self.sql("PRAGMA user_version = 7")
        p = self.once()
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("applied migration 0008", p.stderr)
        self.assert_index_whole()

    def scalar_or(self, query, default):
        try:
            return self.scalar(query)
        except sqlite3.OperationalError:
            return default

    def test_migration_builds_the_index_once(self):
        # The database as the schema before 0005 left it.
        con = sqlite3.connect(self.db)
        con.executescript("""
            DROP TABLE conversations_fts; DROP TABLE messages_fts;
            DROP TRIGGER conversations_fts_insert; DROP TRIGGER conversations_fts_delete;
            DROP TRIGGER conversations_fts_update; DROP TRIGGER messages_fts_insert;
            DROP TRIGGER messages_fts_delete; DROP TRIGGER messages_fts_update;
            PRAGMA user_version = 4;""")
        con.close()
        p = self.dexsync("search", "launch")
        self.assertEqual(p.returncode, 2)
        self.assertIn("start dexsyncd once to migrate it", p.stderr)
        p = self.once()
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(len(re.findall(r"applied migration 0005-search.sql in \d+\.\d+ s", p.stderr)), 1)
        self.assertEqual(sorted(self.found("launch")), ["conv_exp", "conv_exps"])
        self.fts_ok()
        p = self.once()
        self.assertNotIn("applied migration", p.stderr)

    # ---- the README's recipes ------------------------------------------
    def test_readme_search_recipes_run_verbatim(self):
        with open(os.path.join(SRCDIR, "README.md"), encoding="utf-8") as f:
            text = f.read()
        recipes = dict(re.findall(r"```sql\n-- search recipe: (.*?)\n(.*?)```", text, re.S))
        self.assertGreaterEqual(len(recipes), 3)
        out = {}
        for name, sql in recipes.items():
            p = subprocess.run(["sqlite3", "-separator", "|", self.db], input=sql,
                               capture_output=True, text=True, timeout=30)
            self.assertEqual((p.returncode, p.stderr), (0, ""), name)
            out[name] = [line.split("|") for line in p.stdout.splitlines()]
        words = out["conversations whose subject or last message has a word, best first"]
        self.assertEqual(sorted(r[0] for r in words), ["conv_exp", "conv_exps"])
        self.assertTrue(any("[Launch]" in c for r in words for c in r), words)
        msgs = out["messages with a phrase, with a snippet"]
        self.assertEqual([r[0] for r in msgs], ["conv_exps"])
        self.assertIn("[launches fail]", msgs[0][-1])
        self.assertEqual(out["is the index in step?"], [])


if __name__ == "__main__":
    tap.main()
