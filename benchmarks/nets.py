"""The benchmark nets: Caffe's example nets and solvers, with Input layers for the data, the
equivalent PyTorch models, and the deploy models of the inference benchmark.

Training:
``lenet``             examples/mnist/lenet_train_test.prototxt + lenet_solver.prototxt, batch 64
``cifar10_quick``     examples/cifar10/cifar10_quick_train_test.prototxt + cifar10_quick_solver,
                      batch 100
``cifar10_resnet20``  examples/cifar10/cifar10_resnet20_train_test.prototxt + its solver
                      (He et al.'s CIFAR ResNet-20: BatchNorm + Scale + Eltwise), batch 32

Inference (``INFER``): res10 SSD face detector, WeChat QR detector and super-resolution (the
repository's copies, decaf.testing.data.model_path), ResNet-50 (examples/resnet, random
weights, written once to a .caffemodel so that OpenCV reads the same weights).

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
    "cifar10_resnet20": dict(net="examples/cifar10/cifar10_resnet20_train_test.prototxt",
                             solver="examples/cifar10/cifar10_resnet20_solver.prototxt",
                             batch=32, image=(3, 32, 32), scale=1.0),
}

INFER = {
    "res10_ssd": dict(model=("res10_ssd_face", "deploy.prototxt"),
                      weights=("res10_ssd_face", "res10_300x300_ssd_iter_140000.caffemodel")),
    "wechat_detect": dict(model=("wechat_qrcode", "detect.prototxt"),
                          weights=("wechat_qrcode", "detect.caffemodel")),
    "wechat_sr": dict(model=("wechat_qrcode", "sr.prototxt"),
                      weights=("wechat_qrcode", "sr.caffemodel")),
    "resnet50": dict(model="examples/resnet/ResNet-50-deploy.prototxt", weights=None),
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


def infer_files(name, cache_dir):
    """(prototxt, caffemodel) paths of inference model ``name``; ResNet-50's random weights
    (seeded, BatchNorm statistics included) are written to ``cache_dir`` on first use."""
    from decaf.testing import data
    spec = INFER[name]
    if spec["weights"] is not None:
        return data.model_path(*spec["model"]), data.model_path(*spec["weights"])
    proto = os.path.join(ROOT, spec["model"])
    weights = os.path.join(cache_dir, name + "_random.caffemodel")
    if not os.path.exists(weights):
        import numpy as np
        import decaf
        net = decaf.Net(proto, decaf.TEST)
        rs = np.random.RandomState(0)
        for layer in net.layers:
            for b in layer.blobs:
                if layer.type == "BatchNorm":          # mean ~0, variance ~1, scale factor 1
                    b.data[...] = 1.0 if b.count == 1 else (
                        rs.uniform(0.5, 1.5, b.shape) if b is layer.blobs[1] else
                        rs.normal(0.0, 0.1, b.shape))
                else:                                  # He-scaled weights, small biases
                    fan_in = max(1, b.count // b.shape[0]) if b.num_axes > 1 else 1
                    b.data[...] = rs.normal(0.0, (2.0 / fan_in) ** 0.5 if b.num_axes > 1
                                            else 0.05, b.shape)
        os.makedirs(cache_dir, exist_ok=True)
        net.save(weights + ".tmp")
        os.replace(weights + ".tmp", weights)
    return proto, weights


# -- the PyTorch models ---------------------------------------------------------------------

def torch_model(name, torch):
    """The PyTorch equivalent of training net ``name`` (Caffe's fillers, ceil-mode pooling)."""
    nn = torch.nn
    if name == "lenet":
        model = nn.Sequential(
            nn.Conv2d(1, 20, 5), nn.MaxPool2d(2, 2, ceil_mode=True),
            nn.Conv2d(20, 50, 5), nn.MaxPool2d(2, 2, ceil_mode=True),
            nn.Flatten(), nn.Linear(800, 500), nn.ReLU(inplace=True), nn.Linear(500, 10))
        for m in model:
            if isinstance(m, (nn.Conv2d, nn.Linear)):     # Caffe's xavier filler, zero bias
                fan_in = m.weight[0].numel()
                bound = (3.0 / fan_in) ** 0.5
                nn.init.uniform_(m.weight, -bound, bound)
                nn.init.zeros_(m.bias)
        return model
    if name == "cifar10_resnet20":
        return _resnet20(torch)
    model = nn.Sequential(
        nn.Conv2d(3, 32, 5, padding=2), nn.MaxPool2d(3, 2, ceil_mode=True), nn.ReLU(inplace=True),
        nn.Conv2d(32, 32, 5, padding=2), nn.ReLU(inplace=True),
        nn.AvgPool2d(3, 2, ceil_mode=True),
        nn.Conv2d(32, 64, 5, padding=2), nn.ReLU(inplace=True),
        nn.AvgPool2d(3, 2, ceil_mode=True),
        nn.Flatten(), nn.Linear(64 * 4 * 4, 64), nn.Linear(64, 10))
    stds = iter([1e-4, 1e-2, 1e-2, 0.1, 0.1])               # the prototxt's gaussian fillers
    for m in model:
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, next(stds))
            nn.init.zeros_(m.bias)
    return model


