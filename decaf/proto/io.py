"""Reading and writing Caffe's protobuf files: prototxt (text) and binary messages.

* ``parse_text(text, message, filename)``: protobuf text format, as Caffe's
  ``ReadProtoFromTextFile`` reads it (a singular field given twice and missing required fields
  are errors), with errors raised as :class:`decaf.errors.PrototxtError` naming the file, line,
  column and the offending field, plus a "did you mean" suggestion where one is close.
* ``read_net_param`` / ``read_net_param_binary`` / ``read_solver_param``: read and upgrade to the
  current format, as Caffe's ``ReadNetParamsFrom{Text,Binary}FileOrDie`` and
  ``ReadSolverParamsFromTextFileOrDie`` do (see :mod:`decaf.proto.upgrade`).
* ``read_binary`` / ``write_binary`` / ``write_text``: plain message I/O; writes go to a temporary
  file in the target directory that then replaces the target, so a crash never leaves a
  half-written file.
"""
import difflib
import errno
import math
import os
import re
import struct
import tempfile

from google.protobuf import message as _pb_message
from google.protobuf import text_format

from ..errors import MissingFileError, PrototxtError, SnapshotError, TruncatedFileError
from . import caffe_pb2, compat
from .upgrade import upgrade_net_as_needed, upgrade_solver_as_needed

__all__ = [
    "parse_text", "read_text", "read_net_param", "read_net_param_binary", "read_solver_param",
    "read_binary", "write_binary", "write_text", "format_text",
]

_NO_FIELD = re.compile(r'Message type "([\w.]+)" has no field named "([^"]+)"')
_NO_ENUM_VALUE = re.compile(r'Enum type "([\w.]+)" has no value named (\S+?)\.?$')


# -- text format ---------------------------------------------------------------------------------

def _suggestion(message, raw):
    """A " Did you mean 'x'?" hint for an unknown field or enum value, or ""."""
    pool = message.DESCRIPTOR.file.pool
    match = _NO_FIELD.search(raw)
    if match:
        try:
            desc = pool.FindMessageTypeByName(match.group(1))
        except KeyError:
            return ""
        candidates = [f.name for f in desc.fields]
        wanted = match.group(2)
    else:
        match = _NO_ENUM_VALUE.search(raw)
        if not match:
            return ""
        try:
            desc = pool.FindEnumTypeByName(match.group(1))
        except KeyError:
            return ""
        candidates = [v.name for v in desc.values]
        wanted = match.group(2)
    close = difflib.get_close_matches(wanted, candidates, n=1, cutoff=0.6)
    if not close:
        # Case slips (pool: max) are the commonest enum mistake.
        close = [c for c in candidates if c.lower() == wanted.lower()][:1]
    return " Did you mean '%s'?" % close[0] if close else ""


def _clean_parse_error(err, text):
    """Split a text_format.ParseError into (message without location, line, column)."""
    raw = str(err)
    line, column = err.GetLine(), err.GetColumn()
    if line is not None:
        # The library prefixes "line:col : " and, for some errors, "'<source line>': ".
        loc = "%d:%d : " % (line, column) if column is not None else "%d : " % line
        if raw.startswith(loc):
            raw = raw[len(loc):]
        lines = text.split("\n")
        candidates = [lines[line - 1]] if 0 < line <= len(lines) else []
        for src in candidates + [""]:
            prefix = "'" + src + "': "
            if raw.startswith(prefix):
                raw = raw[len(prefix):]
                break
    return raw, line, column


def parse_text(text, message, filename="<string>"):
    """Merge protobuf text ``text`` into ``message`` (returned).

    Raises PrototxtError("file:line:col: ...") on a syntax error, an unknown field or enum value,
    a value of the wrong type, a singular field given twice, or a missing required field.
    """
    if isinstance(text, (bytes, bytearray)):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as e:
            raise PrototxtError("not UTF-8 text (byte %d): is this a binary file?" % e.start,
                                filename=filename) from None
    try:
        text_format.Parse(text, message)
    except text_format.ParseError as e:
        raw, line, column = _clean_parse_error(e, text)
        raise PrototxtError(raw + _suggestion(message, raw), filename=filename, line=line,
                            column=column) from None
    if not message.IsInitialized():
        missing = ", ".join(message.FindInitializationErrors())
        raise PrototxtError("%s is missing required fields: %s"
                            % (message.DESCRIPTOR.full_name, missing), filename=filename)
    return message


