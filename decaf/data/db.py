"""Caffe's key-value databases of serialized records: LMDB and LevelDB (``caffe/util/db*.cpp``).

``open_db(backend, source, mode)`` returns a DB with Caffe's interface:

* ``db.cursor()``: a Cursor positioned at the first record, iterating in key order (bytewise, as
  both LMDB and LevelDB sort keys). ``cursor.key()``, ``cursor.value()``, ``cursor.valid()``,
  ``cursor.next()``, ``cursor.seek_to_first()`` are Caffe's; ``cursor.advance()`` is Caffe's
  DataLayer::Next: step, and seek back to the first record at the end (wrap around).
* ``db.transaction()``: buffers ``put(key, value)`` and writes them all in one ``commit()``.
  LMDB doubles its map size and retries when the map is full, as Caffe's LMDBTransaction does.
* ``db.writer(records_per_commit=1000)``: a Transaction that commits by itself every N puts and
  at exit (Caffe's tools commit every 1000 records).

Modes: ``"r"`` (read only; the DB must exist), ``"w"`` (read/write, created when missing),
``"new"`` (create; fails when it already exists, as Caffe's ``db::NEW``).
A read-only LMDB is read through a helper process (``lmdb_reader``), one per database, so that
the user's own ``lmdb.open`` of it works in the same process (py-lmdb allows one environment
per file and process).
LevelDB is read and written through ``plyvel`` (a core dependency).
"""
import os
import struct
import threading

from ..errors import DataSourceError

READ, WRITE, NEW = "r", "w", "new"
_MODES = {"r": READ, "read": READ, "w": WRITE, "write": WRITE, "new": NEW}
LMDB_DEFAULT_MAP_SIZE = 10485760  # liblmdb's default, which Caffe keeps and doubles on demand


class DBError(DataSourceError):
    """A database that cannot be opened, read or written."""


def backend_name(backend):
    """'lmdb' or 'leveldb' from a name (any case) or a DataParameter.DB enum value (0/1)."""
    if isinstance(backend, str):
        name = backend.strip().lower()
        if name in ("lmdb", "leveldb"):
            return name
    elif backend in (0, 1) and not isinstance(backend, bool):
        return "leveldb" if backend == 0 else "lmdb"
    raise DBError("Unknown database backend %r (use lmdb or leveldb)" % (backend,))


def open_db(backend, source, mode=READ, **kwargs):
    """Open the database ``source`` of the given backend in ``mode`` ('r', 'w' or 'new')."""
    name = backend_name(backend)
    if mode not in _MODES:
        raise DBError("Unknown database mode %r (use 'r', 'w' or 'new')" % (mode,))
    cls = LMDB if name == "lmdb" else LevelDB
    db = cls()
    db.open(os.fspath(source), _MODES[mode], **kwargs)
    return db


def _key_bytes(key):
    return key.encode("utf-8") if isinstance(key, str) else bytes(key)


class DB:
    """Common interface of the backends."""

    backend = None

    def __init__(self):
        self.source = None
        self.mode = None

    def open(self, source, mode, **kwargs):
        raise NotImplementedError

    def cursor(self):
        raise NotImplementedError

    def transaction(self):
        raise NotImplementedError

    def writer(self, records_per_commit=1000):
        """A transaction that commits every ``records_per_commit`` puts and when closed."""
        return Writer(self.transaction(), records_per_commit)

    def close(self):
        raise NotImplementedError

    def __len__(self):
        n = 0
        cur = self.cursor()
        while cur.valid():
            n += 1
            cur.next()
        cur.close()
        return n

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _check_writable(self):
        if self.mode == READ:
            raise DBError("database %s was opened read-only" % self.source)


