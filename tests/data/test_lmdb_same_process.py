"""py-lmdb beside a decaf net in one process (a notebook): the user's ``lmdb.open`` of the
training LMDB works before and after a net that reads it, as with real pycaffe. decaf reads
read-only LMDBs through a reader process (decaf.data.lmdb_reader), so py-lmdb's "already open
in this process" guard never sees a second environment."""
import gc

import lmdb
import numpy as np
import pytest

import caffe
from decaf.data.db import DBError, _ReaderCache, open_db
from decaf.io import array_to_datum

NET = """name: "n"
layer { name: "data" type: "Data" top: "data" top: "label"
        data_param { source: "%s" backend: LMDB batch_size: 4 } }
"""


@pytest.fixture
def db_path(tmp_path):
    """An LMDB of 10 Datum records 1x2x3, record i full of the value i, label i % 3."""
    path = str(tmp_path / "train_lmdb")
    with open_db("lmdb", path, "new") as db, db.writer() as w:
        for i in range(10):
            datum = array_to_datum(np.full((1, 2, 3), i, np.uint8), i % 3)
            w.put("%08d" % i, datum.SerializeToString())
    return path


def make_net(tmp_path, db_path):
    proto = tmp_path / "net.prototxt"
    proto.write_text(NET % db_path)
    return caffe.Net(str(proto), caffe.TRAIN)


def user_reads(env):
    """What a notebook does: iterate the records with py-lmdb and parse them."""
    out = []
    with env.begin() as txn:
        for _, value in txn.cursor():
            datum = caffe.proto.caffe_pb2.Datum()
            datum.ParseFromString(value)
            out.append((datum.data[0], datum.label))
    return out


EXPECT = [(i, i % 3) for i in range(10)]


def check_batches(net, first):
    for b in range(3):
        net.forward()
        idx = [(first + 4 * b + k) % 10 for k in range(4)]
        np.testing.assert_array_equal(net.blobs["data"].data[:, 0, 0, 0], idx)
        np.testing.assert_array_equal(net.blobs["label"].data, [i % 3 for i in idx])


@pytest.mark.parametrize("flags", [{}, {"readonly": True}, {"readonly": True, "lock": False}])
def test_user_env_first_then_net(tmp_path, db_path, flags):
    env = lmdb.open(db_path, **flags)
    try:
        assert user_reads(env) == EXPECT
        net = make_net(tmp_path, db_path)
        check_batches(net, 0)
        assert user_reads(env) == EXPECT          # the user's env is untouched by the net
        del net
        gc.collect()
        assert user_reads(env) == EXPECT
    finally:
        env.close()


def test_net_first_then_user_env(tmp_path, db_path):
    net = make_net(tmp_path, db_path)
    net.forward()
    env = lmdb.open(db_path, readonly=True)       # refused before, "already open in this process"
    try:
        assert user_reads(env) == EXPECT
        check_batches(net, 4)
    finally:
        env.close()
    check_batches(net, 16 % 10)                   # and the net goes on after the user closed


def test_reader_process_shared_and_ended(db_path):
    a = open_db("lmdb", db_path, "r")
    b = open_db("lmdb", db_path, "r")
    assert a.reader is b.reader and len(a) == 10
    proc = a.reader._proc
    cur = a.cursor()
    keys = [k for k, _ in cur]
    assert keys == [b"%08d" % i for i in range(10)]
    a.close()
    assert proc.poll() is None                    # b still uses it
    b.close()
    assert proc.poll() is not None                # the last close ends the reader process
    assert db_path not in str(_ReaderCache.readers)


def test_chunked_cursor_wraps_and_seeks(db_path, monkeypatch):
    from decaf.data import lmdb_reader
    monkeypatch.setattr(lmdb_reader, "CHUNK_RECORDS", 3)   # several chunks for 10 records
    with open_db("lmdb", db_path, "r") as db:
        cur = db.cursor()
        seen = []
        for _ in range(23):
            seen.append(int(cur.key()))
            cur.advance()
        assert seen == [i % 10 for i in range(23)]
        cur.seek_to_first()
        assert cur.valid() and cur.key() == b"00000000"


def test_reader_death_is_a_clear_error(db_path, monkeypatch):
    from decaf.data import lmdb_reader
    monkeypatch.setattr(lmdb_reader, "CHUNK_RECORDS", 3)
    with open_db("lmdb", db_path, "r") as db:
        cur = db.cursor()
        db.reader._proc.kill()
        db.reader._proc.wait()
        with pytest.raises(DBError, match="reader process .* ended unexpectedly"):
            for _ in range(4):
                cur.next()


def test_forked_child_opens_its_own_reader(db_path):
    import os
    if not hasattr(os, "fork"):
        pytest.skip("no fork() on this platform")
    db = open_db("lmdb", db_path, "r")
    cur = db.cursor()
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:   # child: the parent's cursor refuses, a fresh open works
        code = 1
        try:
            try:
                db.reader.send(b"S")
            except Exception as e:
                refused = "after fork()" in str(e)
            with open_db("lmdb", db_path, "r") as mine:
                code = 0 if refused and len(mine) == 10 and mine.reader is not db.reader else 2
        finally:
            os.write(wfd, bytes([code]))
            os._exit(0)
    os.close(wfd)
    result = os.read(rfd, 1)
    os.waitpid(pid, 0)
    assert result == b"\x00"
    assert [k for k, _ in cur][:2] == [b"00000000", b"00000001"]   # the parent is unaffected
    db.close()
