"""``decaf upgrade_net_proto_text``: Caffe's tools/upgrade_net_proto_text.cpp.

    upgrade_net_proto_text v0_net_proto_file_in net_proto_file_out

Upgrades a text (prototxt) net from a deprecated format to the current one and writes it; the
log lines and exit codes (0 done, 1 usage or upgrade problems, 2 unreadable input) are Caffe's.
"""
import sys

from ._upgrade import run

USAGE = "upgrade_net_proto_text v0_net_proto_file_in net_proto_file_out"


def main(argv=None):
    """Entry point; ``argv`` excludes the program name. Returns the exit code."""
    return run("text", argv, "upgrade_net_proto_text", USAGE)


if __name__ == "__main__":
    sys.exit(main())
