"""caffe.layer_type_list(): every registered type, sorted."""
import caffe


def test_standard_types():
    types = caffe.layer_type_list()
    for name in ("Data", "Convolution", "InnerProduct", "Pooling", "ReLU", "SoftmaxWithLoss",
                 "Python", "Input", "MemoryData", "Deconvolution", "WindowData", "ImageData",
                 "HDF5Data", "HDF5Output", "DummyData"):
        assert name in types
    assert types == sorted(types) and len(set(types)) == len(types)
