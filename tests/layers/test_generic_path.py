"""The generic ``xp`` path (what CuPy runs) of the layers whose CPU path is a Numba kernel gives
the kernel's numbers: a NumPy stand-in that is not ``numpy`` itself takes the generic branch."""
import types

import numpy as np
import pytest
from google.protobuf import text_format

import decaf
from decaf.proto import caffe_pb2

GENERIC = types.SimpleNamespace(**{n: getattr(np, n) for n in dir(np) if not n.startswith("__")})

LAYERS = {
    "ReLU": 'relu_param { negative_slope: 0.2 }',
    "BatchNorm": 'batch_norm_param { use_global_stats: false }',
    "Scale": 'scale_param { bias_term: true filler { type: "gaussian" } '
             'bias_filler { type: "gaussian" } }',
    "Bias": 'bias_param { filler { type: "gaussian" } }',
    "Softmax": 'softmax_param { axis: 1 }',
    "LRN": 'lrn_param { local_size: 3 alpha: 0.5 beta: 0.75 }',
    "LRN_within": 'lrn_param { local_size: 3 alpha: 0.5 beta: 0.75 norm_region: WITHIN_CHANNEL }',
}


def _run(kind, generic, extra_bottoms=0):
    typ = kind.split("_")[0]
    lp = caffe_pb2.LayerParameter()
    text_format.Merge('name: "l" type: "%s" %s' % (typ, LAYERS.get(kind, "")), lp)
    for i in range(1 + extra_bottoms):
        lp.bottom.append("b%d" % i)
    lp.top.append("t")
    if kind == "Eltwise_max":
        lp.eltwise_param.operation = caffe_pb2.EltwiseParameter.MAX
    if kind == "Eltwise_sum":
        lp.eltwise_param.coeff.extend([0.5, -1.0, 2.0])
    np.random.seed(0)
    decaf.set_random_seed(0)
    layer = decaf.create_layer(lp, caffe_pb2.TRAIN)
    rs = np.random.RandomState(1)
    bottoms = [decaf.Blob((2, 4, 3, 5)) for _ in range(1 + extra_bottoms)]
    for b in bottoms:
        b.data[...] = rs.randn(*b.shape)
    bottoms[0].data.flat[:2] = bottoms[-1].data.flat[:2]         # ties for MAX
    top = [decaf.Blob()]
    layer.SetUp(bottoms, top)
    if generic:
        layer.xp = GENERIC
    layer.Forward(bottoms, top)
    top[0].diff[...] = rs.randn(*top[0].shape)
    layer.Backward(top, [True] * len(bottoms), bottoms)
    return ([top[0].data.copy()] + [b.diff.copy() for b in bottoms] +
            [p.diff.copy() for p in layer.blobs] + [p.data.copy() for p in layer.blobs])


@pytest.mark.parametrize("kind,extra", [("ReLU", 0), ("BatchNorm", 0), ("Scale", 0),
                                        ("Bias", 0), ("Softmax", 0), ("LRN", 0),
                                        ("LRN_within", 0), ("Eltwise_sum", 2),
                                        ("Eltwise_max", 2)])
def test_generic_path_matches_kernel(kind, extra):
    for a, b in zip(_run(kind, False, extra), _run(kind, True, extra)):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6)
