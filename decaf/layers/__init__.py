"""The built-in layers, one family per module. Importing this package registers them all."""
import importlib

FAMILIES = ("data", "window_data", "conv", "im2col", "pooling", "lrn", "inner_product", "neuron",
            "common", "eltwise", "shape", "loss", "softmax", "norm", "recurrent", "python_layer", "center_loss", "yolo",
            "ssd")

for _name in FAMILIES:
    try:
        importlib.import_module("." + _name, __name__)
    except ModuleNotFoundError as _e:  # a family not written yet
        if _e.name != __name__ + "." + _name:
            raise
