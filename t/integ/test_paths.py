#!/usr/bin/python3
"""test_paths.py - input trees and Command paths cannot reach outside the
exec root (issue 11, section 2): real reactord, real local reactor-worker,
hand-built Directory / Command / Action messages sent through grpcio.

Each attack asserts the exact status and message of the ExecuteResponse,
that a host directory next to the test (a marker file and a secret file)
is exactly as it was (nothing created, changed or removed there), that the
secret's bytes never reached the CAS (FindMissingBlobs still misses them),
and that the worker goes on to run a good action.  The attacks:

- a FileNode and a SymlinkNode with the same name, the link pointing into
  the host directory (absolutely, and relatively through a chain of
  symlinks that a lexical check alone would let through);
- bad names (`..`, `.`, `a/b`, empty), unsorted and duplicate entries;
- an absolute symlink target (the server advertises DISALLOWED);
- output `o/sub/leak` where input `o` is a symlink into the host directory;
- working_directory through such a symlink, and with `..` or absolute;
- `..` (and other non-normal paths) in output_files, output_directories and
  output_paths;
- outputs the action turns into symlinks to the host secret or directory:
  reported as symlinks, never followed, never uploaded; an absolute output
  symlink is FAILED_PRECONDITION (DISALLOWED).

TestPathsWalk repeats the escapes with REACTOR_WORKER_NO_OPENAT2=1, the
worker's component-by-component fallback for kernels without openat2.

Run by `make check`; by hand: /usr/bin/python3 t/integ/test_paths.py [NAME...]
"""

import hashlib
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness as h  # noqa: E402
import testbot as tb  # noqa: E402
from harness import pb  # noqa: E402
from test_worker import WorkerCase  # noqa: E402

OK, INVALID_ARGUMENT, FAILED_PRECONDITION = 0, 3, 9
FIND_MISSING = "/build.bazel.remote.execution.v2.ContentAddressableStorage/FindMissingBlobs"
# Deeper than any exec root path: this many ".." from the root reach "/".
DEPTH = 40
OUTSIDE = "leads outside the exec root (through a symlink)"
WALK_REFUSED = "goes through a symlink where none is allowed"


def sha(b):
    return hashlib.sha256(b).hexdigest()


class Blobs(dict):
    """Hand-built trees: entries stay in the order given (so tests can
    send unsorted ones)."""

    def put(self, data):
        self[sha(data)] = data
        return tb.digest_of(data)

    def dir(self, files=(), dirs=(), links=()):
        re_ = pb().re
        d = re_.Directory()
        for name, data in files:
            d.files.add(name=name, digest=self.put(data))
        for name, digest in dirs:
            d.directories.add(name=name, digest=digest)
        for name, target in links:
            d.symlinks.add(name=name, target=target)
        return self.put(d.SerializeToString())

    def chain(self):
        """("c0", digest): directories c0/c1/.../c{DEPTH-1} whose deepest
        holds the symlink r -> DEPTH x "../", i.e. back to the root; with
        chain_to(path), a link at the root that every lexical check passes
        (it never climbs above the root on paper) but that resolves to
        path on the host."""
        d = self.dir(links=[("r", "../" * DEPTH)])
        for i in reversed(range(1, DEPTH)):
            d = self.dir(dirs=[("c%d" % i, d)])
        return ("c0", d)

    def action(self, root, args, wd="", output_paths=(), output_files=(), output_dirs=()):
        re_ = pb().re
        cmd = re_.Command(arguments=list(args), working_directory=wd,
                          output_paths=list(output_paths), output_files=list(output_files),
                          output_directories=list(output_dirs))
        cmd.environment_variables.add(name="PATH", value="/usr/bin:/bin")
        act = re_.Action(command_digest=self.put(cmd.SerializeToString()),
                         input_root_digest=root, do_not_cache=True)
        return self.put(act.SerializeToString())


def chain_to(path):
    return "/".join("c%d" % i for i in range(DEPTH)) + "/r/" + "../" * DEPTH + path.lstrip("/")


def escape(path):
    """A relative symlink target that leaves any exec root for path."""
    return "../" * DEPTH + path.lstrip("/")


