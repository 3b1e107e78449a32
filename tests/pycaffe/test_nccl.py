"""caffe.has_nccl / caffe.NCCL (decaf has no NCCL), and caffe.Timer."""
import time

import pytest

import caffe


def test_no_nccl():
    assert caffe.has_nccl() is False
    with pytest.raises(RuntimeError, match="NCCL"):
        caffe.NCCL.new_uid()
    with pytest.raises(RuntimeError, match="NCCL"):
        caffe.NCCL(None, b"")


def test_timer_start_stop_ms():
    t = caffe.Timer()
    assert t.ms == 0.0                                  # never run: 0, with a warning
    t.start()
    time.sleep(0.02)
    t.stop()
    first = t.ms
    assert 15 <= first < 2000
    time.sleep(0.01)
    assert t.ms == first                                # stopped: the reading stays
    t.start()
    time.sleep(0.005)
    running = t.ms                                      # reading a running timer stops it
    assert not t.running and 3 <= running < first
    assert t.seconds() == pytest.approx(running / 1e3)
    assert t.microseconds() == pytest.approx(running * 1e3)


def test_timer_start_twice_keeps_first_start():
    t = caffe.Timer()
    t.start()
    time.sleep(0.01)
    t.start()                                           # no effect while running
    t.stop()
    assert t.ms >= 8
