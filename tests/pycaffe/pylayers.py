"""Python layers used by the pycaffe tests (prototxt ``module: 'tests.pycaffe.pylayers'``)."""
import numpy as np

import caffe


class TimesTen(caffe.Layer):
    """top = 10 * bottom; bottom diff = 10 * top diff."""

    def setup(self, bottom, top):
        pass

    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].data.shape)

    def forward(self, bottom, top):
        top[0].data[...] = 10 * bottom[0].data

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            bottom[0].diff[...] = 10 * top[0].diff


class Scaled(caffe.Layer):
    """top = float(param_str) * bottom."""

    def setup(self, bottom, top):
        self.value = float(self.param_str)

    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].data.shape)

    def forward(self, bottom, top):
        top[0].data[...] = self.value * bottom[0].data

    def backward(self, top, propagate_down, bottom):
        bottom[0].diff[...] = self.value * top[0].diff


class SetupFails(caffe.Layer):
    def setup(self, bottom, top):
        raise KeyError("no such thing in setup")


class ForwardFails(caffe.Layer):
    def setup(self, bottom, top):
        pass

    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].data.shape)

    def forward(self, bottom, top):
        raise ZeroDivisionError("forward went wrong")


class Bias(caffe.Layer):
    """top = bottom + b, with a learnable scalar b added by add_blob (starts at 0)."""

    def setup(self, bottom, top):
        self.blobs.add_blob(1)
        self.blobs[0].data[0] = 0

    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].data.shape)

    def forward(self, bottom, top):
        top[0].data[...] = bottom[0].data + self.blobs[0].data[0]

    def backward(self, top, propagate_down, bottom):
        self.blobs[0].diff[0] += top[0].diff.sum()
        if propagate_down[0]:
            bottom[0].diff[...] = top[0].diff


class Phase(caffe.Layer):
    """A scalar top holding self.phase."""

    def setup(self, bottom, top):
        pass

    def reshape(self, bottom, top):
        top[0].reshape()

    def forward(self, bottom, top):
        top[0].data[()] = self.phase


class HalfSumSquares(caffe.Layer):
    """top = 0.5 * sum(bottom^2) (a loss when given a loss_weight); bottom diff = top diff * x."""

    def setup(self, bottom, top):
        pass

    def reshape(self, bottom, top):
        top[0].reshape()

    def forward(self, bottom, top):
        top[0].data[...] = 0.5 * np.sum(bottom[0].data ** 2)

    def backward(self, top, propagate_down, bottom):
        bottom[0].diff[...] = top[0].diff * bottom[0].data


class TwoInTwoOut(caffe.Layer):
    """Any number of bottoms and tops: top[i] = bottom[i] + i."""

    def setup(self, bottom, top):
        pass

    def reshape(self, bottom, top):
        for b, t in zip(bottom, top):
            t.reshape(*b.data.shape)

    def forward(self, bottom, top):
        for i, (b, t) in enumerate(zip(bottom, top)):
            t.data[...] = b.data + i

    def backward(self, top, propagate_down, bottom):
        for b, t, pd in zip(bottom, top, propagate_down):
            if pd:
                b.diff[...] = t.diff


class Counter(caffe.Layer):
    """A data layer: top = [k, k+1, ...] for the k-th batch of 4."""

    def setup(self, bottom, top):
        self.k = 0

    def reshape(self, bottom, top):
        top[0].reshape(4)

    def forward(self, bottom, top):
        top[0].data[...] = np.arange(self.k, self.k + 4)
        self.k += 4


NotALayer = dict
