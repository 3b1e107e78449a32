"""Read-only LMDB access from a helper process, so that a user's ``lmdb.open`` works beside it.

py-lmdb (>= 2.0) refuses to open an environment twice in one process ("The environment ... is
already open in this process"), because LMDB's fcntl() locks belong to the (process, file) pair.
A notebook that opens the training LMDB with ``lmdb.open`` next to a decaf net reading it would
fail in either order. So decaf keeps no read-only LMDB environment in the user's process: one
reader process per database (started with this file as its script, importing only ``lmdb``)
holds the environment, with a proper reader slot, as any second process reading an LMDB does.
Cursors ask it for chunks of records through a pipe.

Protocol (little-endian): a request is ``op (1 byte) | u32 length | payload``; the reply is
``b"K" | u32 length | payload`` or ``b"E" | u32 length | utf-8 message``.

    O path              open the environment read-only       -> u64 entries
    C                   a cursor (own read txn) at the first -> u32 cursor id
    N id n max_bytes    up to n records from the position    -> u8 at_end, then (u32 klen, key,
                                                                u32 vlen, value) per record
    F id                back to the first record             -> (empty)
    X id                close the cursor                     -> (empty)
    S                   number of records                    -> u64 entries
The process ends when its stdin closes (the DB was closed, or decaf's process ended).
"""
import mmap
import os
import signal
import struct
import subprocess
import sys
import threading

_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
CHUNK_RECORDS = 1024         # records per request: several batches of a data layer
CHUNK_BYTES = 4 << 20        # ... or 4 MiB, whichever comes first


def _read_exact(stream, n):
    data = stream.read(n)
    if data is None or len(data) != n:
        raise EOFError
    return data


def _read_message(stream):
    op = _read_exact(stream, 1)
    (n,) = _U32.unpack(_read_exact(stream, 4))
    return op, _read_exact(stream, n) if n else b""


def _write_message(stream, op, payload=b""):
    stream.write(op + _U32.pack(len(payload)))
    stream.write(payload)    # a big payload goes to the pipe as it is, uncopied
    stream.flush()


# -- the reader process ---------------------------------------------------------------------------

class LMDBCorruptError(Exception):
    """data.mdb is truncated or its pages point outside the file (liblmdb would crash)."""


def _check_lmdb_pages(env, source):
    """Refuse a data.mdb that would make liblmdb read outside its mapping (SIGSEGV/SIGBUS):
    shorter than its meta page says (truncated), or with pages whose nodes or page numbers
    point outside the page or the file. Every branch page reachable from the root is checked
    whatever the size, with a sample of the leaves (all of them up to ``LMDB_LEAF_SAMPLE``);
    files up to ``LMDB_CHECK_BYTES`` have every page checked as well."""
    path = os.path.join(source, "data.mdb")
    try:
        psize, depth = int(env.stat()["psize"]), int(env.stat()["depth"])
        last = int(env.info()["last_pgno"])
        size = os.path.getsize(path)
    except Exception as e:  # noqa: BLE001 (lmdb.Error or OSError: unreadable)
        raise LMDBCorruptError("cannot read LMDB %s: %s" % (source, e)) from None
    need = (last + 1) * psize
    if size < need:
        raise LMDBCorruptError("LMDB %s is truncated or corrupt: data.mdb holds %d bytes, its meta page "
                      "needs %d" % (source, size, need))
    with open(path, "rb") as f, mmap.mmap(f.fileno(), need, access=mmap.ACCESS_READ) as data:
        problem = _lmdb_tree_problem(data, psize, last, depth)
        if not problem and size <= LMDB_CHECK_BYTES:
            problem = _lmdb_page_problem(data, psize, last)
    if problem:
        raise LMDBCorruptError("LMDB %s is corrupt: %s" % (source, problem))


# Databases up to this size have every page checked when opened (liblmdb trusts them and
# reads wherever a corrupt page points, which can kill the process); bigger ones have their
# branch pages and LMDB_LEAF_SAMPLE leaves checked. Whatever is left unchecked and still
# crashes the reader process is reported as a DBError naming the database (Reader._died).
LMDB_CHECK_BYTES = 64 << 20
LMDB_LEAF_SAMPLE = 4096
LMDB_BRANCH_LIMIT = 1 << 16  # branch pages walked at most (a 10 GiB database has ~30000)
_P_BRANCH, _P_LEAF, _P_OVERFLOW, _P_META = 0x01, 0x02, 0x04, 0x08
_F_BIGDATA = 0x01
_P_INVALID = (1 << 64) - 1
_MDB_MAGIC = 0xBEEFC0DE


