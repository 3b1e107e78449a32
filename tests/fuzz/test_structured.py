"""Structure-aware fuzzing with hypothesis: nets with cycles, missing bottoms, wrong bottom
counts and absurd shapes; HDF5Data sources with wrong dims and dtypes; databases of corrupt
Datum records. hypothesis draws every choice (st.randoms without true randomness, so failures
shrink); each case runs in the harness's worker under its time and memory limits."""
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from . import harness, readers
from .netgen import random_net

SETTINGS = settings(max_examples=120, deadline=None, database=None, derandomize=True,
                    suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def worker():
    with harness.Harness(timeout=30.0) as h:
        yield h


def _check(worker, case):
    status, detail = worker.run(case)
    assert status in ("ok", "error"), "%s: %s\n%s" % (status, detail,
                                                      case["files"].get("net.prototxt", b""))


@SETTINGS
@given(r=st.randoms(use_true_random=False))
def test_random_nets_build_or_fail_clearly(worker, r):
    case = readers.READERS["net_graph"].case(None, None, text=random_net(r))
    case.update(reader="net_graph", id="hypothesis")
    _check(worker, case)


@SETTINGS
@given(r=st.randoms(use_true_random=False))
def test_hdf5_sources_with_wrong_dims_and_dtypes(worker, r):
    case = readers.READERS["hdf5_data"].case(r, None, spec=readers.hdf5_spec(r))
    case.update(reader="hdf5_data", id="hypothesis")
    _check(worker, case)


@SETTINGS
@given(r=st.randoms(use_true_random=False), backend=st.sampled_from(["lmdb", "leveldb"]))
def test_corrupt_datum_records(worker, r, backend):
    reader = readers.READERS["%s_datum" % backend]
    case = reader.case(r, reader.seeds())
    case.update(reader=reader.name, id="hypothesis")
    _check(worker, case)
