"""The ResNet prototxts the benchmarks use: CIFAR ResNet-20 trains, ResNet-50 deploy runs
(fused and unfused forwards bit-identical)."""
import os

import numpy as np

import decaf
from decaf.proto import caffe_pb2
from decaf.proto import io as pio

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _resnet20_with_inputs(batch=2):
    src = pio.read_net_param(os.path.join(ROOT, "examples/cifar10/"
                                                "cifar10_resnet20_train_test.prototxt"))
    out = caffe_pb2.NetParameter()
    out.name = src.name
    for layer in src.layer:
        if layer.type == "Data":
            if layer.include[0].phase != caffe_pb2.TRAIN:
                continue
            inp = out.layer.add()
            inp.name, inp.type = "data", "Input"
            inp.top.extend(["data", "label"])
            inp.input_param.shape.add().dim.extend([batch, 3, 32, 32])
            inp.input_param.shape.add().dim.extend([batch])
            continue
        out.layer.add().CopyFrom(layer)
    return out


def test_resnet20_trains_one_step():
    net, plain = (decaf.Net(_resnet20_with_inputs(), decaf.TRAIN) for _ in range(2))
    types = [l.type for l in net.layers]
    assert (types.count("Convolution"), types.count("BatchNorm"), types.count("Scale"),
            types.count("Eltwise"), types.count("InnerProduct")) == (21, 21, 21, 9, 1)
    plain.fuse_inference = False
    for a, b in zip(net.learnable_params, plain.learnable_params):
        b.data[...] = a.data
    rs = np.random.RandomState(0)
    data = rs.randn(2, 3, 32, 32)
    losses = []
    for n in (net, plain):
        n.blobs["data"].data[...] = data
        n.blobs["label"].data[...] = [3, 7]
        losses.append(n.forward_backward())
    loss = losses[0]
    assert np.isfinite(loss) and loss > 0
    grads = [p.diff for p in net.learnable_params]
    assert all(np.isfinite(g).all() for g in grads) and any(np.abs(g).sum() > 0 for g in grads)
    # training fuses the 21 BatchNorm -> Scale [-> ReLU] chains (forward and backward) and
    # the 9 Eltwise SUM -> ReLU (forward), with the layers' numbers bit for bit
    chains = net._fusion_plan()
    kinds = [net.layers[i].type for i in chains]
    assert (kinds.count("BatchNorm"), kinds.count("Eltwise"), len(kinds)) == (21, 9, 30)
    assert len(net._backward_fusion_plan()) == 21
    assert losses[0] == losses[1]
    for a, b in zip(grads, plain.learnable_params):
        np.testing.assert_array_equal(a, b.diff)


def test_resnet50_deploy_fused_equals_unfused():
    proto = os.path.join(ROOT, "examples/resnet/ResNet-50-deploy.prototxt")
    nets = [decaf.Net(proto, decaf.TEST) for _ in range(2)]
    rs = np.random.RandomState(0)
    for layers in zip(*(n.layers for n in nets)):
        for blobs in zip(*(l.blobs for l in layers)):
            v = rs.rand(*blobs[0].shape) * 0.1 + (1.0 if layers[0].type == "BatchNorm" else 0)
            for b in blobs:
                b.data[...] = v
    nets[1].fuse_inference = False
    x = rs.rand(1, 3, 224, 224)
    outs = [n.forward(data=x)["prob"] for n in nets]
    assert outs[0].shape == (1, 1000)
    assert len(nets[0]._fusion_plan()) == 53 + 16     # BN+Scale(+ReLU) x 53, Eltwise+ReLU x 16
    np.testing.assert_array_equal(outs[0], outs[1])
