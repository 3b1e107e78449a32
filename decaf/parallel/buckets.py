"""Gradient buckets for the layer-wise all-reduce: which learnable parameters travel together,
and after which layer's backward a bucket is complete.

Backward runs from the last layer to the first, so a parameter's gradient is final once the
backward of the *lowest* layer that holds it is done (its ``ready`` layer; a parameter shared by
several layers becomes ready at the first of them). Parameters are taken in backward order
(ready layer descending) and packed into buckets of at least ``bucket_bytes`` (cut only between
layers and where the dtype changes); a bucket is launched after the backward of its ``trigger``
layer, the lowest ready layer among its parameters.
"""
import numpy as np


class Bucket:
    """Learnable parameters ``indices`` (in order), packed into one flat host buffer; the
    all-reduce is launched after layer ``trigger``'s backward."""

    __slots__ = ("indices", "trigger", "offsets", "buffer", "request", "sent")

    def __init__(self, indices, trigger, params):
        self.indices, self.trigger = list(indices), int(trigger)
        self.offsets, n = [], 0
        for i in self.indices:
            self.offsets.append(n)
            n += params[i].count
        self.buffer = np.zeros(n, params[self.indices[0]].dtype)
        self.request = None     # the pending Iallreduce
        self.sent = False       # launched in this iteration

    @property
    def nbytes(self):
        return self.buffer.nbytes

    def pack(self, params):
        """buffer <- the parameters' diffs."""
        for i, off in zip(self.indices, self.offsets):
            d = params[i].diff
            self.buffer[off:off + d.size] = d.reshape(-1)

    def unpack_scaled(self, params, scale):
        """diff <- buffer * scale, for each parameter (Caffe's caffe_scal(1/solver_count))."""
        for i, off in zip(self.indices, self.offsets):
            d = params[i].diff
            np.multiply(self.buffer[off:off + d.size].reshape(d.shape), scale, out=d)


def ready_layers(net):
    """For each learnable parameter, the lowest layer index holding it (Net params are
    numbered layer by layer, blob by blob; ``learnable_param_ids`` maps them)."""
    ready = [None] * len(net.learnable_params)
    net_id = 0
    for layer_id, layer in enumerate(net.layers):
        for _ in layer.blobs:
            li = net.learnable_param_ids[net_id]
            if ready[li] is None or layer_id < ready[li]:
                ready[li] = layer_id
            net_id += 1
    return ready


def plan(net, bucket_bytes):
    """[Bucket] in launch order (backward order) for ``net.learnable_params``."""
    params = net.learnable_params
    if not params:
        return []
    ready = ready_layers(net)
    order = sorted(range(len(params)), key=lambda i: (-ready[i], i))
    buckets, current, size = [], [], 0
    for pos, i in enumerate(order):
        current.append(i)
        size += params[i].count * params[i].dtype.itemsize
        nxt = order[pos + 1] if pos + 1 < len(order) else None
        at_layer_edge = nxt is None or ready[nxt] != ready[i]
        if nxt is None or (at_layer_edge and size >= bucket_bytes) or \
                params[nxt].dtype != params[i].dtype:
            buckets.append(Bucket(current, ready[current[-1]], params))
            current, size = [], 0
    return buckets


def shares_weights(net):
    """True when some parameter is held by several layers (Caffe refuses layer-wise reduce)."""
    n_blobs = sum(len(layer.blobs) for layer in net.layers)
    return n_blobs != len(net.learnable_params)
