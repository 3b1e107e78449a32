"""Read throughput of a read-only LMDB: decaf's reader process (decaf.data.lmdb_reader) against
iterating the same LMDB with py-lmdb in this process (what decaf did before it kept no
read-only environment in the user's process).

    .venv/bin/python benchmarks/lmdb_read.py [--records 60000] [--size 794] [--rounds 3]

Prints, per way of reading, the best wall time over the rounds, the CPU time of this process
and (for the reader) of the reader process.
"""
import argparse
import os
import resource
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import lmdb  # noqa: E402

from decaf.data.db import open_db  # noqa: E402


def children_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def read_decaf(path):
    with open_db("lmdb", path, "r") as db:
        cur = db.cursor()
        n = 0
        while cur.valid():
            cur.value()
            n += 1
            cur.next()
    return n


def read_in_process(path):
    env = lmdb.open(path, readonly=True)
    try:
        with env.begin(buffers=False) as txn:
            return sum(1 for _ in txn.cursor())
    finally:
        env.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=60000)
    ap.add_argument("--size", type=int, default=794, help="bytes per record (MNIST Datum: 794)")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    tmp = tempfile.mkdtemp()
    try:
        path = os.path.join(tmp, "db")
        payload = os.urandom(args.size)
        with open_db("lmdb", path, "new") as db, db.writer() as w:
            for i in range(args.records):
                w.put("%08d" % i, payload)
        for name, fn in (("decaf reader process", read_decaf),
                         ("py-lmdb in process", read_in_process)):
            best = cpu = child = float("inf")
            for _ in range(args.rounds):
                t, c, k = time.perf_counter(), time.process_time(), children_cpu()
                assert fn(path) == args.records
                best = min(best, time.perf_counter() - t)
                cpu = min(cpu, time.process_time() - c)
                child = min(child, children_cpu() - k)
            print("%-22s %d x %d B: %.3f s wall (%.1f us/record, %.0f MB/s), this process "
                  "%.3f s CPU, reader process %.3f s CPU"
                  % (name, args.records, args.size, best, best / args.records * 1e6,
                     args.records * args.size / best / 1e6, cpu, child))
    finally:
        shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
