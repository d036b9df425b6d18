#!/usr/bin/python3
"""test_worker.py - reactor-worker end to end: reactord starts and
supervises local workers (`workers: {local: N}`), Execute requests from a
grpcio client run on them, and the results are checked through the CAS.

Covers: an action with an input root (a plain and an executable file in
subdirectories) whose outputs are files, a directory (Tree with a nested
file, an executable and a symlink) and stdout; pre-v2.1 output_files /
output_directories; a non-zero exit code with stderr; Action.timeout
(DEADLINE_EXCEEDED); a missing input blob (FAILED_PRECONDITION naming it);
a large input and output (ByteStream both ways); cancelling a running
action kills it on the worker; a worker SIGKILLed mid-action is restarted
by reactord and the requeued action completes on it; no worker or action
process survives reactord.  With a `bazel` binary, a tiny workspace is
also built with --remote_executor (genrules run on the local workers).

Run by `make check`; by hand: /usr/bin/python3 t/integ/test_worker.py [NAME...]
"""

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness as h  # noqa: E402
import testbot as tb  # noqa: E402
from harness import grpc, pb  # noqa: E402

OK, CANCELLED, DEADLINE_EXCEEDED, FAILED_PRECONDITION = 0, 1, 4, 9
BS_READ = "/google.bytestream.ByteStream/Read"
BAZEL = h.BAZEL


def sha(b):
    return hashlib.sha256(b).hexdigest()


class Tree:
    """Builds an input root: {path: bytes | (bytes, executable)}."""

    def __init__(self, files):
        self.blobs = {}
        self.root = self._dir(self._nest(files))

    def _nest(self, files):
        top = {}
        for path, v in files.items():
            parts = path.split("/")
            d = top
            for p in parts[:-1]:
                d = d.setdefault(p, {})
            d[parts[-1]] = v if isinstance(v, tuple) else (v, False)
        return top

    def _dir(self, node, skip=()):
        re_ = pb().re
        d = re_.Directory()
        for name in sorted(node):
            v = node[name]
            if isinstance(v, dict):
                d.directories.add(name=name, digest=self._dir(v, skip))
            else:
                data, ex = v
                d.files.add(name=name, digest=tb.digest_of(data), is_executable=ex)
                if data not in skip:
                    self.blobs[sha(data)] = data
        b = d.SerializeToString()
        self.blobs[sha(b)] = b
        return tb.digest_of(b)


def make_action(args, files=None, output_paths=(), output_files=(), output_dirs=(),
                timeout=None, env=(("PATH", "/usr/bin:/bin"),), missing=()):
    """(action digest, blobs) for args run in an input root of `files`;
    blobs in `missing` are left out of the upload set."""
    re_ = pb().re
    tree = Tree(files or {})
    cmd = re_.Command(arguments=list(args), output_paths=list(output_paths),
                      output_files=list(output_files), output_directories=list(output_dirs))
    for k, v in env:
        cmd.environment_variables.add(name=k, value=v)
    cb = cmd.SerializeToString()
    act = re_.Action(command_digest=tb.digest_of(cb), input_root_digest=tree.root,
                     do_not_cache=True)
    if timeout is not None:
        act.timeout.FromNanoseconds(int(timeout * 1e9))
    ab = act.SerializeToString()
    blobs = dict(tree.blobs)
    blobs[sha(cb)] = cb
    blobs[sha(ab)] = ab
    for m in missing:
        blobs.pop(sha(m), None)
    return tb.digest_of(ab), blobs


def exec_config(local=1, workers=None, **sched):
    s = {"bot-session-keepalive": "3s", "safety-net-interval": "1s", "sweep-interval": "100ms",
         "long-poll": "10s"}
    s.update(sched)
    return {"instances": [{"name": "", "execution": True, "storage": "memory",
                           "no-worker-timeout": "60s", "max-attempts": 5}],
            "scheduler": s, "workers": dict(workers or {}, local=local)}


# Actions that share files with the test (or with each other) through the
# host's file system need the sandbox off: the worker runs as root here,
# and so may the action then.
UNSANDBOXED = {"sandbox": "none", "run-as": "root"}


def worker_procs(srv):
    """Live reactor-worker processes of this reactord (they dial its unix
    socket)."""
    sock = next(a for a in srv.cfg["listen"] if a.startswith("unix:"))
    return [p for p, cmd in h.procs_with(sock)
            if "reactor-worker" in cmd and h.pid_alive(p)]