def _read_file(path, mode):
    try:
        with open(path, mode) as f:
            return f.read()
    except FileNotFoundError:
        raise MissingFileError("%s: no such file" % os.fspath(path)) from None
    except IsADirectoryError:
        raise MissingFileError("%s: is a directory, not a file" % os.fspath(path)) from None


def read_text(path, message):
    """Parse the prototxt file ``path`` into ``message`` (returned); no upgrade."""
    data = _read_file(path, "rb")
    return parse_text(data, message, filename=os.fspath(path))


def _looks_like_text(value):
    return "\n" in value or "{" in value or (":" in value and not os.path.exists(value))


def _load_text_message(source, cls, what):
    """(message, name) from a message instance, a path, or prototxt text."""
    if isinstance(source, cls):
        msg = cls()
        msg.CopyFrom(source)
        return msg, "<%s>" % what
    if isinstance(source, (bytes, bytearray)):
        return parse_text(source, cls(), filename="<string>"), "<string>"
    if isinstance(source, os.PathLike):
        source = os.fspath(source)
    if not isinstance(source, str):
        raise TypeError("expected a path, prototxt text or a %s, got %r"
                        % (cls.DESCRIPTOR.name, type(source).__name__))
    if os.path.isfile(source) or not _looks_like_text(source):
        return read_text(source, cls()), source
    return parse_text(source, cls(), filename="<string>"), "<string>"


def read_net_param(source):
    """A NetParameter from a prototxt path, prototxt text or a NetParameter (copied), upgraded
    from the V0/V1 formats and deprecated fields as Caffe's ReadNetParamsFromTextFileOrDie does.
    """
    net, name = _load_text_message(source, caffe_pb2.NetParameter, "NetParameter")
    upgrade_net_as_needed(net, name)
    return net


def read_binary(path, msg_cls):
    """Parse the binary protobuf file ``path`` as a ``msg_cls``.

    Raises TruncatedFileError when the bytes are not a complete, valid message of that type
    (as Caffe, a message missing a required field counts as not parsing).
    """
    data = _read_file(path, "rb")
    return _parse_binary(data, msg_cls, os.fspath(path))


def _parse_binary(data, msg_cls, name):
    """Parse, skipping unknown fields (one warning names them) and decaf extension fields
    that hold another fork's data (see :mod:`decaf.proto.compat`)."""
    what = msg_cls.DESCRIPTOR.name
    dropped = ()
    try:
        msg = msg_cls.FromString(data)
    except (_pb_message.DecodeError, RuntimeError, ValueError) as e:
        try:
            msg, dropped = compat.parse_with_fallback(data, msg_cls)
        except (_pb_message.DecodeError, RuntimeError, ValueError):
            msg = None
        if msg is None or not dropped:
            raise TruncatedFileError("file %s is truncated or not a %s: %s"
                                     % (name, what, e)) from None
    if not msg.IsInitialized():
        raise TruncatedFileError("file %s is truncated or not a %s: missing required fields %s"
                                 % (name, what, ", ".join(msg.FindInitializationErrors())))
    bad = compat.first_invalid_string(msg)
    if bad is not None:
        raise TruncatedFileError("file %s is corrupt or not a %s: string field %s is not UTF-8 "
                                 "text" % (name, what, bad))
    compat.warn_unknown_fields(msg, name, dropped)
    return msg


def read_net_param_binary(path):
    """A NetParameter from a binary file (.caffemodel), upgraded as Caffe's
    ReadNetParamsFromBinaryFileOrDie does (V1 weights files become V2 layers; blobs are kept
    as stored, legacy 4-D dims included)."""
    net = read_binary(path, caffe_pb2.NetParameter)
    upgrade_net_as_needed(net, os.fspath(path))
    return net


