#!/usr/bin/env python3
"""dexsyncd -t and the configuration errors a user sees."""
import os
import signal
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import tap  # noqa: E402
from harness import DEXSYNCD, KEY, DexTest, daemon_pids  # noqa: E402

SRCDIR = os.environ.get("DEXSYNC_SRCDIR", os.path.join(os.path.dirname(__file__), "..", ".."))


class ConfigTest(DexTest):
    def check(self, text, env=None):
        path = os.path.join(self.dir, "t.conf")
        with open(path, "w") as f:
            f.write(text)
        os.chmod(path, 0o600)
        return self.dexsyncd("-t", conf=path, env=env)

    def assert_refused(self, text, *words):
        p = self.check(text)
        self.assertEqual(p.returncode, 1, p.stderr)
        line = p.stderr.strip().splitlines()[0]
        for w in words:
            self.assertIn(w, line)
        return line

    def test_valid_config_passes(self):
        p = self.dexsyncd("-t")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("configuration ok", p.stdout)

    def test_example_config_passes(self):
        # Its key file is the default, absent here, so the key comes from the environment.
        p = self.dexsyncd("-t", conf=os.path.join(SRCDIR, "etc", "dexsyncd.conf"),
                          env={"DEXRA_API_KEY": KEY})
        self.assertEqual(p.returncode, 0, p.stderr)

    def test_unknown_key_names_file_line_and_key(self):
        line = self.assert_refused('log-level = info\nsync {\n  colour = "blue"\n}\n', "t.conf:3:", "colour")

    def test_syntax_errors_in_secrets_do_not_show_them(self):
        """libconfuse names the token it stopped at: in a file that sets an
        api-key or a proxy, that may be a piece of one, however mistyped."""
        for text, line in (("api { api-key = dx_live_SECRETab+cd/ef== }\n", 1),
                           ("api { api-key = SECRETKEY1 SECRETKEY2 }\n", 1),
                           ('api {\n  api-key = "SECRETKEY1" "SECRETKEY2"\n}\n', 2),
                           ('api {\n  api-key = "a"\n  "SECRETKEY3"\n}\n', 3),
                           ("api {\n  api-key\n    = K1 SECRETB\n}\n", 3),
                           ("api { max-rate = 1 api-key = K1 SECRETD }\n", 1),
                           ('api {\n  "api-key" = "K1" "SECRET3"\n}\n', 2),
                           ('api {\n  api-key = K1"SECRET5\n}"\n', 3),
                           ('api { proxy = "http://user:SECRETPASS@h:3128" "SECRETX" }\n', 1),
                           ('api { api-key = "k" }\ndatabse = "x"\n', 2)):
            p = self.check(text)
            self.assertEqual(p.returncode, 1, p.stderr)
            self.assertEqual(p.stderr, "dexsyncd: error: %s:%d: no such option '(not shown: the file sets an "
                             "api-key or a proxy)'\n" % (os.path.join(self.dir, "t.conf"), line), text)
            self.assertNotIn("SECRET", p.stdout + p.stderr)
        # A closing quote forgotten runs another key's value into the key,
        # even a quoted one: our own checks do not show that value.
        for text, key in (('log-level = "debug\napi {\n  api-key = SECRETAAA1\n  base-url = "http://h/v1"\n}\n',
                           "log-level"),
                          ("syslog-facility = 'local0\napi { api-key = \"SECRETAAA6\" }\n'\n", "syslog-facility"),
                          ('api {\n  ca-file = "/etc/ssl/ca.pem\n  api-key = SECRETAAA2\n"\n}\n', "ca-file"),
                          ('sync { interval = "5m\n}\napi { proxy = "http://u:SECRETPROXY@h:3128" }\n', "interval")):
            p = self.check(text)
            self.assertEqual(p.returncode, 1, p.stderr)
            self.assertIn("option '%s'" % key, p.stderr, text)
            self.assertIn("(not shown: it runs into an api-key or a proxy; a closing quote missing?)", p.stderr)
            self.assertNotIn("SECRET", p.stdout + p.stderr)
        # Without one, the token is named; our own checks always name the key.
        self.assert_refused('databse = "x"\n', "t.conf:1:", "no such option 'databse'")
        self.assert_refused('api { api-key = "k" }\nlog-level = loud\n', "t.conf:2:", "unknown level 'loud'")
        # What libconfuse refuses without a word gets one line too.
        for text in ('"" = 1\n', "database = \"x\" ''\n"):
            line = self.assert_refused(text, "t.conf:1: a syntax error (an empty key name?)")

    def test_page_size_range(self):
        self.assert_refused("sync { page-size = 0 }\n", "t.conf:1:", "page-size", "1 to 100")
        self.assert_refused("sync {\npage-size = 101\n}\n", "t.conf:2:", "page-size")

    def test_bad_type(self):
        self.assert_refused('sync { page-size = "lots" }\n', "t.conf:1:", "page-size")
        self.assert_refused('sync { fetch-details = 3 }\n', "t.conf:1:", "fetch-details")

    def test_durations(self):
        self.assert_refused("outbox { poll-interval = -5s }\n", "t.conf:1:", "poll-interval")
        self.assert_refused("sync { interval = 5 min }\n", "t.conf:1:")
        self.assert_refused("sync { interval = 5w }\n", "t.conf:1:", "interval", "5w")
        p = self.check('api { api-key = "%s" }\nsync { interval = 2h }\noutbox { max-age = 1d }\n' % KEY)
        self.assertEqual(p.returncode, 0, p.stderr)

    def test_unreadable_key_file(self):
        self.assert_refused('api { api-key-file = "%s" }\n' % self.dir, "API key file", self.dir)
        self.assert_refused('api { api-key-file = "%s/nope" }\n' % self.dir, "API key file", "No such file")

    def test_no_key_names_the_four_places(self):
        p = self.check('api { api-key-file = "" }\n')
        self.assertEqual(p.returncode, 1)
        for place in ("CREDENTIALS_DIRECTORY", "api-key-file", "DEXRA_API_KEY", "api-key in"):
            self.assertIn(place, p.stderr)

    def test_key_sources_in_order(self):
        cred = os.path.join(self.dir, "cred")
        os.mkdir(cred)
        with open(os.path.join(cred, "api-key"), "w") as f:
            f.write("wrong-key\n")
        os.chmod(os.path.join(cred, "api-key"), 0o600)
        # The credential wins over the key file: the server refuses it.
        p = self.once(env={"CREDENTIALS_DIRECTORY": cred})
        self.assertEqual(p.returncode, 1)
        self.assertIn("HTTP 401", p.stderr)
        self.assertNotIn("wrong-key", p.stderr)
        # The environment is used when there is no key file.
        conf = self.write_conf("env.conf", api='api-key-file = ""')
        p = self.once(conf=conf, env={"DEXRA_API_KEY": KEY})
        self.assertEqual(p.returncode, 0, p.stderr)

    def test_readable_key_file_warns(self):
        os.chmod(self.keyfile, 0o644)
        p = self.dexsyncd("-t")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("readable by group or others", p.stderr)

    def test_readable_config_with_key_warns(self):
        p = self.check('api { api-key = "%s" }\n' % KEY)
        self.assertNotIn("readable", p.stderr)
        os.chmod(os.path.join(self.dir, "t.conf"), 0o644)
        p = self.dexsyncd("-t", conf=os.path.join(self.dir, "t.conf"))
        self.assertEqual(p.returncode, 0)
        self.assertIn("holds an api-key and is readable", p.stderr)

    def test_missing_config(self):
        p = self.dexsyncd("-t", conf=os.path.join(self.dir, "absent.conf"))
        self.assertEqual(p.returncode, 1)
        self.assertIn("absent.conf: cannot read", p.stderr)

    def test_command_line(self):
        for args, code, text in ((["-V"], 0, "dexsyncd "), (["-h"], 0, "Usage:"),
                                 (["-x"], 1, "Usage:"), (["-l", "loud"], 1, "unknown log level"),
                                 (["extra"], 1, "unexpected argument")):
            p = subprocess.run([DEXSYNCD] + args, capture_output=True, text=True, timeout=10)
            self.assertEqual(p.returncode, code, args)
            self.assertIn(text, p.stdout + p.stderr)

    def test_relative_paths_survive_detaching_and_reload(self):
        # A user starts the daemon from the directory that holds its files.
        # daemon() moves it to /: the database, the key file and the config
        # itself must still be the ones in that directory, at every SIGHUP.
        name = os.path.basename(self.dir) + ".conf"     # unique: daemon_pids finds this daemon only
        self.srv.stop()
        self.srv = type(self.srv)(conversations=20, key=KEY).start()

        def write(page_size):
            with open(os.path.join(self.dir, name), "w") as f:
                f.write('database = "mirror.db"\napi {\n base-url = "%s"\n api-key-file = "./api-key"\n'
                        ' max-rate = 0\n}\nsync {\n fetch-details = false\n interval = 1h\n page-size = %d\n}\n'
                        % (self.srv.url, page_size))
        write(100)
        p = subprocess.run([DEXSYNCD, "-f", name], cwd=self.dir, capture_output=True, text=True,
                           timeout=10, env=self.env())
        self.outputs += [p.stdout, p.stderr]
        self.assertEqual(p.returncode, 0, p.stderr)

        def pids():
            return daemon_pids(name)
        try:
            self.wait_for(lambda: os.path.exists(self.db) and self.walks() == 1, 10,
                          "the first walk, stored in the start directory's mirror.db")
            self.assertEqual(len(pids()), 1, "the detached daemon")
            write(7)
            os.kill(pids()[0], signal.SIGHUP)
            os.kill(pids()[0], signal.SIGUSR1)
            self.wait_for(lambda: self.walks() == 2, 10, "a walk after the reload")
            limits = [r["query"].get("limit") for r in self.srv.requests if r["path"] == "/conversations"]
            self.assertEqual(limits[-1], "7", "the reload read the same relative config: %s" % limits)
        finally:
            for pid in pids():
                os.kill(pid, signal.SIGTERM)
            self.wait_for(lambda: not pids(), 10, "the daemon's exit")

    def walks(self):
        try:
            return self.scalar("SELECT count(*) FROM sync_runs WHERE outcome = 'ok'")
        except Exception:
            return 0

    def test_reload_refuses_a_directory_nul_fifo_and_goes_on(self):
        self.conf = self.write_conf(sync="interval = 1h", outbox="poll-interval = 1s")
        proc = self.spawn("-n")
        lines = []
        reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)
        reader.start()

        def log_after(n, needle):
            self.wait_for(lambda: needle in "".join(lines[n:]), 10, repr(needle))
            return "".join(lines[n:])

        def refused(make, words):
            os.remove(self.conf) if os.path.isfile(self.conf) else None
            make()
            n = len(lines)
            proc.send_signal(signal.SIGHUP)
            text = log_after(n, "keeping the running configuration")
            first = text.splitlines()[1]        # after "reloading ..."
            for w in words:
                self.assertIn(w, first)
            self.assertIsNone(proc.poll(), "the daemon stopped on a bad reload")
            if os.path.isdir(self.conf):
                os.rmdir(self.conf)
            elif os.path.exists(self.conf):
                os.remove(self.conf)

        try:
            self.wait_for(lambda: self.walks() == 1, 10, "the first walk")
            refused(lambda: os.mkdir(self.conf), [self.conf, "a directory"])
            refused(lambda: os.mkfifo(self.conf), [self.conf, "not a regular file"])

            def nul():
                with open(self.conf, "wb") as f:
                    f.write(b'log-level = info\nsync {\n interval = 1h\x00 }\n')
            refused(nul, [self.conf + ":3:", "NUL byte"])
            # It still works: a walk on SIGUSR1, and a good config is taken.
            proc.send_signal(signal.SIGUSR1)
            self.wait_for(lambda: self.walks() == 2, 10, "a walk after the refused reloads")
            self.write_conf(top="log-level = debug", sync="interval = 1h", outbox="poll-interval = 1s")
            n = len(lines)
            proc.send_signal(signal.SIGHUP)
            log_after(n, "configuration reloaded")
        finally:
            proc.send_signal(signal.SIGTERM)
            rc = proc.wait(10)
            reader.join(5)
            self.outputs.append("".join(lines))
        self.assertEqual(rc, 0)

    def test_check_refuses_a_directory_or_a_nul_byte(self):
        p = self.dexsyncd("-t", conf=self.dir, timeout=10)
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertEqual(len(p.stderr.strip().splitlines()), 1, p.stderr)
        self.assertIn(self.dir + ": cannot read: a directory", p.stderr)
        path = os.path.join(self.dir, "t.conf")
        with open(path, "wb") as f:
            f.write(b'api { api-key = "%s" }\n\x00\n' % KEY.encode())
        p = self.dexsyncd("-t", conf=path, timeout=10)
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertEqual(p.stderr.strip(), "dexsyncd: error: %s:2: holds a NUL byte, not a config file" % path)

    def test_check_relative_config_path(self):
        p = subprocess.run([DEXSYNCD, "-t", "-f", "dexsyncd.conf"], cwd=self.dir, capture_output=True,
                           text=True, timeout=10, env=self.env())
        self.outputs += [p.stdout, p.stderr]
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn(self.conf + ": configuration ok", p.stdout)

    def test_urls_checked_offline(self):
        for value, why in (("http://", "has no host"), ("https://:443/v1", "has no host"),
                           ("ftp://x/v1", "another scheme"), ("http:/x", "another scheme"),
                           ("dexra.net/v1", "not a URL"), ("https://h/v1?x=1", "query"),
                           ("https://h/v1#x", "fragment"), ("http://h x/v1", "not a URL")):
            line = self.assert_refused('api {\n api-key = "%s"\n base-url = "%s"\n}\n' % (KEY, value),
                                       "t.conf:3:", "base-url")
            self.assertIn(why, line)
        for value in ("junk", "proxy.example:3128", "http://", "ftp://proxy.example",
                      "http://user:pa55w0rd@:3128"):
            line = self.assert_refused('api {\n api-key = "%s"\n proxy = "%s"\n}\n' % (KEY, value),
                                       "t.conf:3:", "proxy")
            self.assertNotIn("pa55w0rd", line)
        for value in ("http://proxy.example:3128", "socks5h://user:pw@127.0.0.1:1080", "https://[::1]"):
            p = self.check('api {\n api-key = "%s"\n proxy = "%s"\n base-url = "http://[::1]:9/v1"\n}\n'
                           % (KEY, value))
            self.assertEqual(p.returncode, 0, p.stderr)

    def test_ca_file_must_be_readable(self):
        self.assert_refused('api {\n api-key = "%s"\n ca-file = "%s/absent.pem"\n}\n' % (KEY, self.dir),
                            "t.conf:3:", "ca-file", "absent.pem", "No such file")
        self.assert_refused('api {\n api-key = "%s"\n ca-file = "%s"\n}\n' % (KEY, self.dir),
                            "t.conf:3:", "ca-file", "not a regular file")
        with open(os.path.join(self.dir, "ca.pem"), "w") as f:
            f.write("-----BEGIN CERTIFICATE-----\n")
        # Relative to the directory dexsyncd started in.
        path = os.path.join(self.dir, "t.conf")
        with open(path, "w") as f:
            f.write('api {\n api-key = "%s"\n ca-file = "ca.pem"\n}\n' % KEY)
        os.chmod(path, 0o600)
        p = subprocess.run([DEXSYNCD, "-t", "-f", "t.conf"], cwd=self.dir, capture_output=True, text=True,
                           timeout=10, env=self.env())
        self.outputs += [p.stdout, p.stderr]
        self.assertEqual(p.returncode, 0, p.stderr)
        p = subprocess.run([DEXSYNCD, "-t", "-f", "t.conf"], cwd="/", capture_output=True, text=True,
                           timeout=10, env=self.env())
        self.outputs += [p.stdout, p.stderr]
        self.assertEqual(p.returncode, 1, p.stderr)

    def test_key_files_that_would_hang_or_inject(self):
        kf = os.path.join(self.dir, "bad-key")
        conf = 'api { api-key-file = "%s" }\n' % kf
        os.mkfifo(kf)
        line = self.assert_refused(conf, "API key file", kf, "not a regular file")     # and no hang
        os.remove(kf)
        for content, why in ((b"abc\r\nX-Injected: SECRETPART\n", "more than one line"),
                             (b"abc\nSECRETPART\n", "more than one line"),
                             (b"abc\x00SECRETPART\n", "NUL byte"),
                             (b"abc\x1bSECRETPART\n", "control character"),
                             (b"abc SECRETPART\n", "space"),
                             (b"\n\n", "empty")):
            with open(os.open(kf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as f:
                f.write(content)
            line = self.assert_refused(conf, "API key file", kf, why)
            self.assertNotIn("SECRETPART", line)
        # A key file written on Windows is fine: CR LF at the end.
        with open(os.open(kf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as f:
            f.write(b"  " + KEY.encode() + b"\r\n")
        p = self.check(conf)
        self.assertEqual(p.returncode, 0, p.stderr)

    def test_keys_with_line_breaks_are_refused_unshown(self):
        line = self.assert_refused('log-level = info\napi { api-key = "abc\\r\\nX-Injected: SECRETPART" }\n',
                                   "t.conf:2:", "api-key", "line break")
        self.assertNotIn("SECRETPART", line)
        p = self.check('api { api-key-file = "" }\n', env={"DEXRA_API_KEY": "abc\nSECRETPART"})
        self.assertEqual(p.returncode, 1)
        self.assertIn("DEXRA_API_KEY", p.stderr)
        self.assertNotIn("SECRETPART", p.stderr)

    def test_huge_values_refused(self):
        self.assert_refused("sync { interval = 9999999999999d }\n", "t.conf:1:", "interval", "at most 3650d")
        self.assert_refused("outbox { max-age = 3651d }\n", "t.conf:1:", "max-age")
        self.assert_refused("api { timeout = 2d }\n", "t.conf:1:", "timeout", "1 to 86400")
        self.assert_refused("sync { max-details = 100000000000 }\n", "t.conf:1:", "max-details")
        self.assert_refused('database = ""\n', "t.conf:1:", "database", "empty")
        p = self.check('api { api-key = "%s" }\noutbox { max-age = 3650d max-backoff = 3650d }\n' % KEY)
        self.assertEqual(p.returncode, 0, p.stderr)

    def test_string_cut_short_writes_nothing_to_stdout(self):
        # libconfuse's scanner echoes a backslash it cannot match to stdout.
        for text in ('database = "x\\', "database = 'x\\"):
            p = self.check(text)
            self.assertEqual(p.returncode, 1)
            self.assertEqual(p.stdout, "")
            self.assertIn("t.conf:1:", p.stderr)

    def test_control_characters_escaped_in_errors(self):
        # libconfuse turns \t in a quoted string into a tab: the error
        # quoting the value must stay one line, without raw controls (a
        # value with a line break is not shown at all: see above).
        p = self.check('log-level = "lo\\tud\\033[2J"\n')
        self.assertEqual(p.returncode, 1)
        self.assertEqual(len(p.stderr.strip().splitlines()), 1, p.stderr)
        self.assertIn("t.conf:1: option 'log-level': unknown level 'lo", p.stderr)
        self.assertNotIn("\x1b", p.stderr)


if __name__ == "__main__":
    tap.main()
