"""glog-style logging, so that Caffe's log parsers (tools/extra/parse_log.py, plot scripts) work.

Every line has glog's classic prefix::

    I1122 12:45:09.591353 12345 solver.cpp:239] Iteration 100, lr = 0.00992565

severity letter (I, W, E, F), month and day, time with microseconds, thread id (the process id,
which is what glog prints for the main thread), ``file:line]`` and the message. The solver, net
and tools pass Caffe's own source file names (``solver.cpp``, ``sgd_solver.cpp``, ``net.cpp``,
``caffe.cpp``) so that scripts keyed on them keep working; other callers get their Python file.

Environment, as glog reads it: ``GLOG_minloglevel`` (0 INFO, 1 WARNING, 2 ERROR, 3 FATAL: lines
below it are dropped), ``GLOG_logtostderr`` (default here: true), ``GLOG_alsologtostderr``,
``GLOG_stderrthreshold`` (default 2) and ``GLOG_log_dir`` (where the log file goes when
``GLOG_logtostderr`` is false).
"""
import datetime
import logging
import os
import socket
import sys
import threading

INFO, WARNING, ERROR, FATAL = 0, 1, 2, 3
_LETTERS = "IWEF"
_NAMES = ("INFO", "WARNING", "ERROR", "FATAL")


def _env_bool(name, default):
    v = os.environ.get(name)
    if v is None or v == "":
        return default
    return v.strip().lower() in ("1", "true", "yes", "y", "t")


def _env_int(name, default):
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


class _Config:
    minloglevel = _env_int("GLOG_minloglevel", INFO)
    logtostderr = _env_bool("GLOG_logtostderr", True)
    alsologtostderr = _env_bool("GLOG_alsologtostderr", False)
    stderrthreshold = _env_int("GLOG_stderrthreshold", ERROR)
    log_dir = os.environ.get("GLOG_log_dir", "")
    program = "decaf"
    stream = None          # None: sys.stderr at the time of the call (pytest's capsys works)
    file = None            # open log file when logging to a file


_cfg = _Config()
_lock = threading.Lock()


def init_log(level=None, stderr=None, program=None):
    """pycaffe's ``caffe.init_log([level[, stderr]])``: set the minimum level and the sink."""
    if level is not None:
        _cfg.minloglevel = int(level)
    if stderr is not None:
        _cfg.logtostderr = bool(stderr)
    if program:
        _cfg.program = program


def set_stream(stream):
    """Send log lines to ``stream`` instead of stderr (None: back to stderr)."""
    _cfg.stream = stream


def min_level():
    return _cfg.minloglevel


def prefix(severity, where, now=None):
    """glog's line prefix ``Lmmdd hh:mm:ss.uuuuuu tid file:line] ``."""
    now = now or datetime.datetime.now()
    return "%s%02d%02d %02d:%02d:%02d.%06d %5d %s] " % (
        _LETTERS[severity], now.month, now.day, now.hour, now.minute, now.second,
        now.microsecond, os.getpid(), where)


def _caller(depth):
    f = sys._getframe(depth)
    return "%s:%d" % (os.path.basename(f.f_code.co_filename), f.f_lineno)


def _open_file(now):
    """The log file in ``log_dir`` (glog's name); None, after one clear E line on stderr, when it
    cannot be created: logging then goes on to stderr (glog would drop the file lines)."""
    d = _cfg.log_dir or os.environ.get("TMPDIR", "/tmp")
    user = os.environ.get("USER", "unknown")
    name = "%s.%s.%s.log.INFO.%s.%d" % (_cfg.program, socket.gethostname(), user,
                                         now.strftime("%Y%m%d-%H%M%S"), os.getpid())
    try:
        f = open(os.path.join(d, name), "a")
    except OSError as e:
        _cfg.logtostderr = True
        why = "no such folder" if not os.path.isdir(d) else (e.strerror or str(e))
        stream = _cfg.stream or sys.stderr
        stream.write(prefix(ERROR, _caller(1), now) + "Could not create log file in log_dir %r "
                     "(GLOG_log_dir / -log_dir): %s; logging to stderr instead\n" % (d, why))
        return None
    f.write("Log file created at: %s\nRunning on machine: %s\n"
            "Log line format: [IWEF]mmdd hh:mm:ss.uuuuuu threadid file:line] msg\n"
            % (now.strftime("%Y/%m/%d %H:%M:%S"), socket.gethostname()))
    _cfg.file = f
    return f


