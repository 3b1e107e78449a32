"""Classifier: pycaffe's ``caffe.Classifier``, a Net that classifies images end to end.

    clf = caffe.Classifier('deploy.prototxt', 'weights.caffemodel', image_dims=(256, 256),
                           mean=np.array([104, 117, 123]), raw_scale=255, channel_swap=(2, 1, 0))
    probs = clf.predict([caffe.io.load_image('cat.jpg')])          # N x classes

``predict`` resizes the images to ``image_dims``, takes the 10 oversampled crops (corners,
centre, mirrored) of the net's input size and averages their predictions, or with
``oversample=False`` only the centre crop.
"""
import numpy as np

from . import io
from .net import Net
from .proto import caffe_pb2


class Classifier(Net):
    """A TEST-phase Net with a Transformer configured for its first input."""

    def __init__(self, model_file, pretrained_file, image_dims=None, mean=None,
                 input_scale=None, raw_scale=None, channel_swap=None):
        Net.__init__(self, model_file, pretrained_file, caffe_pb2.TEST)
        in_ = self.inputs[0]
        self.transformer = io.image_transformer(self, mean, input_scale, raw_scale, channel_swap)
        self.crop_dims = np.array(self.blobs[in_].data.shape[2:])
        if image_dims is None or not len(image_dims):
            image_dims = self.crop_dims
        self.image_dims = image_dims

    def predict(self, inputs, oversample=True):
        """Class scores for ``inputs`` (iterable of H x W x K images): N x classes.

        oversample: average the 10 crops' predictions (True) or use the centre crop only."""
        inputs = list(inputs)
        input_ = np.zeros((len(inputs), self.image_dims[0], self.image_dims[1],
                           inputs[0].shape[2]), dtype=np.float32)
        for ix, in_ in enumerate(inputs):
            input_[ix] = io.resize_image(in_, self.image_dims)
        if oversample:
            input_ = io.oversample(input_, self.crop_dims)
        else:
            center = np.array(self.image_dims) / 2.0
            crop = np.tile(center, (1, 2))[0] + np.concatenate([-self.crop_dims / 2.0,
                                                                self.crop_dims / 2.0])
            crop = crop.astype(int)
            input_ = input_[:, crop[0]:crop[2], crop[1]:crop[3], :]
        caffe_in = np.zeros(np.array(input_.shape)[[0, 3, 1, 2]], dtype=np.float32)
        for ix, in_ in enumerate(input_):
            caffe_in[ix] = self.transformer.preprocess(self.inputs[0], in_)
        out = self.forward_all(**{self.inputs[0]: caffe_in})
        predictions = out[self.outputs[0]]
        if oversample:
            predictions = predictions.reshape((len(predictions) // 10, 10, -1))
            predictions = predictions.mean(1)
        return predictions