class Cursor:
    """Caffe's db::Cursor plus ``advance()`` (step with wrap-around) and Python iteration."""

    def seek_to_first(self):
        raise NotImplementedError

    def next(self):
        raise NotImplementedError

    def key(self):
        raise NotImplementedError

    def value(self):
        raise NotImplementedError

    def valid(self):
        raise NotImplementedError

    def close(self):
        pass

    def advance(self):
        """Step to the next record, back to the first one after the last (DataLayer::Next).

        Returns True when it wrapped around."""
        self.next()
        if not self.valid():
            self.seek_to_first()
            return True
        return False

    def __iter__(self):
        """(key, value) pairs from the current position to the end (no wrap-around)."""
        while self.valid():
            yield self.key(), self.value()
            self.next()


class Transaction:
    """Buffered puts written by ``commit()`` (Caffe's db::Transaction)."""

    def put(self, key, value):
        raise NotImplementedError

    def commit(self):
        raise NotImplementedError

    def __len__(self):
        return 0


class Writer:
    """Puts records through a Transaction, committing every N puts and on close/exit."""

    def __init__(self, transaction, records_per_commit=1000):
        if records_per_commit < 1:
            raise DBError("records_per_commit must be at least 1, got %r" % records_per_commit)
        self.transaction = transaction
        self.records_per_commit = int(records_per_commit)
        self.count = 0

    def put(self, key, value):
        self.transaction.put(key, value)
        self.count += 1
        if self.count % self.records_per_commit == 0:
            self.transaction.commit()

    def close(self):
        if len(self.transaction):
            self.transaction.commit()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *exc):
        if exc_type is None:
            self.close()


# -- LMDB ------------------------------------------------------------------------------------

def _lmdb():
    try:
        import lmdb
    except ImportError:  # pragma: no cover - lmdb is a core dependency
        raise DBError("LMDB support needs the 'lmdb' package: pip install lmdb") from None
    return lmdb


class _ReaderCache:
    """Read-only LMDBs, one reader process per database file, shared by every decaf DB on it
    (see lmdb_reader: decaf holds no read-only environment in the user's process)."""

    lock = threading.Lock()
    readers = {}

    @classmethod
    def acquire(cls, path):
        from .lmdb_reader import Reader
        key = os.path.realpath(path)
        with cls.lock:
            entry = cls.readers.get(key)
            if entry is None or entry[0].pid != os.getpid():   # none yet, or the parent's
                entry = [Reader(path), 0]
                cls.readers[key] = entry
            entry[1] += 1
            return entry[0]

    @classmethod
    def release(cls, path):
        key = os.path.realpath(path)
        with cls.lock:
            entry = cls.readers.get(key)
            if entry is None:
                return
            entry[1] -= 1
            if entry[1] > 0:
                return
            del cls.readers[key]
        entry[0].close()


class LMDB(DB):
    """Caffe's LMDB: a directory holding data.mdb and lock.mdb."""

    backend = "lmdb"

    def __init__(self):
        super().__init__()
        self.env = None       # read/write: an environment in this process
        self.reader = None    # read-only: the reader process (lmdb_reader)
        self._cursors = []

    def open(self, source, mode, map_size=LMDB_DEFAULT_MAP_SIZE):
        lmdb = _lmdb()
        self.source, self.mode = source, mode
        if mode == NEW:
            try:
                os.mkdir(source, 0o744)
            except FileExistsError:
                raise DBError("cannot create LMDB %s: it already exists (Caffe refuses to "
                              "overwrite a database; remove it first)" % source) from None
            except OSError as e:
                raise DBError("cannot create LMDB %s: %s" % (source, e.strerror)) from None
        elif not os.path.isdir(source):
            if mode == READ:
                raise DBError("cannot open LMDB %s: %s" % (
                    source, "no such directory" if not os.path.exists(source)
                    else "not a directory (an LMDB is a folder with data.mdb)"))
            os.makedirs(source, exist_ok=True)
        if mode == READ:
            if not os.path.isfile(os.path.join(source, "data.mdb")):
                raise DBError("cannot open LMDB %s: no data.mdb in it" % source)
            from .lmdb_reader import ReaderError
            try:
                self.reader = _ReaderCache.acquire(source)
            except (ReaderError, OSError) as e:
                raise DBError("cannot open LMDB %s: %s" % (source, e)) from None
        else:
            try:
                self.env = lmdb.open(source, map_size=map_size, subdir=True, max_dbs=0)
            except lmdb.Error as e:
                raise DBError("cannot open LMDB %s for writing: %s" % (source, e)) from None

    def cursor(self):
        self._check_open()
        cur = ReaderCursor(self.reader) if self.reader is not None else LMDBCursor(self.env)
        self._cursors.append(cur)
        return cur

    def transaction(self):
        self._check_open()
        self._check_writable()
        return LMDBTransaction(self.env)

    def __len__(self):
        self._check_open()
        if self.reader is not None:
            return _reader_call(self.reader, b"S", unpack="<Q")
        return int(self.env.stat()["entries"])

    def _check_open(self):
        if self.env is None and self.reader is None:
            raise DBError("LMDB %s is closed" % self.source)

    def close(self):
        for cur in self._cursors:
            cur.close()
        self._cursors = []
        if self.reader is not None:
            self.reader = None
            _ReaderCache.release(self.source)
        if self.env is not None:
            self.env.close()
            self.env = None