class PathsCase(WorkerCase):
    walk = False

    def setUp(self):
        super().setUp()
        if self.walk:
            os.environ["REACTOR_WORKER_NO_OPENAT2"] = "1"
            self.addCleanup(os.environ.pop, "REACTOR_WORKER_NO_OPENAT2", None)
        self.srv, self.ch = self.start()
        self.host = os.path.join(self.tmp, "host")
        os.mkdir(self.host)
        with open(os.path.join(self.host, "marker"), "w") as f:
            f.write("untouched\n")
        self.secret_bytes = b"host secret " + os.urandom(16).hex().encode() + b"\n"
        self.secret = os.path.join(self.host, "secret")
        with open(self.secret, "wb") as f:
            f.write(self.secret_bytes)
        self.before = self.snapshot()
        self.outside = WALK_REFUSED if self.walk else OUTSIDE

    def snapshot(self):
        """Everything under the host directory, with contents and modes."""
        out = {}
        for dirpath, dirs, files in os.walk(self.host):
            for n in dirs + files:
                p = os.path.join(dirpath, n)
                st = os.lstat(p)
                data = None
                if os.path.isfile(p):
                    with open(p, "rb") as f:
                        data = f.read()
                out[os.path.relpath(p, self.host)] = (st.st_mode, data)
        return out

    def run_blobs(self, blobs, digest):
        return self.run_action(self.ch, digest, blobs)

    def expect(self, r, code, message):
        self.assertEqual((r.status.code, r.status.message), (code, message))
        self.assertFalse(r.HasField("result") and r.result.output_files,
                         "a refused action has no outputs")

    def assert_host_untouched(self):
        self.assertEqual(self.snapshot(), self.before, "the host directory changed")
        re_ = pb().re
        resp = h.unary(self.ch, FIND_MISSING, re_.FindMissingBlobsRequest,
                       re_.FindMissingBlobsResponse)(
            re_.FindMissingBlobsRequest(blob_digests=[tb.digest_of(self.secret_bytes)]),
            timeout=10)
        self.assertEqual([d.hash for d in resp.missing_blob_digests], [sha(self.secret_bytes)],
                         "the host secret was uploaded to the CAS")

    def assert_still_serving(self):
        """The worker takes a good action after the refused ones."""
        b = Blobs()
        root = b.dir(files=[("in", b"good input\n")])
        r = self.run_blobs(b, b.action(root, ["/bin/sh", "-c", "cp in out"],
                                       output_paths=["out"]))
        self.assertEqual(r.status.code, OK, r.status.message)
        self.assertEqual([f.digest.hash for f in r.result.output_files], [sha(b"good input\n")])
        self.assert_serving(self.srv)
        self.assert_host_untouched()

    # ---- the input tree ----------------------------------------------------------

    def case_file_and_symlink_with_one_name(self):
        for target in (os.path.join(self.host, "x"), chain_to(os.path.join(self.host, "x"))):
            b = Blobs()
            chain = [b.chain()] if not target.startswith("/") else []
            root = b.dir(files=[("x", b"written through the link\n")], dirs=chain,
                         links=[("x", target)])
            r = self.run_blobs(b, b.action(root, ["/bin/true"]))
            self.expect(r, INVALID_ARGUMENT,
                        'input tree: "x": the name is used by both a file and a symlink')
            self.assert_host_untouched()
        self.assert_still_serving()

    def test_bad_names(self):
        cases = [
            ("..", 'input tree: "..": file name ".." is not allowed'),
            (".", 'input tree: ".": file name "." is not allowed'),
            ("a/b", 'input tree: "a/b": file name "a/b" contains "/"'),
            ("", 'input tree: ".": a file has an empty name'),
        ]
        for name, msg in cases:
            b = Blobs()
            r = self.run_blobs(b, b.action(b.dir(files=[(name, b"x")]), ["/bin/true"]))
            self.expect(r, INVALID_ARGUMENT, msg)
        # One level down, the message names the whole path.
        b = Blobs()
        sub = b.dir(dirs=[("..", b.dir())])
        r = self.run_blobs(b, b.action(b.dir(dirs=[("sub", sub)]), ["/bin/true"]))
        self.expect(r, INVALID_ARGUMENT, 'input tree: "sub/..": directory name ".." is not allowed')
        self.assert_still_serving()

    def test_unsorted_and_duplicate_names(self):
        b = Blobs()
        r = self.run_blobs(b, b.action(b.dir(files=[("b", b"1"), ("a", b"2")]), ["/bin/true"]))
        self.expect(r, INVALID_ARGUMENT,
                    'input tree: "a": files are not sorted by name ("a" is listed after "b")')
        b = Blobs()
        sub = b.dir(files=[("a", b"1"), ("a", b"2")])
        r = self.run_blobs(b, b.action(b.dir(dirs=[("d", sub)]), ["/bin/true"]))
        self.expect(r, INVALID_ARGUMENT, 'input tree: "d/a": two files have this name')
        b = Blobs()
        root = b.dir(files=[("same", b"1")], dirs=[("same", b.dir())])
        r = self.run_blobs(b, b.action(root, ["/bin/true"]))
        self.expect(r, INVALID_ARGUMENT,
                    'input tree: "same": the name is used by both a file and a directory')
        self.assert_still_serving()

    def test_absolute_symlink_target(self):
        b = Blobs()
        root = b.dir(links=[("o", self.host)])
        r = self.run_blobs(b, b.action(root, ["/bin/true"], output_paths=["o/sub/leak"]))
        self.expect(r, INVALID_ARGUMENT,
                    'input tree: "o": symlink target "%s" is absolute, and this server\'s '
                    "symlink_absolute_path_strategy is DISALLOWED" % self.host)
        self.assert_still_serving()

    # ---- output parents and the working directory -------------------------------------

    def case_output_parent_through_input_symlink(self):
        for kw, field in (({"output_paths": ["o/sub/leak"]}, "output_paths[0]"),
                          ({"output_files": ["o/sub/leak"]}, "output_files[0]"),
                          ({"output_dirs": ["o/sub/leak"]}, "output_directories[0]")):
            b = Blobs()
            root = b.dir(dirs=[b.chain()], links=[("o", chain_to(self.host))])
            r = self.run_blobs(b, b.action(root, ["/bin/sh", "-c", "echo x > o/sub/leak"],
                                           **kw))
            self.expect(r, FAILED_PRECONDITION,
                        'cannot create the parent of %s "o/sub/leak": "o" %s'
                        % (field, self.outside))
            self.assert_host_untouched()
        self.assert_still_serving()

    def case_working_directory_through_symlink(self):
        b = Blobs()
        root = b.dir(dirs=[b.chain()], links=[("w", chain_to(self.host))])
        r = self.run_blobs(b, b.action(root, ["/bin/sh", "-c", "echo pwned > pwned; cat secret"],
                                       wd="w", output_paths=["secret"]))
        self.expect(r, FAILED_PRECONDITION,
                    'cannot create the working_directory "w": "w" %s' % self.outside)
        self.assert_host_untouched()
        self.assert_still_serving()

    def test_working_directory_lexical(self):
        for wd, msg in (("w/../..", 'working_directory "w/../..": ".." is not allowed'),
                        ("../x", 'working_directory "../x": ".." is not allowed'),
                        (self.host, 'working_directory "%s" is absolute: it must be relative'
                         % self.host),
                        ("a//b", 'working_directory "a//b" has an empty component')):
            b = Blobs()
            r = self.run_blobs(b, b.action(b.dir(), ["/bin/sh", "-c", "echo x > pwned"],
                                           wd=wd))
            self.expect(r, INVALID_ARGUMENT, "bad Command: " + msg)
        self.assert_still_serving()

    def test_dotdot_in_output_fields(self):
        cases = [
            ({"output_files": ["ok", "../x"]}, 'output_files[1] "../x": ".." is not allowed'),
            ({"output_dirs": ["a/../../x"]},
             'output_directories[0] "a/../../x": ".." is not allowed'),
            ({"output_paths": ["../../host/marker"]},
             'output_paths[0] "../../host/marker": ".." is not allowed'),
            ({"output_paths": ["a/.."]}, 'output_paths[0] "a/..": ".." is not allowed'),
            ({"output_paths": [self.secret]},
             'output_paths[0] "%s" is absolute: it must be relative' % self.secret),
            ({"output_files": [""]}, "output_files[0] is empty"),
            ({"output_dirs": ["d/"]}, 'output_directories[0] "d/" has an empty component'),
        ]
        for kw, msg in cases:
            b = Blobs()
            r = self.run_blobs(b, b.action(b.dir(), ["/bin/true"], **kw))
            self.expect(r, INVALID_ARGUMENT, "bad Command: " + msg)
        self.assert_still_serving()

    # ---- outputs the action turns into symlinks -----------------------------------

    def case_output_symlinks_are_not_followed(self):
        rel = escape(self.secret)
        script = "mkdir -p out; ln -s %s out/rel; ln -s %s od" % (rel, escape(self.host))
        # Pre-v2.1 fields: the old worker followed these and uploaded the secret.
        b = Blobs()
        r = self.run_blobs(b, b.action(b.dir(), ["/bin/sh", "-c", script],
                                       output_files=["out/rel"], output_dirs=["od"]))
        self.assertEqual(r.status.code, OK, r.status.message)
        res = r.result
        self.assertEqual(list(res.output_files), [])
        self.assertEqual(list(res.output_directories), [])
        self.assertEqual([(s.path, s.target) for s in res.output_file_symlinks],
                         [("out/rel", rel)])
        self.assertEqual([(s.path, s.target) for s in res.output_directory_symlinks],
                         [("od", escape(self.host))])
        self.assert_host_untouched()
        # output_paths, and a symlink inside an output directory.
        b = Blobs()
        r = self.run_blobs(b, b.action(
            b.dir(), ["/bin/sh", "-c", script + "; mkdir d; ln -s %s d/s" % escape(self.secret)],
            output_paths=["out/rel", "d", "od"]))
        self.assertEqual(r.status.code, OK, r.status.message)
        res = r.result
        self.assertEqual(sorted((s.path, s.target) for s in res.output_symlinks),
                         [("od", escape(self.host)), ("out/rel", rel)])
        tree = pb().re.Tree.FromString(self.read(self.ch, res.output_directories[0].tree_digest))
        self.assertEqual([(s.name, s.target) for s in tree.root.symlinks],
                         [("s", escape(self.secret))])
        self.assertEqual(list(tree.root.files), [])
        self.assert_host_untouched()
        self.assert_still_serving()

    def case_output_parent_made_a_symlink_by_the_action(self):
        b = Blobs()
        script = "rmdir lnk; ln -s %s lnk; cat lnk/secret" % escape(self.host)
        r = self.run_blobs(b, b.action(b.dir(), ["/bin/sh", "-c", script],
                                       output_paths=["lnk/secret"]))
        self.expect(r, FAILED_PRECONDITION, 'output "lnk/secret": "lnk" %s' % self.outside)
        self.assert_host_untouched()
        self.assert_still_serving()

    def test_absolute_output_symlink(self):
        b = Blobs()
        r = self.run_blobs(b, b.action(b.dir(), ["/bin/sh", "-c", "ln -s %s abs" % self.secret],
                                       output_paths=["abs"]))
        self.expect(r, FAILED_PRECONDITION,
                    'output "abs" is a symlink to the absolute path "%s", and this server\'s '
                    "symlink_absolute_path_strategy is DISALLOWED" % self.secret)
        self.assert_still_serving()


CASES = [n for n in dir(PathsCase) if n.startswith("case_")]


class TestPaths(PathsCase):
    pass


class TestPathsWalk(PathsCase):
    """The escapes again, on the worker's fallback without openat2."""
    walk = True


for _n in CASES:
    setattr(TestPaths, "test_" + _n[5:], lambda self, _n=_n: getattr(self, _n)())
    setattr(TestPathsWalk, "test_" + _n[5:], lambda self, _n=_n: getattr(self, _n)())
# The lexical checks run before any path is resolved: once is enough.
for _n in [n for n in dir(PathsCase) if n.startswith("test_")]:
    setattr(TestPathsWalk, _n, None)
del PathsCase

if __name__ == "__main__":
    unittest.main(verbosity=2)
