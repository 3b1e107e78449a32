"""Caffe's protobuf schema (caffe_pb2, generated from caffe.proto) and its file I/O.

``decaf.proto.io`` reads and writes prototxt and binary files; ``decaf.proto.upgrade`` brings
old (V0/V1, deprecated-field) nets and solvers to the current format.
"""
from . import caffe_pb2

__all__ = ["caffe_pb2"]
