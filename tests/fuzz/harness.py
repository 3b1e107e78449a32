"""Running fuzz cases in a worker process with a per-case time limit.

Each case runs in a forked worker, in a fresh temporary directory holding the case's files,
under an address-space limit (``ulimit -v``, 8 GB unless the process already has a lower one).
The outcome is one of:

* ``ok``: the reader succeeded;
* ``error``: it raised a decaf.errors.DecafError naming the file (or the layer);
* ``unnamed``: a DecafError that names neither (a defect: the user cannot tell what is wrong);
* ``internal``: any other exception (a defect: a bare traceback from deep inside);
* ``hang``: no answer within the time limit (the worker is killed and restarted);
* ``kill``: the worker died (signal, OOM kill, abort).
"""
import collections
import multiprocessing
import os
import re
import resource
import shutil
import tempfile
import traceback

from . import readers

STATUSES = ("ok", "error", "unnamed", "internal", "hang", "kill")
DEFECTS = ("unnamed", "internal", "hang", "kill")
ADDRESS_SPACE = 8 * 10 ** 9
_LAYER = re.compile(r"[Ll]ayer\s*['\"]|[Ll]ayer \S+ \(|for layer ")


def _names_it(case, message):
    main = case["main"]
    return main in message or os.path.basename(main) in message or bool(_LAYER.search(message))


def run_case(case):
    """(status, detail) of one case, run in the current process (inside the worker)."""
    from decaf.errors import DecafError
    reader = readers.READERS[case["reader"]]
    home = os.getcwd()
    work = tempfile.mkdtemp(prefix="decaf-fuzz-")
    try:
        os.chdir(work)
        for rel, data in case["files"].items():
            if os.path.dirname(rel):
                os.makedirs(os.path.dirname(rel), exist_ok=True)
            with open(rel, "wb") as f:
                f.write(data)
        reader.run(case)
        return "ok", ""
    except DecafError as e:
        msg = str(e)
        return ("error" if _names_it(case, msg) else "unnamed"), "%s: %s" % (type(e).__name__,
                                                                             msg[:300])
    except BaseException as e:  # noqa: BLE001 (anything else is what we are looking for)
        tb = traceback.extract_tb(e.__traceback__)
        where = "; ".join("%s:%d %s" % (os.path.relpath(fr.filename, readers.REPO), fr.lineno,
                                         fr.name) for fr in tb[-3:])
        return "internal", "%s: %s [%s]" % (type(e).__name__, str(e)[:300], where)
    finally:
        os.chdir(home)
        shutil.rmtree(work, ignore_errors=True)


def _worker(conn, address_space):
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if address_space and (soft == resource.RLIM_INFINITY or soft > address_space):
        resource.setrlimit(resource.RLIMIT_AS, (address_space, hard))
    import logging
    import warnings
    from decaf import glog
    glog.init_log(3)      # FATAL only: the fuzz output is the counts
    logging.disable(logging.CRITICAL)
    warnings.simplefilter("ignore")
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)      # and whatever C libraries print
    os.dup2(null, 2)
    while True:
        case = conn.recv()
        if case is None:
            return
        conn.send(run_case(case))


class Harness:
    """A worker process that runs cases one at a time, each within ``timeout`` seconds."""

    def __init__(self, timeout=20.0, address_space=ADDRESS_SPACE):
        self.timeout, self.address_space = timeout, address_space
        self.proc = self.conn = None

    def _start(self):
        ctx = multiprocessing.get_context("fork")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker, args=(child, self.address_space), daemon=True)
        self.proc.start()
        child.close()

    def _kill(self):
        if self.proc is not None:
            self.proc.kill()
            self.proc.join()
        self.proc = self.conn = None

    def run(self, case):
        """(status, detail) of ``case``. A case past the time limit is run once more with
        three times the limit (a busy machine is not a hang) before it counts as a hang."""
        status, detail = self._run(case, self.timeout)
        if status == "hang":
            status, detail = self._run(case, 3 * self.timeout)
        return status, detail

    def _run(self, case, timeout):
        if self.proc is None or not self.proc.is_alive():
            self._start()
        try:
            self.conn.send(case)
            if not self.conn.poll(timeout):
                self._kill()
                return "hang", "no answer within %gs" % timeout
            return self.conn.recv()
        except (EOFError, OSError, BrokenPipeError):
            self.proc.join(5)
            code = self.proc.exitcode
            self._kill()
            return "kill", "worker exit code %s" % code

    def close(self):
        if self.proc is not None and self.proc.is_alive():
            try:
                self.conn.send(None)
            except OSError:
                pass
            self.proc.join(5)
        self._kill()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Tally:
    """Counts per reader and status, with the first few examples of each defect."""

    def __init__(self, keep=5):
        self.counts = collections.defaultdict(collections.Counter)
        self.examples = collections.defaultdict(list)
        self.keep = keep

    def add(self, case, status, detail):
        self.counts[case["reader"]][status] += 1
        if status in DEFECTS and len(self.examples[status]) < self.keep * 4:
            self.examples[status].append("%s: %s" % (readers.describe(case), detail))

    def defects(self):
        return sum(c[s] for c in self.counts.values() for s in DEFECTS)

    def table(self):
        head = "%-16s" % "reader" + "".join("%9s" % s for s in STATUSES) + "%9s" % "total"
        rows = [head]
        for name in sorted(self.counts):
            c = self.counts[name]
            rows.append("%-16s" % name + "".join("%9d" % c[s] for s in STATUSES)
                        + "%9d" % sum(c.values()))
        return "\n".join(rows)

    def report(self):
        out = [self.table()]
        for status in DEFECTS:
            for ex in self.examples.get(status, []):
                out.append("%s: %s" % (status, ex))
        return "\n".join(out)


def fuzz(names, per_reader, seed=0, timeout=20.0, progress=None):
    """Run ``per_reader`` cases of each reader; return the Tally."""
    tally = Tally()
    with Harness(timeout) as h:
        for name in names:
            for case in readers.make_cases(name, per_reader, seed):
                tally.add(case, *h.run(case))
            if progress:
                progress(name, tally)
    return tally
