"""Blob: shape, legacy accessors, memory reuse, update, BlobProto round trips."""
import numpy as np
import pytest

from decaf.blob import Blob, blob_to_array, proto_shape
from decaf.errors import ShapeMismatchError
from decaf.proto import caffe_pb2


def test_new_blob_is_zero_filled_and_float32():
    b = Blob((2, 3, 4))
    assert b.shape == (2, 3, 4) and b.count == 24 and b.num_axes == 3
    assert b.data.dtype == np.float32 and not b.data.any() and not b.diff.any()


def test_legacy_accessors_pad_with_ones():
    b = Blob((5, 7))
    assert (b.num, b.channels, b.height, b.width) == (5, 7, 1, 1)
    with pytest.raises(ShapeMismatchError):
        Blob((1, 2, 3, 4, 5)).num


def test_update_is_data_minus_diff():
    b = Blob((3,))
    b.data[...] = [1, 2, 3]
    b.diff[...] = [0.5, -1, 3]
    b.update()
    np.testing.assert_array_equal(b.data, [0.5, 3, 0])


def test_reshape_keeps_memory_when_it_fits():
    b = Blob((4, 5))
    b.data[...] = np.arange(20).reshape(4, 5)
    buf = b.data
    b.reshape(2, 5)                       # smaller: same memory, old values stay
    assert np.shares_memory(b.data, buf)
    np.testing.assert_array_equal(b.data, np.arange(10).reshape(2, 5))
    b.reshape((4, 5))
    np.testing.assert_array_equal(b.data, np.arange(20).reshape(4, 5))
    b.reshape([30])                       # bigger: fresh zeroed memory
    assert b.count == 30 and not b.data.any()


def test_count_range_and_canonical_axis():
    b = Blob((2, 3, 4, 5))
    assert b.count_range(1) == 60 and b.count_range(1, 3) == 12
    assert b.canonical_axis_index(-1) == 3
    with pytest.raises(ShapeMismatchError):
        b.canonical_axis_index(4)


def test_share_data_and_diff():
    a, b = Blob((2, 3)), Blob((6,))
    b.share_data(a)
    b.share_diff(a)
    a.data[...] = 7
    a.diff[...] = 2
    assert np.all(b.data == 7) and np.all(b.diff == 2)
    with pytest.raises(ShapeMismatchError):
        Blob((5,)).share_data(a)


def test_proto_round_trip_with_diff():
    b = Blob((2, 3))
    b.data[...] = np.arange(6).reshape(2, 3)
    b.diff[...] = -1
    p = b.to_proto(write_diff=True)
    assert list(p.shape.dim) == [2, 3] and len(p.diff) == 6
    c = Blob()
    c.from_proto(p)
    np.testing.assert_array_equal(c.data, b.data)
    np.testing.assert_array_equal(c.diff, b.diff)


def test_from_proto_legacy_fields_and_double_data():
    p = caffe_pb2.BlobProto(num=1, channels=2, height=1, width=3)
    p.double_data.extend([1, 2, 3, 4, 5, 6])
    assert proto_shape(p) == (1, 2, 1, 3)
    b = Blob()
    b.from_proto(p)
    assert b.shape == (1, 2, 1, 3) and b.data[0, 1, 0, 2] == 6
    assert blob_to_array(p).dtype == np.float64


def test_from_proto_without_reshape_accepts_legacy_equivalent_shape():
    # V1 weights stored as 1 x 1 x F x K fit an F x K blob (Caffe's ShapeEquals)
    p = caffe_pb2.BlobProto(num=1, channels=1, height=2, width=3)
    p.data.extend(range(6))
    b = Blob((2, 3))
    b.from_proto(p, reshape=False)
    np.testing.assert_array_equal(b.data, np.arange(6).reshape(2, 3))
    with pytest.raises(ShapeMismatchError, match="different sizes"):
        Blob((3, 2)).from_proto(p, reshape=False)


def test_from_proto_with_wrong_value_count_is_clear():
    p = caffe_pb2.BlobProto()
    p.shape.dim.extend([2, 2])
    p.data.extend([1, 2, 3])
    with pytest.raises(ShapeMismatchError, match="3 data values for a blob of count 4"):
        Blob().from_proto(p)


def test_float64_blob_writes_double_data():
    b = Blob((2,), dtype=np.float64)
    b.data[...] = [0.1, 0.2]
    p = b.to_proto()
    assert list(p.double_data) == [0.1, 0.2] and len(p.data) == 0