def _node_problem(data, pgno, psize, last, children=None):
    """What is wrong with branch/leaf page ``pgno`` (64-bit layout), or "": every node inside
    its page, every page number inside the file. Branch pages add their children to
    ``children`` (a list) when one is given."""
    base = pgno * psize
    flags, lower, upper = struct.unpack_from("<HHH", data, base + 10)
    if not 16 <= lower <= upper <= psize:
        return "page %d has a bad header" % pgno
    for i in range((lower - 16) // 2):
        off = struct.unpack_from("<H", data, base + 16 + 2 * i)[0]
        if not upper <= off <= psize - 8:
            return "page %d: node %d lies outside the page" % (pgno, i)
        lo, hi, nflags, ksize = struct.unpack_from("<HHHH", data, base + off)
        if flags & _P_BRANCH:
            child = lo | hi << 16 | nflags << 32
            if child > last or off + 8 + ksize > psize:
                return "page %d: node %d points outside the file" % (pgno, i)
            if children is not None:
                children.append(child)
        elif nflags & _F_BIGDATA:
            if off + 16 + ksize > psize:
                return "page %d: node %d runs past the page" % (pgno, i)
            over = struct.unpack_from("<Q", data, base + off + 8 + ksize)[0]
            if over > last or over * psize + 16 + (lo | hi << 16) > len(data):
                return "page %d: node %d points outside the file" % (pgno, i)
        elif off + 8 + ksize + (lo | hi << 16) > psize:
            return "page %d: node %d runs past the page" % (pgno, i)
    return ""


def _lmdb_page_problem(data, psize, last):
    """Every branch/leaf page of the file, in file order (see _node_problem)."""
    pgno = 2
    while pgno <= last:
        flags = struct.unpack_from("<H", data, pgno * psize + 10)[0]
        if flags & _P_OVERFLOW:
            pgno += max(struct.unpack_from("<I", data, pgno * psize + 12)[0], 1)
            continue
        if flags & (_P_BRANCH | _P_LEAF) and not flags & _P_META:
            problem = _node_problem(data, pgno, psize, last)
            if problem:
                return problem
        pgno += 1
    return ""


def _lmdb_tree_problem(data, psize, last, depth):
    """The main B-tree from its root, level by level: each page must carry its own number and
    the type its level asks for (branch above the last level, leaf on it); every branch page
    is checked, and LMDB_LEAF_SAMPLE leaves spread over the last level. "" when sound, or
    when the meta pages are not the 64-bit layout this reads (nothing is claimed then)."""
    metas = []
    for m in (0, 1):
        off = m * psize + 16
        if struct.unpack_from("<I", data, off)[0] != _MDB_MAGIC:
            return ""
        root, meta_last, txnid = struct.unpack_from("<QQQ", data, off + 112)
        metas.append((txnid, root, meta_last))
    _, root, meta_last = max(metas)
    if meta_last != last:
        return ""
    if root == _P_INVALID:
        return ""
    level, walked = [root], 0
    for height in range(depth):
        leaves = height == depth - 1
        if leaves and len(level) > LMDB_LEAF_SAMPLE:
            step = len(level) / float(LMDB_LEAF_SAMPLE)
            level = [level[int(i * step)] for i in range(LMDB_LEAF_SAMPLE)] + [level[-1]]
        children = []
        for pgno in level:
            if not 2 <= pgno <= last:
                return "page %d lies outside the file" % pgno
            own, _, flags = struct.unpack_from("<QHH", data, pgno * psize)
            want = _P_LEAF if leaves else _P_BRANCH
            if own != pgno or flags & (_P_BRANCH | _P_LEAF | _P_OVERFLOW | _P_META) != want:
                return "page %d is not the %s page its parent points to" % (
                    pgno, "leaf" if leaves else "branch")
            problem = _node_problem(data, pgno, psize, last, None if leaves else children)
            if problem:
                return problem
            walked += 1
            if walked > LMDB_BRANCH_LIMIT + LMDB_LEAF_SAMPLE + 1:
                return ""
        level = children
    return ""


class _Server:
    """The environment and the cursors of one reader process."""

    def __init__(self):
        self.env = None
        self.cursors = {}
        self.next_id = 0

    def open(self, payload):
        import lmdb
        path = os.fsdecode(payload)
        try:
            self.env = lmdb.open(path, readonly=True, lock=True, subdir=True)
        except lmdb.Error:   # a read-only medium: no lock file (Caffe's ALLOW_LMDB_NOLOCK)
            self.env = lmdb.open(path, readonly=True, lock=False, subdir=True)
        _check_lmdb_pages(self.env, path)
        return self.stat(b"")

    def stat(self, _):
        return _U64.pack(int(self.env.stat()["entries"]))

    def cursor(self, _):
        txn = self.env.begin(write=False, buffers=True)   # zero-copy views, copied once below
        cur = txn.cursor()
        self.next_id += 1
        self.cursors[self.next_id] = [txn, cur, cur.first()]
        return _U32.pack(self.next_id)

    def chunk(self, payload):
        cid, n, max_bytes = struct.unpack("<III", payload)
        entry = self.cursors[cid]
        cur, out, count = entry[1], bytearray(1), 0
        while entry[2] and count < n and len(out) < max_bytes:
            key, value = cur.key(), cur.value()   # views valid until the cursor moves
            out += _U32.pack(len(key))
            out += key
            out += _U32.pack(len(value))
            out += value
            count += 1
            entry[2] = cur.next()
        out[0] = 0 if entry[2] else 1
        return out

    def first(self, payload):
        entry = self.cursors[_U32.unpack(payload)[0]]
        entry[2] = entry[1].first()
        return b""

    def close_cursor(self, payload):
        entry = self.cursors.pop(_U32.unpack(payload)[0], None)
        if entry is not None:
            entry[1].close()
            entry[0].abort()
        return b""

    def serve(self, inp, out):
        ops = {b"O": self.open, b"C": self.cursor, b"N": self.chunk, b"F": self.first,
               b"X": self.close_cursor, b"S": self.stat}
        while True:
            try:
                op, payload = _read_message(inp)
            except EOFError:
                break
            try:
                reply = ops[op](payload)
            except Exception as e:  # every failure goes back to the caller as a message
                _write_message(out, b"E", ("%s: %s" % (type(e).__name__, e)).encode("utf-8"))
            else:
                _write_message(out, b"K", reply)
        if self.env is not None:
            for cid in list(self.cursors):
                self.close_cursor(_U32.pack(cid))
            self.env.close()


# -- the client side ------------------------------------------------------------------------------

class ReaderError(Exception):
    """The reader process failed or reported an error (the message says which)."""


class Reader:
    """One reader process holding the LMDB at ``path`` read-only; thread-safe.

    ``send`` queues a request and returns a ticket, ``receive(ticket)`` its reply: the process
    answers in order, so a cursor can ask for its next chunk before it needs it (read-ahead)."""

    def __init__(self, path):
        self.path = path
        self.pid = os.getpid()     # a forked child must not talk on its parent's pipes
        self._lock = threading.Lock()
        self._sent = self._received = 0
        self._replies = {}
        self._proc = subprocess.Popen([sys.executable, os.path.abspath(__file__)],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      close_fds=True)
        _grow_pipe(self._proc.stdout)
        try:
            self.entries = _U64.unpack(self.request(b"O", os.fsencode(path)))[0]
        except BaseException:
            self.close()
            raise

    def _died(self):
        """The error for a reader process that stopped answering: it ended (a crash inside
        liblmdb on a corrupt database ends it with SIGSEGV or SIGBUS) or closed its pipe."""
        status = None
        if self._proc is not None:
            try:
                status = self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:   # pipe closed but alive: stop it
                self._proc.kill()
                status = self._proc.wait()
        why = ""
        if status is not None and status < 0:
            try:
                how = "killed by %s" % signal.Signals(-status).name
            except ValueError:
                how = "killed by signal %d" % -status
            if -status in (signal.SIGSEGV, signal.SIGBUS):
                why = ": the database is probably corrupt (liblmdb trusts its pages)"
        else:
            how = "exit status %s" % status
        return ReaderError("the LMDB reader process of %s ended unexpectedly (%s)%s"
                           % (self.path, how, why))

    def send(self, op, payload=b""):
        if os.getpid() != self.pid:
            raise ReaderError("the LMDB reader of %s belongs to the parent process: open the "
                              "database again after fork()" % self.path)
        with self._lock:
            if self._proc is None:
                raise ReaderError("the LMDB reader of %s is closed" % self.path)
            try:
                _write_message(self._proc.stdin, op, payload)
            except (OSError, ValueError):
                raise self._died() from None
            self._sent += 1
            return self._sent

    def receive(self, ticket):
        with self._lock:
            while ticket not in self._replies:
                if self._proc is None:
                    raise ReaderError("the LMDB reader of %s is closed" % self.path)
                try:
                    reply = _read_message(self._proc.stdout)
                except (EOFError, OSError, ValueError):
                    raise self._died() from None
                self._received += 1
                self._replies[self._received] = reply
            status, reply = self._replies.pop(ticket)
        if status != b"K":
            raise ReaderError(reply.decode("utf-8", "replace"))
        return reply

    def request(self, op, payload=b""):
        return self.receive(self.send(op, payload))

    def close(self):
        with self._lock:
            proc, self._proc = self._proc, None
        if proc is not None:
            for stream in (proc.stdin, proc.stdout):
                try:
                    stream.close()
                except OSError:
                    pass
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:  # pragma: no cover - a hung reader
                proc.kill()
                proc.wait()


def _grow_pipe(stream):
    """A 1 MiB pipe (Linux) instead of 64 KiB: fewer switches between the two processes."""
    try:
        import fcntl
        fcntl.fcntl(stream.fileno(), getattr(fcntl, "F_SETPIPE_SZ", 1031), 1 << 20)
    except (ImportError, OSError):
        pass


def parse_chunk(reply):
    """(records [(key, value)], at_end) from an N reply."""
    at_end, pos, records = bool(reply[0]), 1, []
    while pos < len(reply):
        (n,) = _U32.unpack_from(reply, pos)
        key = reply[pos + 4:pos + 4 + n]
        pos += 4 + n
        (n,) = _U32.unpack_from(reply, pos)
        records.append((key, reply[pos + 4:pos + 4 + n]))
        pos += 4 + n
    return records, at_end


if __name__ == "__main__":
    _here = os.path.dirname(os.path.abspath(__file__))   # decaf/data must not shadow a module
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _here]
    _Server().serve(sys.stdin.buffer, sys.stdout.buffer)
