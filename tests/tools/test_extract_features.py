"""``decaf extract_features`` (Caffe's tools/extract_features.cpp): Datum records with the
blob's legacy channels/height/width and float_data, keys "%010d", as Caffe writes them."""
import io
import re
import struct

import numpy as np
import pytest

from decaf import glog as log
from decaf.data.db import open_db
from decaf.net import Net
from decaf.proto import caffe_pb2
from decaf.tools import cli, extract_features

N_RECORDS, BATCH = 6, 4

NET = """
name: "FeatNet"
layer { name: "data" type: "Data" top: "data" top: "label"
        data_param { source: "%s" backend: LMDB batch_size: 4 } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
        inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 1 }
                              bias_filler { type: "gaussian" std: 1 } } }
layer { name: "relu" type: "ReLU" bottom: "ip" top: "relu" }
"""


def varint(n):
    out = b""
    while True:
        byte, n = n & 0x7F, n >> 7
        out += bytes([byte | (0x80 if n else 0)])
        if not n:
            return out


def caffe_datum_bytes(channels, height, width, values):
    """The wire bytes of Caffe's Datum: fields 1-3 (varint), float_data (6) unpacked."""
    head = b"\x08" + varint(channels) + b"\x10" + varint(height) + b"\x18" + varint(width)
    return head + b"".join(b"\x35" + struct.pack("<f", v) for v in values)


@pytest.fixture
def setup(tmp_path):
    """An LMDB of 6 known 1x2x2 images, a net reading it and a weights file."""
    rng = np.random.RandomState(5)
    images = rng.randint(0, 256, size=(N_RECORDS, 1, 2, 2)).astype(np.uint8)
    src = str(tmp_path / "images_lmdb")
    with open_db("lmdb", src, "new") as db:
        with db.writer() as w:
            for i, img in enumerate(images):
                d = caffe_pb2.Datum(channels=1, height=2, width=2, data=img.tobytes(), label=i)
                w.put(b"%08d" % i, d.SerializeToString())
    model = tmp_path / "feat.prototxt"
    model.write_text(NET % src)
    net = Net(str(model), phase=caffe_pb2.TEST)
    weights = str(tmp_path / "feat.caffemodel")
    net.save(weights)
    W = net.params["ip"][0].data.astype(np.float64).copy()
    b = net.params["ip"][1].data.astype(np.float64).copy()
    return tmp_path, str(model), weights, images, W, b


def read_db(backend, path):
    with open_db(backend, path) as db:
        return list(db.cursor())


@pytest.mark.parametrize("db_type", ["lmdb", "leveldb"])
def test_features_are_caffes_datums(setup, db_type):
    tmp, model, weights, images, W, b = setup
    out_ip, out_relu = str(tmp / ("ip_" + db_type)), str(tmp / ("relu_" + db_type))
    buf = io.StringIO()
    log.set_stream(buf)
    try:
        rc = cli.main(["extract_features", weights, model, "ip,relu",
                       "%s,%s" % (out_ip, out_relu), "2", db_type, "CPU"])
    finally:
        log.set_stream(None)
    assert rc == 0
    # 2 batches of 4 from 6 records: the Data layer wraps around to records 0 and 1
    order = [0, 1, 2, 3, 4, 5, 0, 1]
    x = images[order].reshape(8, -1).astype(np.float64)
    ip = x @ W.T + b
    for path, expect in ((out_ip, ip), (out_relu, np.maximum(ip, 0))):
        recs = read_db(db_type, path)
        assert [k for k, _ in recs] == [b"%010d" % i for i in range(8)]
        for (_, value), row in zip(recs, expect):
            d = caffe_pb2.Datum.FromString(value)
            # 2-D blob (4 x 3): legacy channels 3, height 1, width 1
            assert (d.channels, d.height, d.width) == (3, 1, 1)
            assert not d.HasField("label") and not d.HasField("data")
            np.testing.assert_allclose(d.float_data, row, rtol=1e-5, atol=1e-5)
            assert value == caffe_datum_bytes(3, 1, 1, d.float_data)
    text = buf.getvalue()
    assert re.search(r"^E\d{4} .* extract_features\.cpp:62\] Using CPU$", text, re.M)
    assert "Extacting Features" in text
    assert "Extracted features of 8 query images for feature blob relu" in text
    # the last line of the tool's own (the Data layer's prefetch thread may log after it)
    own = [l for l in text.splitlines() if "extract_features.cpp" in l]
    assert own[-1].endswith("Successfully extracted the features!")


def test_4d_blob_keeps_its_legacy_shape(setup):
    """A 4-D feature blob: channels/height/width are its own (Caffe's legacy accessors)."""
    tmp, model, weights, images, _, _ = setup
    out = str(tmp / "data_feat")
    assert extract_features.main([weights, model, "data", out, "1", "lmdb"]) == 0
    recs = read_db("lmdb", out)
    assert len(recs) == BATCH
    for i, (_, value) in enumerate(recs):
        d = caffe_pb2.Datum.FromString(value)
        assert (d.channels, d.height, d.width) == (1, 2, 2)
        assert list(d.float_data) == images[i].ravel().astype(float).tolist()


def test_bad_arguments(setup, capsys):
    tmp, model, weights, _, _, _ = setup
    buf = io.StringIO()
    log.set_stream(buf)
    try:
        assert extract_features.main([weights, model, "ip"]) == 1          # too few
        assert "Usage: extract_features" in buf.getvalue()
        assert extract_features.main([weights, model, "nosuch", str(tmp / "x"), "1",
                                      "lmdb"]) == 1
        assert re.search(r"^F\d{4} .* extract_features\.py:\d+\] Check failed: .*Unknown feature "
                         r"blob name nosuch in the network", buf.getvalue(), re.M)
        assert extract_features.main([weights, model, "ip,relu", str(tmp / "y"), "1",
                                      "lmdb"]) == 1
    finally:
        log.set_stream(None)
    assert "the number of blob names and dataset names must be equal" in capsys.readouterr().err


def test_help(capsys):
    assert extract_features.main(["-help"]) == 0
    assert "Usage: extract_features  pretrained_net_param" in capsys.readouterr().out
