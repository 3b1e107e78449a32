"""``decaf classify``: pycaffe's ``python/classify.py``, classify images from the command line.

    decaf classify INPUT OUTPUT.npy [--model_def deploy.prototxt] [--pretrained_model w.caffemodel]
        [--gpu] [--center_only] [--images_dim 256,256] [--mean_file mean.npy] [--input_scale S]
        [--raw_scale 255] [--channel_swap 2,1,0] [--ext jpg]

INPUT is an image, a directory (every ``*.<ext>`` in it) or a ``.npy`` array of images; the
N x classes predictions are saved to OUTPUT with ``numpy.save``. Defaults name the files of a
Caffe checkout (the reference CaffeNet), found under ``$CAFFE_ROOT`` or the current directory.
A mean file may be ``.npy`` (C x H x W or C) or ``.binaryproto``; a full mean image whose size
differs from the net's input is reduced to its per-channel mean.
"""
import argparse
import glob
import os
import sys
import time

import numpy as np

from ..data.cli import argparse_help

DEFAULT_MODEL = "models/bvlc_reference_caffenet/deploy.prototxt"
DEFAULT_WEIGHTS = "models/bvlc_reference_caffenet/bvlc_reference_caffenet.caffemodel"
DEFAULT_MEAN = "python/caffe/imagenet/ilsvrc_2012_mean.npy"


def caffe_path(rel):
    """A default path inside a Caffe checkout: under $CAFFE_ROOT, else the current directory."""
    return os.path.join(os.environ.get("CAFFE_ROOT", ""), rel)


def require_file(path, flag):
    if not os.path.isfile(path):
        raise SystemExit("ERROR: %s not found; pass --%s" % (path, flag))
    return path


def load_mean(path):
    """A mean array from a .npy (as saved by numpy) or .binaryproto (BlobProto) file."""
    if path.endswith(".binaryproto"):
        from .. import io
        from ..proto import caffe_pb2
        blob = caffe_pb2.BlobProto()
        with open(path, "rb") as f:
            blob.ParseFromString(f.read())
        arr = io.blobproto_to_array(blob)
        return arr[0] if arr.ndim == 4 else arr
    return np.load(path, allow_pickle=False)


def fit_mean(mean, input_shape):
    """The mean as the Transformer accepts it: unchanged when it fits the input (C, or C x H x W
    of the input's size), else its per-channel mean."""
    if mean is None or mean.ndim == 1:
        return mean
    if mean.ndim == 3 and tuple(mean.shape) != tuple(input_shape[1:]):
        print("Mean shape %s differs from the input %s: using the per-channel mean"
              % (mean.shape, tuple(input_shape[1:])))
        return mean.mean(1).mean(1)
    return mean


def set_mode(gpu):
    from .. import backend
    if gpu:
        backend.set_mode_gpu()
        print("GPU mode")
    else:
        backend.set_mode_cpu()
        print("CPU mode")


def add_preprocessing_args(p, mean_dims):
    """The image preprocessing flags classify.py and detect.py share (pycaffe's names)."""
    p.add_argument("--mean_file", default=caffe_path(DEFAULT_MEAN),
                   help="Data set image mean of %s dimensions (numpy array). Set to '' for no "
                        "mean subtraction." % mean_dims)
    p.add_argument("--input_scale", type=float,
                   help="Multiply input features by this scale to finish preprocessing.")
    p.add_argument("--raw_scale", type=float, default=255.0,
                   help="Multiply raw input by this scale before preprocessing.")
    p.add_argument("--channel_swap", default="2,1,0",
                   help="Order to permute input channels. The default converts RGB -> BGR "
                        "since BGR is the Caffe default by way of OpenCV.")


def parse_args(argv):
    p = argparse.ArgumentParser(prog="decaf classify", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input_file", help="Input image, directory, or npy.")
    p.add_argument("output_file", help="Output npy filename.")
    p.add_argument("--model_def", default=caffe_path(DEFAULT_MODEL),
                   help="Model definition file.")
    p.add_argument("--pretrained_model", default=caffe_path(DEFAULT_WEIGHTS),
                   help="Trained model weights file.")
    p.add_argument("--gpu", action="store_true", help="Switch for gpu computation.")
    p.add_argument("--center_only", action="store_true",
                   help="Switch for prediction from center crop alone instead of averaging "
                        "predictions across crops (default).")
    p.add_argument("--images_dim", default="256,256",
                   help="Canonical 'height,width' dimensions of input images.")
    add_preprocessing_args(p, "[Channels x Height x Width]")
    p.add_argument("--ext", default="jpg",
                   help="Image file extension to take as input when a directory is given as "
                        "the input file.")
    return p.parse_args(argparse_help(argv))   # -help as gflags spells it, too


def load_inputs(path, ext):
    from .. import io
    path = os.path.expanduser(path)
    if path.endswith("npy"):
        print("Loading file: %s" % path)
        return np.load(path, allow_pickle=False)
    if os.path.isdir(path):
        print("Loading folder: %s" % path)
        return [io.load_image(f) for f in sorted(glob.glob(path + "/*." + ext))]
    print("Loading file: %s" % path)
    return [io.load_image(path)]


def main(argv=None):
    """Entry point; ``argv`` excludes the program name. Returns the exit code."""
    from ..classifier import Classifier
    args = parse_args(sys.argv[1:] if argv is None else argv)
    image_dims = [int(s) for s in args.images_dim.split(",")]
    mean = load_mean(require_file(args.mean_file, "mean_file")) if args.mean_file else None
    channel_swap = [int(s) for s in args.channel_swap.split(",")] if args.channel_swap else None
    set_mode(args.gpu)
    require_file(args.model_def, "model_def")
    require_file(args.pretrained_model, "pretrained_model")
    classifier = Classifier(args.model_def, args.pretrained_model, image_dims=image_dims,
                            mean=None, input_scale=args.input_scale, raw_scale=args.raw_scale,
                            channel_swap=channel_swap)
    in_ = classifier.inputs[0]
    mean = fit_mean(mean, classifier.blobs[in_].data.shape)
    if mean is not None:
        classifier.transformer.set_mean(in_, mean)
    inputs = load_inputs(args.input_file, args.ext)
    print("Classifying %d inputs." % len(inputs))
    start = time.time()
    predictions = classifier.predict(inputs, not args.center_only)
    print("Done in %.2f s." % (time.time() - start))
    print("Saving results into %s" % args.output_file)
    np.save(args.output_file, predictions)
    return 0


if __name__ == "__main__":
    sys.exit(main())
