"""The CI fuzz run: every reader gets a few hundred mutated real files (seeded, so a failure
is reproducible from its case id) and must end each in success or a decaf error naming the
file or layer: no internal exception, no hang, no kill (see harness.py). The long run is
``scripts/fuzz.py --per-reader 10000``."""
import os
import signal
import time

import pytest

from decaf.errors import DecafError

from . import harness, readers

PER_READER = int(os.environ.get("DECAF_FUZZ_PER_READER", "200"))


@pytest.fixture(scope="module")
def worker():
    with harness.Harness(timeout=30.0) as h:
        yield h


def _run(worker, cases):
    tally = harness.Tally()
    for case in cases:
        tally.add(case, *worker.run(case))
    print(tally.report())
    return tally


@pytest.mark.parametrize("name", sorted(readers.READERS))
def test_reader_survives_mutated_inputs(worker, name):
    tally = _run(worker, readers.make_cases(name, PER_READER, seed=0))
    assert sum(tally.counts[name].values()) == PER_READER
    assert tally.defects() == 0, tally.report()


class _SelfTest(readers.Reader):
    """A reader that misbehaves on purpose: the harness must see each kind of defect."""

    name = "selftest"

    def run(self, case):
        what = case["spec"]
        if what == "hang":
            time.sleep(60)
        elif what == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        elif what == "internal":
            raise ValueError("cannot reshape array of size 4 into shape (12,)")
        elif what == "unnamed":
            raise DecafError("something is wrong somewhere")
        elif what == "error":
            raise DecafError("x.bin: truncated")
        elif what == "memory":
            bytearray(16 * 10 ** 9)          # past the worker's address-space limit


def test_harness_classifies_every_outcome(monkeypatch):
    monkeypatch.setitem(readers.READERS, "selftest", _SelfTest())
    kinds = ["ok", "error", "unnamed", "internal", "hang", "kill", "memory", "ok"]
    cases = [{"reader": "selftest", "files": {}, "main": "x.bin", "spec": k, "id": k}
             for k in kinds]
    with harness.Harness(timeout=1.0) as h:
        got = [h.run(c)[0] for c in cases]
    assert got == ["ok", "error", "unnamed", "internal", "hang", "kill", "internal", "ok"]
