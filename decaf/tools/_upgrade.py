"""The three ``upgrade_*`` tools of Caffe (tools/upgrade_net_proto_text.cpp,
upgrade_net_proto_binary.cpp, upgrade_solver_proto_text.cpp), sharing one flow:

    read IN (exit code 2 when it does not parse) -> upgrade as needed (or log "File already in
    latest proto format") -> write OUT (always, as Caffe does) -> exit code 0, or 1 when some old
    setting could not be carried over.

The log lines are Caffe's, with its source file:line; ``-help`` prints the usage.
"""
import sys

from .. import glog as log
from ..errors import DecafError
from ..proto import caffe_pb2
from ..proto import io as pio
from ..proto import upgrade


def _read(kind, path, where):
    """The message in ``path`` (no upgrade), or None after Caffe's "Failed to parse" line."""
    cls = caffe_pb2.SolverParameter if kind == "solver" else caffe_pb2.NetParameter
    what = "text" if kind != "binary" else "binary"
    try:
        if kind == "binary":
            return pio.read_binary(path, cls)
        return pio.read_text(path, cls())
    except DecafError as e:     # missing file, PrototxtError, TruncatedFileError: file, line, field
        log.error(str(e), where)
    log.error("Failed to parse input %s file as %s: %s" % (what, cls.DESCRIPTOR.name, path),
              where)
    return None


def _upgrade(kind, param, path):
    """(needed, success) of upgrading ``param`` in place."""
    if kind == "solver":
        if not upgrade.solver_needs_type_upgrade(param):
            return False, True
        return True, upgrade.upgrade_solver_as_needed(param, path)
    if not upgrade.net_needs_upgrade(param):
        return False, True
    return True, upgrade.upgrade_net_as_needed(param, path)


def run(kind, argv, tool, usage):
    """Caffe's main() of the ``kind`` ("text", "binary" or "solver") upgrade tool."""
    from ..data.cli import wants_help
    src = tool + ".cpp"
    lines = {"usage": 22, "parse": 30, "errors": 39, "latest": 43,
             "wrote": 48 if kind == "binary" else 49}
    argv = list(sys.argv[1:] if argv is None else argv)
    if wants_help(argv):
        print("Usage: " + usage)
        return 0
    if len(argv) != 2:
        log.error("Usage: " + usage, "%s:%d" % (src, lines["usage"]))
        return 1
    path, out = argv
    param = _read(kind, path, "%s:%d" % (src, lines["parse"]))
    if param is None:
        return 2
    try:
        needed, success = _upgrade(kind, param, path)
    except DecafError as e:           # e.g. a solver whose solver_type and type disagree
        log.error(str(e))
        needed, success = True, False
    if needed and not success:
        log.error("Encountered error(s) while upgrading prototxt; see details above.",
                  "%s:%d" % (src, lines["errors"]))
    elif not needed:
        log.error("File already in latest proto format: " + path, "%s:%d" % (src, lines["latest"]))
    what = "SolverParameter text" if kind == "solver" else "NetParameter " + (
        "binary" if kind == "binary" else "text")
    try:
        (pio.write_binary if kind == "binary" else pio.write_text)(out, param)
    except OSError as e:
        log.error("Cannot write %s: %s" % (out, e.strerror or e), "io.cpp")
        return 1
    log.info("Wrote upgraded %s proto to %s" % (what, out), "%s:%d" % (src, lines["wrote"]))
    return 0 if success else 1