class WorkerCase(h.ReactordTestCase):
    def start(self, local=1, workers=None, **sched):
        srv = self.start_reactord(exec_config(local, workers, **sched))
        self.addCleanup(self.assert_no_strays, srv)
        ch = self.channel(srv.tcp_addr)
        return srv, ch

    def assert_no_strays(self, srv):
        """After reactord stops, no worker nor action of it is left."""
        srv.stop()
        h.wait_for(lambda: not worker_procs(srv) and not h.procs_with(self.mark_prefix()),
                   10, "local workers and their actions to exit")

    def mark_prefix(self):
        return "mark-%s-%s-" % (os.path.basename(os.path.dirname(self.tmp)),
                                os.path.basename(self.tmp))

    def sleeper(self, name):
        """A copy of sleep(1) for the input root, named with a marker of
        this test, so `ps` shows which action sleeps: (argv[0], files)."""
        mark = self.mark_prefix() + name
        with open(shutil.which("sleep"), "rb") as f:
            return "./" + mark, {mark: (f.read(), True)}

    def run_action(self, ch, digest, blobs, timeout=60):
        tb.upload(ch, blobs)
        ops = tb.run_to_end(tb.execute(ch, digest, skip_cache=True, timeout=timeout))
        last = ops[-1]
        self.assertFalse(last.HasField("error"), "Operation.error must never be set")
        return tb.op_response(last)

    def read(self, ch, digest):
        re_ = pb().re
        if digest.size_bytes == 0:
            return b""
        if digest.size_bytes < 1 << 20:
            r = h.unary(ch, tb.CAS_UPDATE.replace("BatchUpdateBlobs", "BatchReadBlobs"),
                        re_.BatchReadBlobsRequest, re_.BatchReadBlobsResponse)(
                re_.BatchReadBlobsRequest(digests=[digest]), timeout=10)
            self.assertEqual(r.responses[0].status.code, 0, r.responses[0].status)
            return r.responses[0].data
        from google.bytestream import bytestream_pb2 as bs
        it = h.server_stream(ch, BS_READ, bs.ReadResponse)(
            bs.ReadRequest(resource_name="blobs/%s/%d" % (digest.hash, digest.size_bytes)),
            timeout=30)
        return b"".join(m.data for m in it)


