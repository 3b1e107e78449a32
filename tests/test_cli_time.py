"""``decaf time`` on a deploy net calls Backward on every layer, as BVLC's ``caffe time`` does
(with the net's bottom_need_backward), so its backward figures are comparable to Caffe's."""
import io

from decaf import backend, glog as log
from decaf.layer import Layer
from decaf.tools import cli

DEPLOY = """name: "deploy"
layer { name: "data" type: "Input" top: "data"
        input_param { shape { dim: 2 dim: 3 dim: 8 dim: 8 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 4 kernel_size: 3
                            weight_filler { type: "gaussian" std: 1 } } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "pool" type: "Pooling" bottom: "conv" top: "pool"
        pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "ip" type: "InnerProduct" bottom: "pool" top: "ip"
        inner_product_param { num_output: 5 weight_filler { type: "gaussian" std: 1 } } }
layer { name: "argmax" type: "ArgMax" bottom: "ip" top: "label" }
layer { name: "prob" type: "Softmax" bottom: "ip" top: "prob" }
"""


def test_time_runs_backward_on_every_layer(tmp_path, monkeypatch):
    (tmp_path / "deploy.prototxt").write_text(DEPLOY)
    monkeypatch.chdir(tmp_path)
    calls = []
    original = Layer.Backward

    def spy(self, top, propagate_down, bottom):
        calls.append((self.name, tuple(propagate_down)))
        if self.name == "ip":   # the weight gradient of a deploy net is computed, as in Caffe
            spy.ip_param_down = list(self.param_propagate_down)
        return original(self, top, propagate_down, bottom)

    monkeypatch.setattr(Layer, "Backward", spy)
    buf = io.StringIO()
    log.set_stream(buf)
    try:
        rc = cli.main(["time", "-model", "deploy.prototxt", "-iterations", "3"])
    finally:
        log.set_stream(None)
        backend.set_mode_cpu()
    assert rc == 0, buf.getvalue()
    names = ["data", "conv", "relu", "pool", "ip", "argmax", "prob"]
    for name in names:
        assert sum(1 for n, _ in calls if n == name) == 3, name
    assert all(not any(down) for _, down in calls)   # no bottom needs a gradient in a deploy net
    assert spy.ip_param_down == [True, True]
    text = buf.getvalue()
    for name in names:
        assert "%10s\tbackward: " % name in text
