"""A small gflags-compatible command-line parser for the data tools.

Accepts what Caffe's gflags accepts: ``-name=value``, ``--name=value``, ``-name value``,
``--name value``; boolean flags as ``-flag``, ``-flag=true|false|1|0``, ``-noflag``; flags and
positional arguments in any order; ``--`` ends the flags. Unknown flags are errors.
"""
import sys

from ..errors import DecafError


class UsageError(DecafError):
    """Bad command-line arguments."""


_TRUE = ("true", "t", "yes", "y", "1")
_FALSE = ("false", "f", "no", "n", "0")


def parse_flags(argv, spec):
    """Parse ``argv`` (without the program name). ``spec``: {name: default}; the default's type
    (bool, int, float, str) is the flag's type. Returns (flags dict, positional list)."""
    flags = dict(spec)
    positional = []
    i = 0
    argv = list(argv)
    while i < len(argv):
        arg = argv[i]
        i += 1
        if arg == "--":
            positional.extend(argv[i:])
            break
        if not arg.startswith("-") or arg == "-":
            positional.append(arg)
            continue
        body = arg.lstrip("-")
        name, eq, value = body.partition("=")
        if name not in spec and name.startswith("no") and name[2:] in spec \
                and isinstance(spec[name[2:]], bool) and not eq:
            flags[name[2:]] = False
            continue
        if name not in spec:
            raise UsageError("unknown command line flag '%s'" % name)
        kind = type(spec[name])
        if kind is bool:
            if not eq:
                flags[name] = True
                continue
            low = value.lower()
            if low not in _TRUE + _FALSE:
                raise UsageError("illegal value '%s' specified for bool flag '%s'" % (value, name))
            flags[name] = low in _TRUE
            continue
        if not eq:
            if i >= len(argv):
                raise UsageError("flag '%s' is missing its argument" % name)
            value = argv[i]
            i += 1
        try:
            flags[name] = kind(value)
        except ValueError:
            raise UsageError("illegal value '%s' specified for %s flag '%s'"
                             % (value, kind.__name__, name)) from None
    return flags, positional


def parse_solver_tool_args(argv, spec, doc, usage):
    """Flags and the one SOLVER.prototxt of a solver tool; None when -help printed the usage."""
    flags, args = parse_flags(argv, spec)
    if flags.get("help"):
        print(doc.strip() + "\n\n" + usage)
        return None
    if len(args) != 1:
        raise UsageError("expected one SOLVER.prototxt, got %d arguments" % len(args))
    return flags, args[0]


HELP_FLAGS = ("help", "helpshort", "helpfull")


def wants_help(argv):
    """True when ``argv`` asks for gflags' help (``-help``, ``--help``, ``-helpshort``,
    ``-helpfull``, also ``=true``) before any ``--``."""
    for arg in argv:
        if arg == "--":
            return False
        if arg.startswith("-") and arg != "-":
            name, eq, value = arg.lstrip("-").partition("=")
            if name in HELP_FLAGS and (not eq or value.lower() in _TRUE):
                return True
    return False


def argparse_help(argv):
    """``argv`` with gflags' help spellings (``-help``, ``-helpshort``...) as argparse's
    ``--help``, for the tools that keep pycaffe's argparse interface."""
    argv = list(argv)
    end = argv.index("--") if "--" in argv else len(argv)
    return ["--help" if i < end and wants_help([a]) else a for i, a in enumerate(argv)]


def run_tool(body, argv, usage):
    """Run ``body(argv)``: ``-help`` prints ``usage`` (exit code 0); a usage error prints the
    message and the usage, any other DecafError one glog ``F`` line naming the file:line that
    raised it (exit code 1)."""
    from .. import glog
    argv = list(argv)
    if wants_help(argv):
        print(usage)
        return 0
    try:
        return body(argv)
    except UsageError as e:
        print("ERROR: %s\n%s" % (e, usage), file=sys.stderr)
        return 1
    except DecafError as e:
        glog.log_exception(e)
        return 1
