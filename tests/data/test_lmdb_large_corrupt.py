"""LMDBs bigger than LMDB_CHECK_BYTES (64 MiB): corrupt pages there are refused when the
database is opened, and a reader process that crashes anyway becomes a DBError naming the
database, never a hang.

The big databases are sparse: a small LMDB whose last leaf page is moved past 64 MiB (the
branch node and the meta page pointing to it are rewritten), so the file is 64 MiB long but
holds ~50 KB on disk."""
import os
import signal
import struct
import time

import lmdb
import pytest

from decaf.data import lmdb_reader
from decaf.data.db import DBError, open_db
from decaf.errors import DataSourceError

PSIZE = 4096
FAR = lmdb_reader.LMDB_CHECK_BYTES // PSIZE + 100     # a page number past 64 MiB


def _small_lmdb(path, n=600):
    env = lmdb.open(path, map_size=1 << 30)
    with env.begin(write=True) as txn:
        for i in range(n):
            txn.put(b"small%06d" % i, b"x" * (i % 50))
    env.close()


def _move_last_leaf(path, to):
    """Move the last child of the root branch page to page ``to``; return its page bytes'
    offset in the file."""
    name = os.path.join(path, "data.mdb")
    data = bytearray(open(name, "rb").read())
    meta = max((struct.unpack_from("<Q", data, m * PSIZE + 16 + 128)[0], m) for m in (0, 1))[1]
    moff = meta * PSIZE + 16
    root = struct.unpack_from("<Q", data, moff + 112)[0]
    flags, lower = struct.unpack_from("<HH", data, root * PSIZE + 10)
    assert flags & 0x01, "the root is a branch page"
    node = struct.unpack_from("<H", data, root * PSIZE + 16 + 2 * ((lower - 16) // 2 - 1))[0]
    lo, hi, top = struct.unpack_from("<HHH", data, root * PSIZE + node)
    leaf = lo | hi << 16 | top << 32
    page = bytearray(data[leaf * PSIZE:(leaf + 1) * PSIZE])
    struct.pack_into("<Q", page, 0, to)                                   # its own number
    struct.pack_into("<HHH", data, root * PSIZE + node, to & 0xFFFF, to >> 16 & 0xFFFF, to >> 32)
    struct.pack_into("<Q", data, moff + 120, to)                          # last page
    with open(name, "r+b") as f:
        f.write(data)
        f.seek(to * PSIZE)
        f.write(page)
    return to * PSIZE


@pytest.fixture
def big(tmp_path):
    path = str(tmp_path / "big_lmdb")
    _small_lmdb(path)
    offset = _move_last_leaf(path, FAR)
    st = os.stat(os.path.join(path, "data.mdb"))
    assert st.st_size > lmdb_reader.LMDB_CHECK_BYTES
    assert st.st_blocks * 512 < 1 << 20            # sparse: the test writes almost nothing
    return path, offset


def _read_all(path):
    with open_db("lmdb", path, "r") as db:
        return [k for k, _ in db.cursor()]


def test_a_sound_big_database_reads(big):
    path, _ = big
    keys = _read_all(path)
    assert len(keys) == 600 and keys[-1] == b"small000599"


def test_a_node_outside_its_page_past_64mib_is_refused(big):
    path, offset = big
    with open(os.path.join(path, "data.mdb"), "r+b") as f:
        f.seek(offset + 16)
        f.write(b"\xff\x0f")                       # node 0 of the far page points away
    with pytest.raises(DataSourceError, match="big_lmdb is corrupt: page %d: node 0" % FAR):
        _read_all(path)


def test_a_page_that_is_not_what_its_parent_says_is_refused(big):
    path, offset = big
    with open(os.path.join(path, "data.mdb"), "r+b") as f:
        f.seek(offset + 10)
        f.write(struct.pack("<H", 0x01))           # the far leaf claims to be a branch page
    with pytest.raises(DBError, match="page %d is not the leaf page" % FAR):
        _read_all(path)


def test_a_crashing_reader_is_a_dberror_naming_the_database(big):
    path, _ = big
    start = time.monotonic()
    with open_db("lmdb", path, "r") as db:
        cursor = db.cursor()
        os.kill(db.reader._proc.pid, signal.SIGSEGV)   # what liblmdb does on a bad page
        with pytest.raises(DBError, match=r"reader process of .*big_lmdb ended unexpectedly \(killed by "
                                         r"SIGSEGV\): the database is probably corrupt"):
            for _ in range(10000):                     # past the read-ahead chunk
                cursor.next()
                cursor.seek_to_first()
    assert time.monotonic() - start < 10
