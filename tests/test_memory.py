"""decaf.memory: a net's blobs (data and diff) and buffers are added up against the available
memory before they are allocated; too much raises OutOfMemoryError naming the largest layers."""
import numpy as np
import pytest

import decaf
from decaf import memory
from decaf.blob import Blob, blob_to_array
from decaf.errors import BlobProtoError, DecafError, OutOfMemoryError
from decaf.proto import caffe_pb2

NET = """
name: "n"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 4 dim: 3 dim: 8 dim: 8 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 16 kernel_size: 3 } }
layer { name: "ip" type: "InnerProduct" bottom: "conv" top: "ip"
        inner_product_param { num_output: %d } }
"""


@pytest.mark.parametrize("text, n", [("2G", 2 << 30), ("512M", 512 << 20), ("1.5GiB", 3 << 29),
                                     ("300k", 300 << 10), ("1000000", 1000000)])
def test_parse_size(text, n):
    assert memory.parse_size(text) == n


def test_bad_limit_is_a_clear_error(monkeypatch):
    monkeypatch.setenv(memory.ENV, "lots")
    with pytest.raises(DecafError, match="DECAF_MAX_MEMORY='lots' is not a size"):
        memory.available()


def test_absurd_layer_is_refused_before_allocation():
    with pytest.raises(OutOfMemoryError) as info:
        decaf.Net(NET % 999999999, decaf.TEST)
    msg = str(info.value)
    assert "net 'n' needs more memory than is available" in msg
    assert "Largest layers: layer 'ip'" in msg
    assert "DECAF_MAX_MEMORY" in msg


def test_limit_counts_every_blob_data_and_diff(monkeypatch):
    # blobs: data 4*3*8*8, conv top 4*16*6*6, conv params 16*27+16, ip top 4*10,
    # ip params 10*576+10; each with its diff, float32
    counts = [768, 2304, 432 + 16, 40, 5760 + 10]
    blob_bytes = sum(counts) * 2 * 4
    fine = decaf.Net(NET % 10, decaf.TEST)     # the column buffer comes on top of the blobs
    col = memory.layer_scratch_bytes(fine.layers[1])
    assert col > 0
    monkeypatch.setenv(memory.ENV, str(blob_bytes + col))
    decaf.Net(NET % 10, decaf.TEST)
    monkeypatch.setenv(memory.ENV, str(blob_bytes + col - 1))
    with pytest.raises(OutOfMemoryError, match=r"Largest layers: layer 'conv' 45\.7 KiB, "
                                               r"layer 'ip' 45\.4 KiB"):
        decaf.Net(NET % 10, decaf.TEST)


def test_single_allocation_outside_a_net(monkeypatch):
    monkeypatch.setenv(memory.ENV, "64M")
    with pytest.raises(OutOfMemoryError, match=r"a blob of shape \(100000, 1000\)"):
        Blob((100000, 1000))
    Blob((1000, 1000))


def test_blobproto_shape_is_checked_before_reshape():
    proto = caffe_pb2.BlobProto()
    proto.shape.dim.extend([10 ** 6, 10 ** 6])
    proto.data.extend([1, 2, 3, 4])
    with pytest.raises(BlobProtoError, match="holds 4 data values for a blob of count 1000000000000"):
        blob_to_array(proto)
    with pytest.raises(BlobProtoError):
        Blob().from_proto(proto)
    proto.ClearField("shape")
    proto.num, proto.channels, proto.height, proto.width = 1, -3, 1, 1
    with pytest.raises(BlobProtoError, match="negative"):
        blob_to_array(proto)


def test_limit_sources_are_consulted(monkeypatch):
    monkeypatch.delenv(memory.ENV, raising=False)
    limit, source = memory.available()
    assert 0 < limit and source
    monkeypatch.setattr(memory, "_meminfo_available", lambda: 12345)
    assert memory.available() == (12345, "MemAvailable in /proc/meminfo")


POOL = """
name: "p"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 8 dim: 16 dim: 32 dim: 32 } } }
layer { name: "pool" type: "Pooling" bottom: "data" top: "pool"
        pooling_param { pool: MAX kernel_size: 1 stride: 1 } }
"""


def test_pooling_mask_counts_and_names_the_pooling_layer(monkeypatch):
    count = 8 * 16 * 32 * 32
    blob_bytes = 2 * count * 2 * 4                 # data and pool top, data and diff, float32
    mask = decaf.Net(POOL, decaf.TEST).layers[1].mask.nbytes
    assert mask == count * decaf.Net(POOL, decaf.TEST).layers[1].mask.itemsize
    monkeypatch.setenv(memory.ENV, str(blob_bytes + mask))
    decaf.Net(POOL, decaf.TEST)                    # exactly enough
    monkeypatch.setenv(memory.ENV, str(blob_bytes + mask - 1))
    with pytest.raises(OutOfMemoryError) as info:
        decaf.Net(POOL, decaf.TEST)
    msg = str(info.value)
    assert "the argmax mask of pooling layer 'pool', shape (8, 16, 32, 32)" in msg
    assert "Largest layers: layer 'pool'" in msg


CONVS = """
name: "c"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 dim: 64 dim: 64 } } }
layer { name: "small" type: "Convolution" bottom: "data" top: "small"
        convolution_param { num_output: 4 kernel_size: 3 pad: 1 } }
layer { name: "wide" type: "Convolution" bottom: "small" top: "wide"
        convolution_param { num_output: 64 kernel_size: 5 pad: 2 } }
"""


def test_conv_scratch_is_the_largest_of_each_shared_buffer(monkeypatch):
    net = decaf.Net(CONVS, decaf.TEST)
    small, wide = (memory.scratch_buffers(net.layers[i]) for i in (1, 2))
    # the column buffer of a chunk of images: 2 images of (C*k*k) x (64*64), then the GEMM side
    assert small == {"col": 2 * 27 * 4096 * 4, "gemm": 2 * 4 * 4096 * 4}
    assert wide == {"col": 2 * 100 * 4096 * 4, "gemm": 2 * 64 * 4096 * 4}
    blobs = sum(b.count for b in net.blobs.values()) + sum(
        p.count for layer in net.layers for p in layer.blobs)
    shared = max(small["col"], wide["col"]) + max(small["gemm"], wide["gemm"])
    monkeypatch.setenv(memory.ENV, str(blobs * 2 * 4 + shared))
    decaf.Net(CONVS, decaf.TEST)
    monkeypatch.setenv(memory.ENV, str(blobs * 2 * 4 + shared - 1))
    with pytest.raises(OutOfMemoryError, match=r"its GEMM buffer \(convolution scratch\).*"
                                               r"Largest layers: layer 'wide'"):
        decaf.Net(CONVS, decaf.TEST)


def test_conv_scratch_estimate_covers_the_workspace_a_pass_takes():
    # the shared workspace after a forward and backward is no larger than what was reserved
    from decaf.kernels import rowconv
    rowconv._WORKSPACE.bufs = {}
    net = decaf.Net(CONVS.replace('name: "c"', 'name: "c" force_backward: true'), decaf.TRAIN)
    net.blobs["data"].data[...] = np.random.RandomState(0).rand(2, 3, 64, 64)
    net.forward()
    net.backward()
    taken = sum(b.nbytes for b in rowconv._WORKSPACE.bufs.values())
    reserved = sum(max(memory.scratch_buffers(layer).get(k, 0) for layer in net.layers)
                   for k in ("col", "gemm"))
    assert 0 < taken <= reserved