def _resnet20(torch):
    """He et al.'s CIFAR ResNet-20 as the prototxt builds it: 3x3 convolutions without bias,
    BatchNorm (Caffe's BatchNorm + Scale: affine, eps 1e-5, moving average 0.999), ReLU,
    projection shortcuts (1x1 conv + BN) where the shape changes, global average pooling, fc10;
    msra (He) fillers."""
    nn = torch.nn

    def bn(c):
        return nn.BatchNorm2d(c, eps=1e-5, momentum=0.001)

    class Block(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.a = nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), bn(cout),
                                   nn.ReLU(inplace=True),
                                   nn.Conv2d(cout, cout, 3, 1, 1, bias=False), bn(cout))
            self.short = None
            if stride != 1 or cin != cout:
                self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), bn(cout))
            self.relu = nn.ReLU(inplace=True)

        def forward(self, x):
            s = x if self.short is None else self.short(x)
            return self.relu(self.a(x) + s)

    layers = [nn.Conv2d(3, 16, 3, 1, 1, bias=False), bn(16), nn.ReLU(inplace=True)]
    cin = 16
    for cout in (16, 32, 64):
        for b in range(3):
            layers.append(Block(cin, cout, 2 if (b == 0 and cout != 16) else 1))
            cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10)]
    model = nn.Sequential(*layers)
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")   # Caffe's msra, FAN_IN
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return model


def torch_param_groups(name, model, sp):
    """SGD parameter groups with Caffe's multipliers: biases of conv / fc layers at lr_mult 2
    (LeNet, CIFAR quick; ResNet-20's fc10 too, with decay_mult 0 there), the rest at 1."""
    weights, biases = [], []
    for n, p in model.named_parameters():
        is_bias = n.endswith("bias") and p.dim() == 1 and not _is_bn(model, n)
        (biases if is_bias else weights).append(p)
    wd = sp.weight_decay
    bias_wd = 0.0 if name == "cifar10_resnet20" else wd
    return [{"params": weights, "lr": sp.base_lr, "weight_decay": wd},
            {"params": biases, "lr": 2 * sp.base_lr, "weight_decay": bias_wd}]


def _is_bn(model, param_name):
    mod = model.get_submodule(param_name.rsplit(".", 1)[0])
    return type(mod).__name__.startswith("BatchNorm")


def torch_lr_lambda(sp):
    """Caffe's lr policy as a LambdaLR factor of the iteration (None for "fixed")."""
    if sp.lr_policy == "inv":
        return lambda it: (1.0 + sp.gamma * it) ** (-sp.power)
    if sp.lr_policy == "multistep":
        steps = list(sp.stepvalue)
        return lambda it: sp.gamma ** sum(1 for s in steps if it >= s)
    return None
