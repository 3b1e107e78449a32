"""glog-format logging: the line prefix, severities, levels, the GLOG_* environment, fatal."""
import datetime
import io
import logging
import os
import re
import subprocess
import sys

import pytest

from decaf import glog as log
from decaf.errors import DecafError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def captured():
    buf = io.StringIO()
    old = log.min_level()
    log.set_stream(buf)
    log.init_log(0)
    yield buf
    log.set_stream(None)
    log.init_log(old)


def test_prefix_is_glogs():
    now = datetime.datetime(2024, 3, 7, 9, 5, 4, 12)
    assert log.prefix(log.WARNING, "solver.cpp:239", now) == \
        "W0307 09:05:04.000012 %5d solver.cpp:239] " % os.getpid()


def test_severities_where_and_caller(captured):
    log.info("hello", "solver.cpp:239")
    log.warning("careful", "net.cpp")
    log.error("bad")
    log.log("from pycaffe")
    lines = captured.getvalue().splitlines()
    rx = re.compile(r"^([IWEF])\d{4} \d\d:\d\d:\d\d\.\d{6} +%d (\S+)\] (.*)$" % os.getpid())
    got = [rx.match(l).groups() for l in lines]
    assert got[0] == ("I", "solver.cpp:239", "hello")
    assert got[1][0] == "W" and re.match(r"net\.cpp:\d+$", got[1][1])
    assert got[2][0] == "E" and re.match(r"test_glog\.py:\d+$", got[2][1])
    assert got[3] == ("I", got[3][1], "from pycaffe") and got[3][1].startswith("test_glog.py:")


def test_min_level_and_multiline(captured):
    log.init_log(1)
    log.info("dropped")
    log.warning("kept\nsecond line")
    text = captured.getvalue()
    assert "dropped" not in text
    assert text.endswith("] kept\nsecond line\n") and text.count("] ") == 1


def test_fatal_logs_then_raises(captured):
    log.init_log(3)
    with pytest.raises(DecafError, match="broken"):
        log.fatal("broken", "caffe.cpp:1")
    assert re.match(r"^F\d{4} .* caffe\.cpp:1\] broken$", captured.getvalue())


def test_logging_records_become_glog_lines(captured):
    log.install_logging_handler("decaf.test_log")
    logging.getLogger("decaf.test_log").warning("upgraded %s", "net.prototxt")
    assert re.match(r"^W\d{4} .* test_glog\.py:\d+\] upgraded net\.prototxt$", captured.getvalue())


def test_number_format_is_cpp_ostream():
    assert [log.fmt(x) for x in (0.00999925, 1.46707123, 2, 1e-8, 123456789.0, 0.1, 100.0)] == \
        ["0.00999925", "1.46707", "2", "1e-08", "1.23457e+08", "0.1", "100"]


def run_env(env, code):
    env = dict(os.environ, PYTHONPATH=ROOT, **env)
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=60)


def test_glog_environment(tmp_path):
    code = "from decaf import glog as log; log.info('i'); log.warning('w'); log.error('e')"
    p = run_env({"GLOG_minloglevel": "1"}, code)
    assert [l[0] for l in p.stderr.splitlines()] == ["W", "E"]
    p = run_env({"GLOG_logtostderr": "0", "GLOG_log_dir": str(tmp_path)}, code)
    assert [l[0] for l in p.stderr.splitlines()] == ["E"]          # stderrthreshold 2
    (logfile,) = os.listdir(tmp_path)
    assert ".log.INFO." in logfile
    body = (tmp_path / logfile).read_text().splitlines()
    assert body[0].startswith("Log file created at: ")
    assert [l[0] for l in body[3:]] == ["I", "W", "E"]


def test_missing_log_dir_falls_back_to_stderr(tmp_path):
    missing = str(tmp_path / "no" / "such")
    code = "from decaf import glog as log; log.info('i'); log.warning('w'); log.error('e')"
    p = run_env({"GLOG_logtostderr": "0", "GLOG_log_dir": missing}, code)
    assert p.returncode == 0 and "Traceback" not in p.stderr
    lines = p.stderr.splitlines()
    assert lines[0].startswith("E") and ("Could not create log file in log_dir %r" % missing
                                         in lines[0]) and "no such folder" in lines[0]
    assert [l[0] for l in lines[1:]] == ["I", "W", "E"]      # every line, on stderr
    assert not os.path.exists(missing)


UPGRADE_CODE = ("from decaf.proto import io; from decaf.testing.data import golden_path; "
                "io.read_net_param(golden_path('formats', 'upgrade', 'v0_net.prototxt'))")


def test_upgrade_notes_are_glog_lines_and_obey_minloglevel():
    p = run_env({"GLOG_minloglevel": "0"}, UPGRADE_CODE)
    assert p.returncode == 0
    lines = p.stderr.splitlines()
    notes = [l for l in lines if "Note that future Caffe releases" in l]
    assert len(notes) == 2 and all(re.match(r"^W\d{4} .* upgrade_proto\.cpp:\d+\] Note", l)
                                   for l in notes)
    assert all(re.match(r"^[IWEF]\d{4} ", l) for l in lines)
    p = run_env({"GLOG_minloglevel": "2"}, UPGRADE_CODE)
    assert p.returncode == 0 and p.stderr == ""


def test_decaf_logging_records_obey_minloglevel():
    code = ("import logging, decaf.glog; logging.getLogger('decaf.proto').error('bad %s', 1);"
            "logging.getLogger('decaf.proto').warning('note')")
    p = run_env({"GLOG_minloglevel": "2"}, code)
    assert re.match(r"^E\d{4} .*\] bad 1\n$", p.stderr)
