#!/usr/bin/env python
"""The long fuzz run: N seeded mutated inputs per reader, counts per outcome.

Usage:  ulimit -v 8000000; python scripts/fuzz.py --per-reader 10000 [--seed 1] [--readers a,b]

Each case runs in a worker process (a fresh directory, a per-case time limit) and ends as ok,
error (a decaf error naming the file or layer), unnamed (a decaf error naming neither),
internal (any other exception), hang (past the time limit) or kill (the worker died). Prints
one table row per reader as it finishes and the first examples of every defect; the exit
status is 1 when there is any defect. Cases are reproducible from their id
(reader/seed/number), see tests/fuzz/readers.py.
"""
import argparse
import os
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from tests.fuzz import harness, readers  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-reader", type=int, default=10000)
    parser.add_argument("--seed", type=int, default=1, help="1 and up: not the CI run's 0")
    parser.add_argument("--readers", default=",".join(sorted(readers.READERS)))
    parser.add_argument("--timeout", type=float, default=20.0, help="seconds per case")
    args = parser.parse_args(argv)
    names = [n for n in args.readers.split(",") if n]
    unknown = [n for n in names if n not in readers.READERS]
    if unknown:
        parser.error("unknown readers %s (known: %s)" % (unknown, ", ".join(readers.READERS)))
    start = time.time()

    def progress(name, tally):
        c = tally.counts[name]
        print("%-16s %s  (%.0fs)" % (name, "  ".join("%s %d" % (s, c[s])
                                                      for s in harness.STATUSES),
                                      time.time() - start), flush=True)

    tally = harness.fuzz(names, args.per_reader, args.seed, args.timeout, progress)
    print(tally.report())
    print("%d cases in %.0fs, %d defects" % (sum(sum(c.values()) for c in tally.counts.values()),
                                             time.time() - start, tally.defects()))
    return 1 if tally.defects() else 0


if __name__ == "__main__":
    sys.exit(main())