def _lmdb_read(what, fn):
    """fn(), with liblmdb's errors on a corrupt file (MDB_CORRUPTED...) as DBError."""
    try:
        return fn()
    except _lmdb().Error as e:
        raise DBError("LMDB read failed (%s): %s (the database is corrupt?)" % (what, e)) from None


class LMDBCursor(Cursor):
    """A read transaction and a cursor on it (LMDB::NewCursor)."""

    def __init__(self, env):
        self._txn = _lmdb_read("begin", lambda: env.begin(write=False, buffers=False))
        self._cur = self._txn.cursor()
        self._valid = _lmdb_read("first record", self._cur.first)

    def seek_to_first(self):
        self._valid = _lmdb_read("first record", self._cur.first)

    def next(self):
        self._valid = _lmdb_read("next record", self._cur.next)

    def key(self):
        return _lmdb_read("key", self._cur.key)

    def value(self):
        return _lmdb_read("value", self._cur.value)

    def valid(self):
        return self._valid

    def close(self):
        if self._txn is not None:
            self._cur.close()
            self._txn.abort()
            self._txn = None
            self._valid = False


def _reader_call(reader, op, payload=b"", unpack=None):
    """A request to the reader process (``op`` bytes), or the reply to a ticket sent before
    (``op`` an int); its errors as DBError."""
    from .lmdb_reader import ReaderError
    try:
        reply = reader.receive(op) if isinstance(op, int) else reader.request(op, payload)
    except ReaderError as e:
        raise DBError("LMDB %s: %s" % (reader.path, e)) from None
    return struct.unpack(unpack, reply)[0] if unpack else reply


class ReaderCursor(Cursor):
    """A cursor of the reader process (its own read transaction there), fetched in chunks;
    the next chunk is asked for as soon as one arrives (read-ahead)."""

    def __init__(self, reader):
        from . import lmdb_reader
        self._reader, self._mod = reader, lmdb_reader
        self._id = _reader_call(reader, b"C", unpack="<I")
        self._ticket = None
        self._fetch()

    def _ask(self):
        try:
            self._ticket = self._reader.send(b"N", struct.pack(
                "<III", self._id, self._mod.CHUNK_RECORDS, self._mod.CHUNK_BYTES))
        except self._mod.ReaderError as e:
            raise DBError("LMDB %s: %s" % (self._reader.path, e)) from None

    def _fetch(self):
        if self._ticket is None:
            self._ask()
        ticket, self._ticket = self._ticket, None
        reply = _reader_call(self._reader, ticket)
        self._records, self._at_end = self._mod.parse_chunk(reply)
        self._pos = 0
        if not self._at_end:
            self._ask()

    def _drop_read_ahead(self):
        if self._ticket is not None:
            ticket, self._ticket = self._ticket, None
            _reader_call(self._reader, ticket)

    def seek_to_first(self):
        self._drop_read_ahead()
        _reader_call(self._reader, b"F", struct.pack("<I", self._id))
        self._fetch()

    def next(self):
        self._pos += 1
        if self._pos >= len(self._records) and not self._at_end:
            self._fetch()

    def key(self):
        return self._records[self._pos][0]

    def value(self):
        return self._records[self._pos][1]

    def valid(self):
        return self._records is not None and self._pos < len(self._records)

    def close(self):
        if self._records is not None:
            self._records = None
            try:
                self._drop_read_ahead()
                self._reader.request(b"X", struct.pack("<I", self._id))
            except Exception:  # the reader is already gone: nothing left to close
                pass


