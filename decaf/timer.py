"""Timer: pycaffe's ``caffe.Timer`` (Caffe's ``caffe::Timer``).

    t = caffe.Timer(); t.start(); ...; t.stop(); print(t.ms)

``start()`` starts the clock when it is not running; ``stop()`` stops it when it is; ``ms``
(also ``milliseconds()``, ``microseconds()``, ``seconds()``) is the time between the last
start and stop, stopping a running timer first, as Caffe does. In GPU mode the device is
synchronized at start and stop, so the time covers the queued GPU work (Caffe times GPU
work with CUDA events).
"""
import time

from . import backend


def _sync():
    if backend.mode() == backend.GPU and backend._cupy is not None:
        backend._cupy.cuda.get_current_stream().synchronize()


class Timer:
    """A stopwatch with Caffe's Start/Stop/MilliSeconds semantics."""

    def __init__(self):
        self.initted = True
        self.running = False
        self.has_run_at_least_once = False
        self._start = self._stop = 0.0

    def start(self):
        if not self.running:
            _sync()
            self._start = time.perf_counter()
            self.running = True
            self.has_run_at_least_once = True

    def stop(self):
        if self.running:
            _sync()
            self._stop = time.perf_counter()
            self.running = False

    def _elapsed(self):
        if not self.has_run_at_least_once:
            from . import glog as log
            log.warning("Timer has never been run before reading time.", "benchmark.cpp:83")
            return 0.0
        if self.running:
            self.stop()
        return self._stop - self._start

    def microseconds(self):
        return self._elapsed() * 1e6

    def milliseconds(self):
        return self._elapsed() * 1e3

    def seconds(self):
        return self._elapsed()

    @property
    def ms(self):
        """Milliseconds between the last start and stop (pycaffe's ``Timer.ms``)."""
        return self.milliseconds()

    # Caffe's C++ names, for code ported from C++.
    Start, Stop = start, stop
    MicroSeconds, MilliSeconds, Seconds = microseconds, milliseconds, seconds
