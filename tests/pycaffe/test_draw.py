"""caffe.draw and `decaf draw_net`: node labels, colours, edges, phase filter, output files."""
import shutil

import pytest

pydot = pytest.importorskip("pydot")

import caffe  # noqa: E402
import caffe.draw  # noqa: E402
from caffe.proto import caffe_pb2  # noqa: E402
from decaf.proto.io import parse_text  # noqa: E402

HAVE_DOT = shutil.which("dot") is not None

NET = """name: "tiny"
layer { name: "data" type: "Data" top: "data" top: "label" include { phase: TRAIN }
  data_param { source: "x" batch_size: 64 } }
layer { name: "data" type: "Input" top: "data" top: "label" include { phase: TEST }
  input_param { shape { dim: 1 dim: 1 dim: 8 dim: 8 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  param { lr_mult: 1 } param { lr_mult: 2 }
  convolution_param { num_output: 20 kernel_size: 5 stride: 1 pad: 2 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
  pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "ip1" type: "InnerProduct" bottom: "pool1" top: "ip1"
  inner_product_param { num_output: 10 } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip1" bottom: "label" top: "loss"
  exclude { phase: TEST } }
"""


def net_param():
    return parse_text(NET, caffe_pb2.NetParameter())


def layer(name, index=0):
    return [l for l in net_param().layer if l.name == name][index]


def test_layer_labels():
    assert caffe.draw.get_layer_label(layer("conv1"), "LR") == \
        '"conv1\\n(Convolution)\\nkernel size: 5\\nstride: 1\\npad: 2"'
    assert caffe.draw.get_layer_label(layer("pool1"), "TB") == \
        '"pool1 (Pooling MAX) kernel size: 2 stride: 2 pad: 0"'
    assert caffe.draw.get_layer_label(layer("ip1"), "LR", display_lrm=True) == \
        '"ip1\\n(InnerProduct)\\nlr mult: 1.0, 1.0"'
    assert caffe.draw.get_layer_label(layer("conv1"), "BT", display_lrm=True).endswith(
        'lr mult: 1.0, 2.0"')


def test_edge_labels_colors_lr_mult():
    assert caffe.draw.get_edge_label(layer("data")) == "Batch 64"
    assert caffe.draw.get_edge_label(layer("conv1")) == "20"
    assert caffe.draw.get_edge_label(layer("ip1")) == "10"
    assert caffe.draw.get_edge_label(layer("relu1")) == '""'
    assert caffe.draw.choose_color_by_layertype("Convolution") == "#FF5050"
    assert caffe.draw.choose_color_by_layertype("Pooling") == "#FF9900"
    assert caffe.draw.choose_color_by_layertype("InnerProduct") == "#CC33FF"
    assert caffe.draw.choose_color_by_layertype("ReLU") == "#6495ED"
    assert caffe.draw.get_layer_lr_mult(layer("conv1")) == (1.0, 2.0)
    assert caffe.draw.get_layer_lr_mult(layer("ip1")) == (1.0, 1.0)
    with pytest.raises(ValueError):
        caffe.draw.get_layer_lr_mult(layer("relu1"))
    assert caffe.draw.get_pooling_types_dict() == {0: "MAX", 1: "AVE", 2: "STOCHASTIC"}


def graph_nodes(graph):
    return {n.get_name().strip('"'): n for n in graph.get_nodes()}


def test_graph_structure_and_phase_filter():
    g = caffe.draw.get_pydot_graph(net_param(), "LR")
    names = graph_nodes(g)
    assert "conv1" in names and "loss" in names
    relu = [n for k, n in names.items() if k.startswith("relu1")][0]
    assert relu.get("fillcolor") == "#90EE90"            # in-place neuron layer
    assert names["conv1"].get("shape") == "octagon"      # a blob node
    edges = [(e.get_source().strip('"'), e.get_destination().strip('"'), e.get("label"))
             for e in g.get_edges()]
    assert any(s.startswith("conv1\\n(Convolution)") and d == "conv1" and lab == "20"
               for s, d, lab in edges)
    test_only = graph_nodes(caffe.draw.get_pydot_graph(net_param(), "LR",
                                                       phase=caffe_pb2.TEST))
    assert "loss" not in test_only
    assert any("(Input)" in k for k in test_only) and not any("(Data)" in k for k in test_only)
    bad = net_param()
    bad.layer[2].include.add(phase=caffe_pb2.TRAIN)
    bad.layer[2].exclude.add(phase=caffe_pb2.TEST)
    with pytest.raises(ValueError, match="both include and exclude"):
        caffe.draw.get_pydot_graph(bad, "LR", phase=caffe_pb2.TRAIN)


def test_draw_raw_without_graphviz(tmp_path):
    out = tmp_path / "net.raw"
    caffe.draw.draw_net_to_file(net_param(), str(out), "TB")
    text = out.read_text()
    assert text.startswith("digraph tiny") and "rankdir=TB" in text


@pytest.mark.skipif(not HAVE_DOT, reason="Graphviz 'dot' is not installed")
def test_draw_png(tmp_path):
    png = caffe.draw.draw_net(net_param(), "LR")
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    out = tmp_path / "net.svg"
    caffe.draw.draw_net_to_file(net_param(), str(out), phase=caffe_pb2.TRAIN, display_lrm=True)
    assert "<svg" in out.read_text()


def test_draw_net_tool(tmp_path, capsys):
    from decaf.tools import draw_net
    src = tmp_path / "net.prototxt"
    src.write_text(NET)
    out = tmp_path / "net.raw"
    assert draw_net.main([str(src), str(out), "--rankdir", "BT", "--phase", "TEST"]) == 0
    assert "Drawing net to" in capsys.readouterr().out
    text = out.read_text()
    assert "rankdir=BT" in text and "SoftmaxWithLoss" not in text
    assert draw_net.main([str(src), str(out), "--phase", "VAL"]) == 1
    assert "Unknown phase: VAL" in capsys.readouterr().err