class LMDBTransaction(Transaction):
    """Puts kept in memory; commit writes them in one LMDB write transaction, doubling the map
    size and retrying whenever LMDB reports the map full."""

    def __init__(self, env):
        self.env = env
        self.keys, self.values = [], []

    def put(self, key, value):
        self.keys.append(_key_bytes(key))
        self.values.append(bytes(value))

    def __len__(self):
        return len(self.keys)

    def commit(self):
        lmdb = _lmdb()
        while True:
            try:
                with self.env.begin(write=True) as txn:
                    for k, v in zip(self.keys, self.values):
                        txn.put(k, v)
                break
            except lmdb.MapFullError:
                self.env.set_mapsize(self.env.info()["map_size"] * 2)
        self.keys, self.values = [], []


# -- LevelDB ---------------------------------------------------------------------------------

def _plyvel():
    try:
        import plyvel
    except ImportError:
        raise DBError("LevelDB needs the 'plyvel' package, a dependency of decaf that is "
                      "missing here (pip install plyvel), or use an LMDB (backend: LMDB / "
                      "-backend lmdb)") from None
    return plyvel


class LevelDB(DB):
    """Caffe's LevelDB (block size 64 KiB, write buffer 256 MiB, 100 open files)."""

    backend = "leveldb"

    def __init__(self):
        super().__init__()
        self.db = None

    def open(self, source, mode):
        plyvel = _plyvel()
        self.source, self.mode = source, mode
        if mode == READ and not os.path.isdir(source):
            raise DBError("cannot open LevelDB %s: no such directory" % source)
        try:
            self.db = plyvel.DB(source, create_if_missing=mode != READ, error_if_exists=mode == NEW,
                                block_size=65536, write_buffer_size=268435456, max_open_files=100)
        except plyvel.Error as e:
            msg = str(e)
            if mode == NEW and "exists" in msg:
                raise DBError("cannot create LevelDB %s: it already exists (Caffe refuses to "
                              "overwrite a database; remove it first)" % source) from None
            raise DBError("cannot open LevelDB %s: %s" % (source, msg)) from None

    def cursor(self):
        self._check_open()
        return LevelDBCursor(self.db)

    def transaction(self):
        self._check_open()
        self._check_writable()
        return LevelDBTransaction(self.db)

    def _check_open(self):
        if self.db is None:
            raise DBError("LevelDB %s is closed" % self.source)

    def close(self):
        if self.db is not None:
            self.db.close()
            self.db = None


class LevelDBCursor(Cursor):
    def __init__(self, db):
        self._it = db.raw_iterator()
        self._it.seek_to_first()

    def seek_to_first(self):
        self._it.seek_to_first()

    def next(self):
        self._it.next()

    def key(self):
        return self._it.key()

    def value(self):
        return self._it.value()

    def valid(self):
        return self._it is not None and self._it.valid()

    def close(self):
        if self._it is not None:
            self._it.close()
            self._it = None


class LevelDBTransaction(Transaction):
    """A leveldb WriteBatch, written by commit()."""

    def __init__(self, db):
        self.db = db
        self._batch = db.write_batch()
        self._n = 0

    def put(self, key, value):
        self._batch.put(_key_bytes(key), bytes(value))
        self._n += 1

    def __len__(self):
        return self._n

    def commit(self):
        self._batch.write()
        self._batch = self.db.write_batch()
        self._n = 0