def read_solver_param(source):
    """A SolverParameter from a prototxt path, prototxt text or a SolverParameter (copied), with
    the deprecated ``solver_type`` enum upgraded into ``type``."""
    solver, name = _load_text_message(source, caffe_pb2.SolverParameter, "SolverParameter")
    upgrade_solver_as_needed(solver, name)
    return solver


# -- writing -------------------------------------------------------------------------------------

def _new_file_mode(path):
    try:
        return os.stat(path).st_mode & 0o7777  # keep the mode of the file being replaced
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def write_error(path, err):
    """The SnapshotError for an OSError ``err`` met while writing ``path``: "no space left"
    for ENOSPC, and a reminder that the file there before is unchanged."""
    reasons = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded",
               errno.EROFS: "read-only file system"}
    reason = reasons.get(err.errno) or err.strerror or str(err)
    out = SnapshotError("cannot write %s: %s (nothing partial is left behind; a file of that "
                        "name from before is unchanged)" % (os.fspath(path), reason))
    out.errno, out.filename = err.errno, os.fspath(path)
    return out


def _atomic_write(path, data):
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path) + ".",
                                   suffix=".tmp")
    except OSError as e:
        raise write_error(path, e) from None
    try:
        # mkstemp makes the file private (0600); give it the mode a plain open() would.
        os.chmod(tmp, _new_file_mode(path))
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, OSError) and not isinstance(e, SnapshotError):
            raise write_error(path, e) from None
        raise


def durable_replace(tmp, path):
    """os.replace(tmp, path) after flushing tmp to disk (fsync): a crash or power loss then
    leaves either the old file or the complete new one (for files written by other libraries,
    e.g. HDF5 snapshots)."""
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def write_binary(path, msg):
    """Serialize ``msg`` to ``path`` (atomically: temp file in the same directory, then
    os.replace)."""
    _atomic_write(path, msg.SerializeToString())


def _float_text(value, digits, round_trips):
    """C++ protobuf's SimpleFtoa/SimpleDtoa: %g with the type's guaranteed digits, or more
    digits when that does not read back to the same value ("0.1", "1", "1e-08")."""
    if math.isnan(value) or math.isinf(value):
        return "%g" % value
    text = "%.*g" % (digits, value)
    return text if round_trips(float(text), value) else "%.*g" % (digits + 3 if digits == 6
                                                                   else digits + 2, value)


def _same_float32(a, b):
    return struct.pack("<f", a) == struct.pack("<f", b)


_CPP_FLOAT = text_format.descriptor.FieldDescriptor.CPPTYPE_FLOAT
_CPP_DOUBLE = text_format.descriptor.FieldDescriptor.CPPTYPE_DOUBLE


class _CaffePrinter(getattr(text_format, "_Printer", object)):
    """protobuf's text printer, with floats printed as C++ protobuf (so Caffe) prints them."""

    def PrintFieldValue(self, field, value):  # noqa: N802 (protobuf's name)
        if field.cpp_type == _CPP_FLOAT:
            self.out.write(_float_text(value, 6, _same_float32))
        elif field.cpp_type == _CPP_DOUBLE:
            self.out.write(_float_text(value, 15, lambda a, b: a == b))
        else:
            super().PrintFieldValue(field, value)


def format_text(msg):
    """``msg`` in protobuf text format, exactly as Caffe's WriteProtoToTextFile prints it
    (floats as C++ protobuf prints them: ``lr_mult: 1``, not ``1.0``)."""
    try:
        out = text_format.TextWriter(False)
        _CaffePrinter(out=out).PrintMessage(msg)
        return out.getvalue()
    except (AttributeError, TypeError):  # a protobuf whose private printer API differs
        return text_format.MessageToString(msg)


def write_text(path, msg):
    """Write ``msg`` to ``path`` in protobuf text format (atomically)."""
    _atomic_write(path, format_text(msg).encode("utf-8"))