def _emit(severity, msg, where):
    if severity < _cfg.minloglevel and severity != FATAL:
        return
    now = datetime.datetime.now()
    head = prefix(severity, where, now)
    text = head + str(msg) + "\n"     # as glog: a multi-line message is prefixed once
    with _lock:
        to_err = (_cfg.logtostderr or _cfg.alsologtostderr or
                  severity >= _cfg.stderrthreshold)
        if to_err:
            stream = _cfg.stream or sys.stderr
            stream.write(text)
            stream.flush()
        if not _cfg.logtostderr:
            f = _cfg.file or _open_file(now)
            if f is None:          # no log file: stderr gets every line instead
                if not to_err:
                    (_cfg.stream or sys.stderr).write(text)
                return
            f.write(text)
            f.flush()


def _where(where):
    """``where`` as ``file:line``: the caller's Python file:line when None; a bare file name
    (``"net.cpp"``) gets the caller's line number."""
    if where is None:
        return _caller(3)
    if ":" not in where:
        return "%s:%d" % (where, sys._getframe(2).f_lineno)
    return where


def info(msg, where=None):
    """LOG(INFO) << msg. ``where`` is ``"file.cpp:line"`` (default: the caller's file:line)."""
    _emit(INFO, msg, _where(where))


def warning(msg, where=None):
    _emit(WARNING, msg, _where(where))


def error(msg, where=None):
    _emit(ERROR, msg, _where(where))


def fatal(msg, where=None, exc=None):
    """LOG(FATAL): log the line (always, as glog does), then raise ``exc`` (a DecafError)."""
    _emit(FATAL, msg, _where(where))
    if exc is None:
        from .errors import DecafError
        exc = DecafError
    raise exc(msg)


def exception_where(exc):
    """``file:line`` where ``exc`` was raised (the innermost frame of its traceback), for the
    ``F`` line that reports it; ``"<unknown>:0"`` without a traceback."""
    tb = getattr(exc, "__traceback__", None)
    if tb is None:
        return "<unknown>:0"
    while tb.tb_next is not None:
        tb = tb.tb_next
    return "%s:%d" % (os.path.basename(tb.tb_frame.f_code.co_filename), tb.tb_lineno)


def log_exception(exc, severity=FATAL):
    """One glog line (``F`` by default) for ``exc``, located where it was raised."""
    _emit(severity, str(exc), exception_where(exc))


def log(msg):
    """pycaffe's ``caffe.log(msg)``: one INFO line."""
    _emit(INFO, msg, _caller(2))


class GlogHandler(logging.Handler):
    """A ``logging`` handler writing records as glog lines (for modules that use ``logging``)."""

    def emit(self, record):
        if getattr(record, "_decaf_glogged", False):   # a parent logger's handler: once only
            return
        record._decaf_glogged = True
        try:
            sev = ERROR if record.levelno >= logging.ERROR else \
                WARNING if record.levelno >= logging.WARNING else INFO
            if record.levelno >= logging.CRITICAL:
                sev = FATAL
            _emit(sev, record.getMessage(), "%s:%d" % (os.path.basename(record.pathname),
                                                       record.lineno))
        except Exception:  # pragma: no cover - logging must never raise
            self.handleError(record)


def install_logging_handler(logger_name="decaf", propagate=None):
    """Route the ``logging`` records of ``logger_name`` (default: all of decaf) through glog.
    Done for "decaf" on import, so that every decaf message is a glog line that honours
    ``GLOG_minloglevel``; ``propagate=False`` also keeps them from the root logger's handlers."""
    logger = logging.getLogger(logger_name)
    if not any(isinstance(h, GlogHandler) for h in logger.handlers):
        logger.addHandler(GlogHandler())
    logger.setLevel(logging.DEBUG)
    if propagate is not None:
        logger.propagate = propagate
    return logger


def fmt(x):
    """A number as C++'s ``ostream << float`` prints it (6 significant digits, %g style)."""
    if isinstance(x, (bool,)):
        return str(int(x))
    if isinstance(x, int):
        return str(x)
    x = float(x)
    if x != x:
        return "nan"
    if x in (float("inf"), float("-inf")):
        return "inf" if x > 0 else "-inf"
    return "%g" % x


install_logging_handler()
