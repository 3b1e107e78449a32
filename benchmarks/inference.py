"""Inference workers of benchmarks/run.py: one TEST-phase forward loop of a deploy model, in
decaf or in OpenCV's dnn module (its Caffe reader), on the same weights and the same input.

The input batch is seeded: image-like values (res10 SSD: BGR pixels minus its mean, the others
grey levels in [0, 1)), the same for both frameworks.  decaf runs ``net.forward()`` (every
output); OpenCV ``net.forward(every unconnected output)`` on its default CPU backend.
"""
import os
import tempfile
import time

import nets

CACHE = os.path.join(tempfile.gettempdir(), "decaf_bench")


def input_batch(name, shape, seed=0):
    import numpy as np
    rs = np.random.RandomState(seed)
    if name == "res10_ssd":
        return (rs.randint(0, 256, size=shape) - 117.0).astype(np.float32)
    return rs.rand(*shape).astype(np.float32)


def _loop(step, warmup, iters, seconds):
    """``warmup`` untimed calls, then up to ``iters`` timed ones (stopping after ``seconds``):
    (calls, wall s, cpu s)."""
    for _ in range(warmup):
        step()
    wall, cpu = time.perf_counter(), time.process_time()
    done = 0
    while done < iters:
        step()
        done += 1
        if time.perf_counter() - wall > seconds:
            break
    return done, time.perf_counter() - wall, time.process_time() - cpu


def prepare(name, batch):
    """(prototxt, caffemodel, input shape at ``batch``) of inference model ``name``, resolved
    by the orchestrator so that the OpenCV worker never imports decaf (its peak memory is
    OpenCV's own)."""
    import decaf
    proto, weights = nets.infer_files(name, CACHE)
    net = decaf.Net(proto, decaf.TEST)
    return proto, weights, (batch,) + tuple(net.blobs[net.inputs[0]].shape[1:])


def work_decaf(name, proto, weights, shape, warmup, iters, seconds):
    import decaf
    from decaf import glog
    glog.init_log(level=1)
    net = decaf.Net(proto, decaf.TEST, weights=weights)
    blob = net.blobs[net.inputs[0]]
    blob.reshape(shape)
    net.reshape()
    x = input_batch(name, shape)

    def step():
        blob.data[...] = x
        net.forward()

    done, wall, cpu = _loop(step, warmup, iters, seconds)
    return dict(framework="decaf", version=decaf.__version__, iters=done, wall_s=wall, cpu_s=cpu)


def work_opencv(name, proto, weights, shape, warmup, iters, seconds, threads):
    import cv2
    cv2.setNumThreads(threads)
    net = cv2.dnn.readNetFromCaffe(proto, weights)
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
    x = input_batch(name, shape)
    outs = net.getUnconnectedOutLayersNames()

    def step():
        net.setInput(x)
        net.forward(outs)

    done, wall, cpu = _loop(step, warmup, iters, seconds)
    return dict(framework="opencv", version=cv2.__version__, iters=done, wall_s=wall, cpu_s=cpu,
                threads_opencv=cv2.getNumThreads())
