"""``decaf upgrade_net_proto_text``, ``upgrade_net_proto_binary``, ``upgrade_solver_proto_text``
against the outputs and the log of Caffe's own tools (golden formats/upgrade)."""
import io
import os
import re
import shutil

import pytest

from decaf import glog as log
from decaf.testing.data import golden_path
from decaf.tools import cli

GLOG = re.compile(r"^([IWEF])\d{4} \d\d:\d\d:\d\d\.\d{6} +\d+ ([\w.]+):(\d+)\] (.*)$")

# the runs that wrote upgrade_tools.log, in its order
RUNS = [("upgrade_net_proto_text", "v1_net.prototxt", "v1_net.upgraded.prototxt"),
        ("upgrade_net_proto_text", "v0_net.prototxt", "v0_net.upgraded.prototxt"),
        ("upgrade_net_proto_text", "v2_deprecated_input.prototxt",
         "v2_deprecated_input.upgraded.prototxt"),
        ("upgrade_solver_proto_text", "old_solver.prototxt", "old_solver.upgraded.prototxt"),
        ("upgrade_net_proto_binary", "v1_net.caffemodel", "v1_net.upgraded.caffemodel")]


@pytest.fixture
def work(tmp_path, monkeypatch):
    for _, src, _ in RUNS:
        shutil.copy(golden_path("formats", "upgrade", src), tmp_path / src)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run(argv):
    buf = io.StringIO()
    log.set_stream(buf)
    try:
        rc = cli.main(argv)
    finally:
        log.set_stream(None)
    return rc, [GLOG.match(l).groups() for l in buf.getvalue().splitlines()]


def test_outputs_and_log_are_caffes(work):
    messages = []
    for tool, src, out in RUNS:
        rc, lines = run([tool, src, out])
        assert rc == 0
        with open(golden_path("formats", "upgrade", out), "rb") as f:
            assert (work / out).read_bytes() == f.read(), out
        messages += [m for _, _, _, m in lines]
        for severity, filename, _, message in lines:
            expected = "W" if message.startswith("Note that") else "I"
            assert severity == expected, message
            assert filename in ("upgrade_proto.cpp", tool + ".cpp")
    with open(golden_path("formats", "upgrade", "upgrade_tools.log")) as f:
        assert messages == f.read().splitlines()


def test_already_up_to_date_and_exit_codes(work, capsys):
    rc, lines = run(["upgrade_net_proto_text", "v0_net.prototxt", "a.prototxt"])
    assert rc == 0
    rc, lines = run(["upgrade_net_proto_text", "a.prototxt", "b.prototxt"])
    assert rc == 0 and (work / "b.prototxt").read_text() == (work / "a.prototxt").read_text()
    assert lines[0][0] == "E" and lines[0][1:3] == ("upgrade_net_proto_text.cpp", "43")
    assert lines[0][3] == "File already in latest proto format: a.prototxt"
    rc, lines = run(["upgrade_net_proto_text", "only_one"])
    assert rc == 1 and lines[0][3] == ("Usage: upgrade_net_proto_text v0_net_proto_file_in "
                                       "net_proto_file_out")
    (work / "bad.prototxt").write_text("layer { name: 'x' bogus: 1 }\n")
    rc, lines = run(["upgrade_net_proto_text", "bad.prototxt", "c.prototxt"])
    assert rc == 2 and not (work / "c.prototxt").exists()
    assert "bad.prototxt" in lines[0][3] and "bogus" in lines[0][3]
    assert lines[-1][3] == "Failed to parse input text file as NetParameter: bad.prototxt"
    (work / "bad.caffemodel").write_bytes(b"\xff\xff\xff")
    rc, lines = run(["upgrade_net_proto_binary", "bad.caffemodel", "c.caffemodel"])
    assert rc == 2
    assert lines[-1][3] == "Failed to parse input binary file as NetParameter: bad.caffemodel"
    rc, lines = run(["upgrade_solver_proto_text", "missing.prototxt", "s.prototxt"])
    assert rc == 2 and "missing.prototxt" in lines[0][3]


def test_lossy_upgrade_writes_the_file_and_exits_1(work):
    (work / "lossy.prototxt").write_text(
        'input: "data"\ninput_dim: 1\ninput_dim: 1\ninput_dim: 2\ninput_dim: 2\n'
        'layers { layer { name: "r" type: "relu" num_output: 3 } bottom: "data" top: "r" }\n')
    rc, lines = run(["upgrade_net_proto_text", "lossy.prototxt", "out.prototxt"])
    assert rc == 1
    text = [m for _, _, _, m in lines]
    assert "Unknown parameter num_output for layer type relu" in text
    assert "Encountered error(s) while upgrading prototxt; see details above." in text
    assert 'type: "ReLU"' in (work / "out.prototxt").read_text()
