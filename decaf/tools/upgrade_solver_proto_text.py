"""``decaf upgrade_solver_proto_text``: Caffe's tools/upgrade_solver_proto_text.cpp.

    upgrade_solver_proto_text old_solver_proto_file_in solver_proto_file_out

Upgrades a solver prototxt from a deprecated format to the current one and writes it; the
log lines and exit codes (0 done, 1 usage or upgrade problems, 2 unreadable input) are Caffe's.
"""
import sys

from ._upgrade import run

USAGE = "upgrade_solver_proto_text old_solver_proto_file_in solver_proto_file_out"


def main(argv=None):
    """Entry point; ``argv`` excludes the program name. Returns the exit code."""
    return run("solver", argv, "upgrade_solver_proto_text", USAGE)


if __name__ == "__main__":
    sys.exit(main())
