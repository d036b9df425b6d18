#!/usr/bin/python3
"""test_pack.py - small blobs packed in segment files by the disk store
(storage-small-blob-size), end to end against a real reactord: a
BatchUpdateBlobs of 1,000 small blobs lands in a few segment files and not
in 1,000 files, reads back through BatchReadBlobs and ByteStream, and
survives a restart; reactord SIGKILLed in the middle of an upload loop
comes back with every blob it acknowledged readable and correct, a torn
record at a segment's end dropped, and FindMissingBlobs right; under
storage-max-size, small blobs are evicted least recently used first and
compaction keeps the segment files near the limit.

Each test starts its own reactord (and embedded redis-server) in a fresh
temp dir through harness.py and leaves no process behind.  Run by `make
check`; by hand: /usr/bin/python3 t/integ/test_pack.py [NAME-SUBSTRING...]
"""

import os
import sys
import threading
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness as h  # noqa: E402
from test_cas import CASTestCase, SC, KIB, blob, digest, dstr, read_name  # noqa: E402

HDR = 56  # record header (src/domain/blob_pack.h)


class PackTest(CASTestCase):
    def store_dir(self, srv=None):
        return os.path.join((srv or self.srv).state_dir, "cas", "default")

    def segments(self, srv=None):
        d = os.path.join(self.store_dir(srv), "pack")
        return {n: os.path.getsize(os.path.join(d, n)) for n in sorted(os.listdir(d))}

    def blob_files(self, srv=None):
        n = 0
        for _, _, files in os.walk(os.path.join(self.store_dir(srv), "cas")):
            n += len(files)
        return n

    def restart(self, old):
        """A new reactord on old's config and state dir (a killed one
        leaves its ready-file behind, naming its old port)."""
        if os.path.exists(old.cfg["ready-file"]):
            os.unlink(old.cfg["ready-file"])
        self.srv = self.start_reactord(cfg=old.cfg)
        self.ch = self.channel(self.srv.tcp_addr)
        return self.srv

    def start_packed(self, **inst):
        i = {"name": "", "storage-segment-size": "256KiB"}
        i.update(inst)
        return self.start({"instances": [i]})

    def test_batch_of_1000_small_blobs_packed_and_back(self):
        srv = self.start_packed()
        small = [blob("pack-%d" % i, KIB) for i in range(1000)]
        ds = self.put(*small)
        big = blob("pack-big", 200 * KIB)  # above the 64 KiB default: a file
        dbig = self.upload(big)
        self.assertEqual(self.blob_files(), 1)
        segs = self.segments()
        self.assertTrue(4 <= len(segs) <= 6, segs)
        self.assertEqual(sum(segs.values()), 1000 * (KIB + HDR))
        self.assertEqual(self.find_missing(ds + [dbig]), [])
        self.assertEqual([x[2] for x in self.batch_read(ds)], small)
        # ByteStream reads of packed blobs, at offsets too.
        self.assertEqual(self.read_blob(ds[7]), small[7])
        self.assertEqual(self.read(read_name(ds[8]), offset=1000)[0], small[8][1000:])
        self.assertEqual(self.read(read_name(ds[9]), offset=10, limit=20)[0], small[9][10:30])
        # And a small blob written through ByteStream is packed too.
        sb = blob("pack-bytestream", 3000)
        dsb = self.upload(sb, chunk=1000)
        self.assertEqual(self.blob_files(), 1)
        self.ch.close()
        self.assertEqual(srv.stop(), 0, srv.log_tail())
        self.restart(srv)
        # Asked at once: a miss finishes the segment scan first.
        absent = digest(b"never stored")
        self.assertEqual(self.find_missing(ds + [dbig, dsb, absent]), [dstr(absent)])
        self.assertEqual([x[2] for x in self.batch_read(ds)], small)
        self.assertEqual(self.read_blob(dsb), sb)
        self.assertEqual(self.read_blob(dbig), big)

    def test_fsync_on_stores_and_acknowledges(self):
        """storage-fsync: the batch path syncs each slice's group of packed
        blobs (check_blob counts the syncs of nested batches); here the
        configured store takes 1,000 small blobs and a file blob and has
        them after a restart."""
        srv = self.start_packed(**{"storage-fsync": True})
        small = [blob("fsync-%d" % i, KIB) for i in range(1000)]
        ds = self.put(*small)
        big = blob("fsync-big", 200 * KIB)
        dbig = self.upload(big)
        self.ch.close()
        self.assertEqual(srv.stop(), 0, srv.log_tail())
        self.restart(srv)
        self.assertEqual(self.find_missing(ds + [dbig]), [])
        self.assertEqual([x[2] for x in self.batch_read(ds)], small)
        self.assertEqual(self.read_blob(dbig), big)

    def test_threshold_zero_stores_files(self):
        self.start_packed(**{"storage-small-blob-size": 0})
        ds = self.put(*[blob("nopack-%d" % i, 100) for i in range(10)])
        self.assertEqual(self.blob_files(), 10)
        self.assertEqual(self.find_missing(ds), [])

    def test_sigkill_mid_upload_loses_nothing_acknowledged(self):
        srv = self.start_packed()
        acked, failed, stop = [], [], threading.Event()
        started = threading.Event()

        def uploader():
            k = 0
            while not stop.is_set():
                batch = [blob("kill-%d-%d" % (k, i), 512 + 37 * i) for i in range(40)]
                try:
                    self.put(*batch)
                except Exception:  # the kill: this batch is unacknowledged
                    failed.append(batch)
                    return
                acked.extend(batch)
                k += 1
                if k == 25:
                    started.set()

        t = threading.Thread(target=uploader)
        t.start()
        self.assertTrue(started.wait(60 * h.SLOW), "uploads did not get going")
        srv.expected_rc = -9
        srv.kill()  # SIGKILL, in the middle of the loop
        stop.set()
        t.join(30)
        self.assertFalse(t.is_alive())
        self.ch.close()
        self.assertGreaterEqual(len(acked), 1000)
        # What a crash mid-append leaves: half a record at the end of the
        # newest segment.  The restart drops it and keeps the rest.
        segs = self.segments(srv)
        last = os.path.join(self.store_dir(srv), "pack", max(segs))
        with open(last, "ab") as f:
            f.write(b"RBP1" + b"\x55" * 30)
        self.restart(srv)
        ds = [digest(b) for b in acked]
        self.assertEqual(self.find_missing(ds), [])
        for i in range(0, len(acked), 200):
            self.assertEqual([x[2] for x in self.batch_read(ds[i:i + 200])], acked[i:i + 200])
        self.srv.wait_log("torn record", timeout=5)
        self.assertEqual(os.path.getsize(last), segs[max(segs)])
        # Never-sent blobs are missing; the interrupted batch may or may
        # not have landed, but whatever is there reads back correctly.
        never = [digest(blob("never-%d" % i, 700)) for i in range(5)]
        self.assertEqual(sorted(self.find_missing(never)), sorted(dstr(d) for d in never))
        for batch in failed:
            present = set(dstr(d) for d in map(digest, batch)) - set(
                self.find_missing([digest(b) for b in batch]))
            for b in batch:
                if dstr(digest(b)) in present:
                    self.assertEqual(self.read_blob(digest(b)), b)
        # And the store takes new blobs after the repair.
        more = self.put(*[blob("after-%d" % i, 900) for i in range(100)])
        self.assertEqual(self.find_missing(more), [])

    def test_max_size_eviction_with_small_blobs(self):
        limit = 200 * KIB
        self.start_packed(**{"storage-max-size": limit, "storage-segment-size": "64KiB"})
        batches = []
        for k in range(10):
            batch = [blob("evict-%d-%d" % (k, i), KIB) for i in range(100)]
            batches.append(self.put(*batch))
            present = 0
            for b in batches:
                present += len(b) - len(self.find_missing(b))
            self.assertLessEqual(present * KIB, limit)
            # The newest batch is all there (the oldest go first).
            self.assertEqual(self.find_missing(batches[-1]), [])
        self.assertEqual(len(self.find_missing(batches[0])), 100)
        # Compaction gives the evicted blobs' space back: the segments end
        # up near the live bytes, far below the 10 x 100 KiB stored.
        h.wait_for(lambda: sum(self.segments().values()) < 2 * limit, 10 * h.SLOW,
                   "compaction to reclaim evicted space (%s)" % self.segments())
        last = batches[-1]
        self.assertEqual(self.find_missing(last), [])
        self.assertEqual(len(self.batch_read(last)), 100)


if __name__ == "__main__":
    h.main()