class TestWorker(WorkerCase):
    def test_inputs_outputs_tree_stdout(self):
        srv, ch = self.start()
        script = (b"#!/bin/sh\necho tool-ran\n", True)
        d, blobs = make_action(
            ["/bin/sh", "-c",
             "echo hi; mkdir -p out/d/sub; echo x > out/f; echo y > out/d/g; "
             "cat data/in.txt > out/copy; ./bin/tool.sh > out/d/sub/tool; "
             "cp bin/tool.sh out/d/exe; ln -s g out/d/link; echo to-stderr >&2; "
             "env | sort > out/env"],
            files={"data/in.txt": b"input file\n", "bin/tool.sh": script},
            output_paths=["out/f", "out/copy", "out/d", "out/env", "out/absent"])
        r = self.run_action(ch, d, blobs)
        self.assertEqual(r.status.code, OK, r.status.message)
        res = r.result
        self.assertEqual(res.exit_code, 0)
        self.assertEqual(self.read(ch, res.stdout_digest), b"hi\n")
        self.assertEqual(self.read(ch, res.stderr_digest), b"to-stderr\n")
        files = {f.path: f for f in res.output_files}
        self.assertEqual(sorted(files), ["out/copy", "out/env", "out/f"])
        self.assertEqual(self.read(ch, files["out/f"].digest), b"x\n")
        self.assertEqual(self.read(ch, files["out/copy"].digest), b"input file\n")
        self.assertFalse(files["out/f"].is_executable)
        # Only the Command's environment reaches the action.
        env = self.read(ch, files["out/env"].digest).decode()
        self.assertIn("PATH=/usr/bin:/bin\n", env)
        self.assertNotIn("REACTOR", env)
        self.assertEqual(len(res.output_directories), 1)
        od = res.output_directories[0]
        self.assertEqual(od.path, "out/d")
        tree = pb().re.Tree.FromString(self.read(ch, od.tree_digest))
        root = tree.root
        self.assertEqual([f.name for f in root.files], ["exe", "g"])
        self.assertTrue(root.files[0].is_executable)
        self.assertEqual(self.read(ch, root.files[1].digest), b"y\n")
        self.assertEqual([(s.name, s.target) for s in root.symlinks], [("link", "g")])
        self.assertEqual([x.name for x in root.directories], ["sub"])
        kids = {tb.digest_of(c.SerializeToString()).hash: c for c in tree.children}
        sub = kids[root.directories[0].digest.hash]
        self.assertEqual(self.read(ch, sub.files[0].digest), b"tool-ran\n")
        md = res.execution_metadata
        self.assertRegex(md.worker, r"-local-0$")
        self.assertLessEqual(md.execution_start_timestamp.ToNanoseconds(),
                             md.execution_completed_timestamp.ToNanoseconds())
        self.assertGreater(md.worker_completed_timestamp.seconds, 0)

    def test_legacy_outputs_and_working_directory(self):
        srv, ch = self.start()
        re_ = pb().re
        tree = Tree({"w/keep": b"k"})
        cmd = re_.Command(arguments=["/bin/sh", "-c", "mkdir -p od; echo a > od/a; "
                                     "echo b > of/b; pwd > where"],
                          output_files=["of/b", "where"], output_directories=["od"],
                          working_directory="w")
        cb = cmd.SerializeToString()
        act = re_.Action(command_digest=tb.digest_of(cb), input_root_digest=tree.root,
                         do_not_cache=True)
        ab = act.SerializeToString()
        blobs = dict(tree.blobs, **{sha(cb): cb, sha(ab): ab})
        r = self.run_action(ch, tb.digest_of(ab), blobs)
        self.assertEqual(r.status.code, OK, r.status.message)
        files = {f.path: f for f in r.result.output_files}
        self.assertEqual(self.read(ch, files["of/b"].digest), b"b\n")
        self.assertTrue(self.read(ch, files["where"].digest).rstrip().endswith(b"/root/w"))
        t = re_.Tree.FromString(self.read(ch, r.result.output_directories[0].tree_digest))
        self.assertEqual([f.name for f in t.root.files], ["a"])

    def test_exit_code_and_exec_failure(self):
        srv, ch = self.start()
        d, blobs = make_action(["/bin/sh", "-c", "echo oops >&2; exit 3"])
        r = self.run_action(ch, d, blobs)
        self.assertEqual(r.status.code, OK, r.status.message)
        self.assertEqual(r.result.exit_code, 3)
        self.assertEqual(self.read(ch, r.result.stderr_digest), b"oops\n")
        d, blobs = make_action(["/nonexistent/tool"])
        r = self.run_action(ch, d, blobs)
        # As a shell would (in the sandbox, sh starts the command).
        self.assertEqual(r.result.exit_code, 127)
        self.assertRegex(self.read(ch, r.result.stderr_digest),
                         rb"/nonexistent/tool: (1: exec: /nonexistent/tool: )?not found")

    def test_timeout(self):
        srv, ch = self.start()
        mark, files = self.sleeper("timeout")
        d, blobs = make_action(["/bin/sh", "-c", "echo started; exec %s 30" % mark],
                               files=files, timeout=1)
        r = self.run_action(ch, d, blobs)
        self.assertEqual(r.status.code, DEADLINE_EXCEEDED, r.status.message)
        h.wait_for(lambda: not h.procs_with(mark), 5, "the timed-out action to be killed")

    def test_missing_input(self):
        srv, ch = self.start()
        gone = b"this blob was never uploaded\n"
        d, blobs = make_action(["/bin/cat", "in"], files={"in": gone}, missing=[gone])
        r = self.run_action(ch, d, blobs)
        self.assertEqual(r.status.code, FAILED_PRECONDITION, r.status.message)
        self.assertIn("blobs/%s/%d" % (sha(gone), len(gone)), r.status.message)
        # The worker goes on serving.
        d, blobs = make_action(["/bin/true"])
        self.assertEqual(self.run_action(ch, d, blobs).result.exit_code, 0)

    def test_large_blobs_use_bytestream(self):
        srv, ch = self.start()
        big = os.urandom(6 << 20)  # over the 4 MiB batch limit
        d, blobs = make_action(["/bin/sh", "-c", "cp big out.bin; cp big small && "
                                "truncate -s 1000 small"],
                               files={"big": big}, output_paths=["out.bin", "small"])
        from google.bytestream import bytestream_pb2 as bs
        tb.upload(ch, {k: v for k, v in blobs.items() if len(v) < (1 << 20)})
        name = "uploads/0f0e0d0c-0000-4000-8000-000000000001/blobs/%s/%d" % (sha(big), len(big))
        reqs = [bs.WriteRequest(resource_name=name if off == 0 else "", write_offset=off,
                                data=big[off:off + (1 << 20)],
                                finish_write=off + (1 << 20) >= len(big))
                for off in range(0, len(big), 1 << 20)]
        ch.stream_unary("/google.bytestream.ByteStream/Write",
                        request_serializer=bs.WriteRequest.SerializeToString,
                        response_deserializer=bs.WriteResponse.FromString)(
            iter(reqs), timeout=30 * h.SLOW)
        r = self.run_action(ch, d, {})
        self.assertEqual(r.status.code, OK, r.status.message)
        files = {f.path: f for f in r.result.output_files}
        self.assertEqual(files["out.bin"].digest.hash, sha(big))
        self.assertEqual(self.read(ch, files["out.bin"].digest), big)
        self.assertEqual(self.read(ch, files["small"].digest), big[:1000])

    def test_cancel_kills_the_action(self):
        srv, ch = self.start()
        mark, files = self.sleeper("cancel")
        d, blobs = make_action([mark, "60"], files=files)
        tb.upload(ch, blobs)
        stream = tb.execute(ch, d, skip_cache=True)
        first = next(stream)
        h.wait_for(lambda: h.procs_with(mark), 20, "the action to start")
        tb.cancel_operation(ch, first.name)
        h.wait_for(lambda: not h.procs_with(mark), 20, "the cancelled action to be killed")
        # The worker takes the next action.
        d, blobs = make_action(["/bin/true"])
        self.assertEqual(self.run_action(ch, d, blobs).result.exit_code, 0)

    def test_killed_worker_is_restarted_and_action_requeued(self):
        srv, ch = self.start(workers=UNSANDBOXED)
        flag = os.path.join(self.tmp, "flag")
        mark, files = self.sleeper("requeue")
        d, blobs = make_action(["/bin/sh", "-c",
                                "if [ -e %s ]; then echo second run; else touch %s; "
                                "exec %s 60; fi" % (flag, flag, mark)], files=files)
        tb.upload(ch, blobs)
        stream = tb.execute(ch, d, skip_cache=True, timeout=90)
        h.wait_for(lambda: os.path.exists(flag) and h.procs_with(mark), 20,
                   "the action to start")
        (victim,) = worker_procs(srv)
        os.kill(victim, signal.SIGKILL)
        # Its action dies with it (parent-death signal), reactord restarts
        # the worker, whose new session requeues the lease.
        h.wait_for(lambda: not h.procs_with(mark), 10, "the orphaned action to die")
        ops = tb.run_to_end(stream)
        r = tb.op_response(ops[-1])
        self.assertEqual(r.status.code, OK, r.status.message)
        self.assertEqual(self.read(ch, r.result.stdout_digest), b"second run\n")
        (new,) = worker_procs(srv)
        self.assertNotEqual(new, victim)
        self.assertRegex(srv.log(), r"worker \S+-local-0 was killed by signal 9")

    def test_two_workers_run_in_parallel(self):
        srv, ch = self.start(local=2, workers=UNSANDBOXED)
        import threading
        gate = os.path.join(self.tmp, "gate")
        results = []

        def one(i):
            d, blobs = make_action(["/bin/sh", "-c",
                                    "touch %s.%d; while [ ! -e %s.0 ] || [ ! -e %s.1 ]; do "
                                    "sleep 0.05; done; echo %d" % (gate, i, gate, gate, i)],
                                   timeout=30)
            results.append(self.run_action(ch, d, blobs))

        ts = [threading.Thread(target=one, args=(i,)) for i in range(2)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(60)
        self.assertEqual(len(results), 2)
        for r in results:
            self.assertEqual(r.status.code, OK, r.status.message)
            self.assertEqual(r.result.exit_code, 0)
        self.assertEqual(len({r.result.execution_metadata.worker for r in results}), 2)



class TestBazelRemoteExecution(WorkerCase):
    @unittest.skipUnless(BAZEL, "bazel not found in PATH")
    def test_genrules_run_remotely(self):
        srv, ch = self.start(local=2)
        ws, env, startup = h.bazel_setup(self.tmp)
        build = ["build", "--noshow_progress", "--color=no", "--curses=no",
                 "--repository_cache=", "--remote_executor=grpc://" + srv.tcp_addr,
                 "--remote_timeout=60", "--noremote_accept_cached", "//:all"]
        r = subprocess.run(startup + build, cwd=ws, env=env, stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           timeout=150 * h.SLOW)
        self.assertEqual(r.returncode, 0, "bazel failed:\n%s\nreactord log:\n%s" % (
            r.stdout[-4000:], srv.log_tail(40)))
        s = h.bazel_summary(r.stdout)
        print("\n  bazel remote execution: %s" % s, flush=True)
        self.assertEqual(s.get("remote", 0), 3, s)
        self.assertEqual(s.get("local", 0), 0, s)
        with open(os.path.join(ws, "bazel-bin", "upper.txt")) as f:
            self.assertEqual(f.read(), "HELLO FROM REACTORD\n")
        self.assertEqual(os.path.getsize(os.path.join(ws, "bazel-bin", "big.bin")), 5120000)
        self.assertRegex(srv.log(), r"completed job")


if __name__ == "__main__":
    h.main()
