"""The benchmark nets: Caffe's example nets and solvers, with Input layers for the data.

``lenet``          examples/mnist/lenet_train_test.prototxt + lenet_solver.prototxt, batch 64
``cifar10_quick``  examples/cifar10/cifar10_quick_train_test.prototxt + cifar10_quick_solver,
                   batch 100

The TRAIN-phase Data layer becomes an Input layer of the same batch shape (data, label) and the
TEST-only layers are dropped, so both frameworks train on the same synthetic batches.  The FLOP
count of one iteration is taken from the decaf net: 2 * top count * K for the forward GEMM of
each Convolution / InnerProduct layer, the same again for its weight gradient, and again for
its bottom gradient when the bottom needs one (not for the first conv layer, whose bottom is the
data).
"""
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

NETS = {
    "lenet": dict(net="examples/mnist/lenet_train_test.prototxt",
                  solver="examples/mnist/lenet_solver.prototxt",
                  batch=64, image=(1, 28, 28), scale=1.0 / 256),
    "cifar10_quick": dict(net="examples/cifar10/cifar10_quick_train_test.prototxt",
                          solver="examples/cifar10/cifar10_quick_solver.prototxt",
                          batch=100, image=(3, 32, 32), scale=1.0),
}


def train_net_param(name):
    """The TRAIN-phase NetParameter of benchmark net ``name`` with Input layers for the data."""
    from decaf.proto import caffe_pb2
    from decaf.proto import io as pio
    spec = NETS[name]
    src = pio.read_net_param(os.path.join(ROOT, spec["net"]))
    out = caffe_pb2.NetParameter()
    out.name = src.name
    out.state.phase = caffe_pb2.TRAIN
    for layer in src.layer:
        phases = {r.phase for r in layer.include if r.HasField("phase")}
        if phases and caffe_pb2.TRAIN not in phases:
            continue
        if layer.type == "Data":
            inp = out.layer.add()
            inp.name, inp.type = layer.name, "Input"
            inp.top.extend(layer.top)
            inp.input_param.shape.add().dim.extend((spec["batch"],) + spec["image"])
            inp.input_param.shape.add().dim.extend((spec["batch"],))
            continue
        out.layer.add().CopyFrom(layer)
    return out


def solver_param(name):
    """Caffe's solver settings for ``name``, training the Input-layer net, without tests,
    display or snapshots."""
    from decaf.proto import io as pio
    param = pio.read_solver_param(os.path.join(ROOT, NETS[name]["solver"]))
    param.ClearField("net")
    param.net_param.CopyFrom(train_net_param(name))
    for field in ("test_iter", "test_net", "test_net_param", "test_state"):
        param.ClearField(field)
    param.test_interval = 0
    param.display = 0
    param.snapshot = 0
    param.snapshot_after_train = False
    param.max_iter = 10 ** 9
    return param


def flops_per_iteration(net):
    """GEMM FLOPs of one forward + backward of a decaf Net (see the module docstring)."""
    total = 0
    for i, layer in enumerate(net.layers):
        if layer.type not in ("Convolution", "InnerProduct"):
            continue
        top = net.top_vecs[i][0]
        w = layer.blobs[0]
        if layer.type == "Convolution":
            k = w.count // w.shape[0]                    # C/group * kh * kw per output
        else:
            k = layer.K
        fwd = 2 * top.count * k
        total += fwd
        if net.layer_need_backward[i]:
            total += fwd                                 # weight gradient
            if net.bottom_need_backward(i)[0]:
                total += fwd                             # bottom gradient
    return total


def synthetic_batches(name, count=4, seed=0):
    """``count`` (data, label) float32 batches shaped like the net's input, seeded."""
    import numpy as np
    spec = NETS[name]
    rs = np.random.RandomState(seed)
    shape = (spec["batch"],) + spec["image"]
    out = []
    for _ in range(count):
        if name == "lenet":    # MNIST pixels scaled by 1/256 as the Data layer's transform does
            data = rs.randint(0, 256, size=shape).astype(np.float32) * np.float32(spec["scale"])
        else:                  # CIFAR pixels minus a mean image: values around [-128, 128)
            data = (rs.randint(0, 256, size=shape) - 128).astype(np.float32)
        label = rs.randint(0, 10, size=spec["batch"]).astype(np.float32)
        out.append((data, label))
    return out
