#!/usr/bin/env python3
"""dexsyncd -t and the configuration errors a user sees."""
import os
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import tap  # noqa: E402
from harness import DEXSYNCD, KEY, DexTest  # noqa: E402

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


if __name__ == "__main__":
    tap.main()
