"""``decaf parse_log``: BVLC's tools/extra/parse_log.py (with extract_seconds.py), in Python 3.

    decaf parse_log [--delimiter ,] [--verbose] LOGFILE OUTPUT_DIR

Parses a training log (Caffe's or decaf's: the same glog lines) into two CSV files,
``OUTPUT_DIR/<basename of LOGFILE>.train`` and ``.test``, with the columns NumIters, Seconds
(since the "Solving" line), LearningRate and every ``Train/Test net output #k: name = value``,
one row per iteration that printed them, exactly as BVLC's script writes them (csv's excel
dialect: ``\\r\\n`` line ends; floats as Python prints them). As there, a row's LearningRate
is the one printed last before its outputs (Caffe prints an iteration's rate after them, so
it is the previous display's), and the first rows take that of the second.

Where BVLC's script crashes, this one goes on: empty or unprefixed lines are skipped, a log
without a "Solving" line is timed from its first glog line, and ``nan``/``inf`` outputs are
read. The year (glog lines carry none) comes from the log file's "Log file created at:" header,
else from the file's change time, as in BVLC; a month going backwards starts the next year.
"""
import csv
import datetime
import os
import re
import sys
from collections import OrderedDict

from ..data.cli import UsageError, parse_flags, run_tool
from ..errors import DecafError

_NUMBER = r"([-+]?(?:[\.\deE+-]+|nan|inf))"
RE_ITERATION = re.compile(r"Iteration (\d+)")
RE_TRAIN_OUTPUT = re.compile(r"Train net output #(\d+): (\S+) = " + _NUMBER)
RE_TEST_OUTPUT = re.compile(r"Test net output #(\d+): (\S+) = " + _NUMBER)
RE_LEARNING_RATE = re.compile(r"lr = ([-+]?[0-9]*\.?[0-9]+([eE]?[-+]?[0-9]+)?)")
RE_CREATED = re.compile(r"^Log file created at: (\d{4})/")

USAGE = ("Parse a Caffe training log into two CSV files containing training and testing "
         "information\n"
         "Usage:\n"
         "    decaf parse_log [--delimiter ,] [--verbose] LOGFILE OUTPUT_DIR\n"
         "  --delimiter  Column delimiter in output files (default: ',')\n"
         "  --verbose    Print some extra info (e.g., output filenames)")


def extract_datetime_from_line(line, year):
    """The time of a glog line ``I0210 13:39:22.381027 25210 solver.cpp:204] ...``; raises
    ValueError for any other line."""
    fields = line.strip().split()
    if len(fields) < 2 or len(fields[0]) != 5 or fields[0][0] not in "IWEF":
        raise ValueError("not a glog line: %r" % line)
    stamp, _, micro = fields[1].partition(".")
    hour, minute, second = (int(x) for x in stamp.split(":"))
    return datetime.datetime(year, int(fields[0][1:3]), int(fields[0][3:5]), hour, minute,
                             second, int(micro or 0))


def get_log_created_year(path, lines=()):
    """The year of glog's "Log file created at:" header, else of the file's change time."""
    for line in lines[:3]:
        match = RE_CREATED.match(line)
        if match:
            return int(match.group(1))
    return datetime.datetime.fromtimestamp(os.path.getctime(path)).year


def get_start_time(lines, year):
    """(index after it, time) of the "Solving" line; the first glog line when there is none."""
    first = None
    for i, line in enumerate(lines):
        try:
            when = extract_datetime_from_line(line, year)
        except ValueError:
            continue
        if first is None:
            first = (i, when)
        if "Solving" in line:
            return i + 1, when
    if first is None:
        raise DecafError("no glog line (like 'I0210 13:39:22.381027 25210 solver.cpp:204] ...') "
                         "in this log: not a Caffe or decaf training log")
    return first[0], first[1]


def parse_log(path):
    """(train rows, test rows): lists of OrderedDicts NumIters, Seconds, LearningRate, outputs."""
    try:
        with open(path, errors="replace") as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise DecafError("cannot read log file %s: %s" % (path, e.strerror or e)) from None
    year = get_log_created_year(path, lines)
    start, start_time = get_start_time(lines, year)
    last_time = start_time
    iteration, learning_rate = -1, float("nan")
    train, test, train_row, test_row = [], [], None, None
    for line in lines[start:]:
        match = RE_ITERATION.search(line)
        if match:
            iteration = float(match.group(1))
        if iteration == -1:
            continue
        try:
            when = extract_datetime_from_line(line, year)
        except ValueError:
            continue
        if when.month < last_time.month:        # the log went on into the next year
            year += 1
            when = extract_datetime_from_line(line, year)
        last_time = when
        seconds = (when - start_time).total_seconds()
        match = RE_LEARNING_RATE.search(line)
        if match:
            learning_rate = float(match.group(1))
        train_row = _net_output(RE_TRAIN_OUTPUT, train_row, train, line, iteration, seconds,
                                learning_rate)
        test_row = _net_output(RE_TEST_OUTPUT, test_row, test, line, iteration, seconds,
                               learning_rate)
    for rows in (train, test):
        if len(rows) > 1:
            rows[0]["LearningRate"] = rows[1]["LearningRate"]
    return train, test


def _net_output(regex, row, rows, line, iteration, seconds, learning_rate):
    """BVLC's parse_line_for_net_output: add the line's output to the current row, starting a
    new row on a new iteration; a row is complete when it has as many columns as the first."""
    match = regex.search(line)
    if match:
        if not row or row["NumIters"] != iteration:
            if row:
                rows.append(row)
            row = OrderedDict([("NumIters", iteration), ("Seconds", seconds),
                               ("LearningRate", learning_rate)])
        row[match.group(2)] = float(match.group(3))
    if row and rows and len(row) == len(rows[0]):
        rows.append(row)
        row = None
    return row


def write_csv(filename, rows, delimiter=",", verbose=False):
    """The rows as CSV (excel dialect), header from the first row; nothing when empty."""
    if not rows:
        if verbose:
            print("Not writing %s; no lines to write" % filename)
        return False
    with open(filename, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0].keys()), dialect=csv.excel,
                                delimiter=delimiter)
        writer.writeheader()
        writer.writerows(rows)
    if verbose:
        print("Wrote %s" % filename)
    return True


def save_csv_files(logfile, output_dir, train, test, delimiter=",", verbose=False):
    """Write ``<output_dir>/<basename>.train`` and ``.test``."""
    base = os.path.join(output_dir, os.path.basename(logfile))
    write_csv(base + ".train", train, delimiter, verbose)
    write_csv(base + ".test", test, delimiter, verbose)


def _run(argv):
    flags, args = parse_flags(argv, {"delimiter": ",", "verbose": False})
    if len(args) != 2:
        raise UsageError("expected LOGFILE OUTPUT_DIR, got %d arguments" % len(args))
    if len(flags["delimiter"]) != 1:
        raise UsageError("--delimiter must be one character, got %r" % flags["delimiter"])
    if not os.path.isdir(args[1]):
        raise DecafError("output directory %s does not exist" % args[1])
    train, test = parse_log(args[0])
    save_csv_files(args[0], args[1], train, test, flags["delimiter"], flags["verbose"])
    return 0


def main(argv=None):
    """Entry point; ``argv`` excludes the program name. Returns the exit code."""
    return run_tool(_run, sys.argv[1:] if argv is None else argv, USAGE)


if __name__ == "__main__":
    sys.exit(main())
