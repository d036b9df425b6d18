#!/usr/bin/python3
"""test_bazel.py - Bazel end to end: reactord as Bazel's --remote_cache.

Builds the tiny workspace in t/integ/bazel_ws (three genrules, no
toolchains) against a fresh reactord, runs `bazel clean`, builds again and
asserts from Bazel's own process summary that every action of the second
build was a remote cache hit and that the outputs are byte-identical.

Bazel runs offline and hermetically: --batch (no server left behind), its
output root and HOME in the test's temp dir, no home or workspace rc, the workspace
copied there (Bazel's convenience symlinks never touch the source tree),
and every proxy variable pointed at a closed port so that any download
attempt fails at once.  Without a `bazel` binary (Debian: bazel-bootstrap,
which .ci/run installs) the test is skipped with a SKIP line.

Run by `make check`; by hand: /usr/bin/python3 t/integ/test_bazel.py
"""

import hashlib
import os
import re
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness as h  # noqa: E402

BAZEL = h.BAZEL
OUTPUTS = ["hello.txt", "upper.txt", "big.bin"]
NO_BAZEL = ("SKIP: bazel not found in PATH; install Debian's bazel-bootstrap "
            "(.ci/run does) or set BAZEL=/path/to/bazel")



class TestBazelRemoteCache(h.ReactordTestCase):
    @unittest.skipUnless(BAZEL, NO_BAZEL)
    def test_clean_rebuild_is_served_from_cache(self):
        srv = self.start_reactord()
        ws, env, startup = h.bazel_setup(self.tmp)
        build = ["build", "--noshow_progress", "--color=no", "--curses=no",
                 "--spawn_strategy=local", "--repository_cache=",
                 "--remote_cache=grpc://" + srv.tcp_addr, "--remote_timeout=60", "//:all"]

        def bazel(*args):
            r = subprocess.run(startup + list(args), cwd=ws, env=env, stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               timeout=150 * h.SLOW)
            self.assertEqual(r.returncode, 0, "bazel %s failed:\n%s\nreactord log:\n%s" % (
                " ".join(args), r.stdout[-4000:], srv.log_tail(30)))
            return r.stdout

        def outputs():
            got = {}
            for name in OUTPUTS:
                with open(os.path.join(ws, "bazel-bin", name), "rb") as f:
                    got[name] = hashlib.sha256(f.read()).hexdigest()
            return got

        first = h.bazel_summary(bazel(*build))
        self.assertEqual(first.get("remote cache hit", 0), 0, first)
        self.assertEqual(first.get("local", 0), len(OUTPUTS), first)
        before = outputs()
        with open(os.path.join(ws, "bazel-bin", "upper.txt")) as f:
            self.assertEqual(f.read(), "HELLO FROM REACTORD\n")
        self.assertEqual(os.path.getsize(os.path.join(ws, "bazel-bin", "big.bin")), 5120000)

        bazel("clean")
        self.assertFalse(os.path.exists(os.path.join(ws, "bazel-bin", "hello.txt")))
        mark = srv.log_mark()
        second = h.bazel_summary(bazel(*build))
        print("\n  bazel: first build %s; after clean %s" % (first, second), flush=True)
        self.assertEqual(second.get("remote cache hit", 0), len(OUTPUTS), second)
        self.assertEqual(second.get("local", 0), 0, second)
        self.assertEqual(outputs(), before)
        # The hits really came from reactord: found results, blobs read back.
        log = srv.log()[mark:]
        self.assertGreaterEqual(len(re.findall(
            r"method=/build\.bazel\.remote\.execution\.v2\.ActionCache/GetActionResult "
            r"grpc-status=0 ", log)), len(OUTPUTS))
        self.assertRegex(log, r"method=/google\.bytestream\.ByteStream/Read grpc-status=0 ")


if __name__ == "__main__":
    if not BAZEL:
        print(NO_BAZEL)
    h.main()
