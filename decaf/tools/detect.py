"""``decaf detect``: pycaffe's ``python/detect.py``, windowed detection from the command line.

    decaf detect INPUT.csv|INPUT.txt OUTPUT.csv|OUTPUT.h5 [--crop_mode list|selective_search]
        [--model_def ...] [--pretrained_model ...] [--gpu] [--mean_file ...] [--input_scale S]
        [--raw_scale 255] [--channel_swap 2,1,0] [--context_pad 16]

``--crop_mode list`` reads a CSV with a header naming ``filename, ymin, xmin, ymax, xmax``
(any order) and classifies every window; ``selective_search`` reads a list of image files
(.txt) and needs the selective_search_ijcv_with_python module. The output CSV has the
columns ``filename, ymin, xmin, ymax, xmax, class0, class1, ...``; an ``.h5`` output (written
with h5py, not pandas) holds the datasets ``filename``, ``window`` and ``prediction``.
"""
import argparse
import csv
import sys
import time
from collections import OrderedDict

import numpy as np

from ..data.cli import argparse_help
from .classify import (DEFAULT_MODEL, DEFAULT_WEIGHTS, add_preprocessing_args, caffe_path,
                       load_mean, require_file, set_mode)

CROP_MODES = ["list", "selective_search"]
COORD_COLS = ["ymin", "xmin", "ymax", "xmax"]


def parse_args(argv):
    p = argparse.ArgumentParser(prog="decaf detect", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input_file", help="Input txt/csv filename. If .txt, must be list of "
                   "filenames. If .csv, must be comma-separated file with header "
                   "'filename, xmin, ymin, xmax, ymax'")
    p.add_argument("output_file", help="Output h5/csv filename. Format depends on extension.")
    p.add_argument("--model_def", default=caffe_path(DEFAULT_MODEL),
                   help="Model definition file.")
    p.add_argument("--pretrained_model", default=caffe_path(DEFAULT_WEIGHTS),
                   help="Trained model weights file.")
    p.add_argument("--crop_mode", default="selective_search", choices=CROP_MODES,
                   help="How to generate windows for detection.")
    p.add_argument("--gpu", action="store_true", help="Switch for gpu computation.")
    add_preprocessing_args(p, "H x W x K")
    p.add_argument("--context_pad", type=int, default=16,
                   help="Amount of surrounding context to collect in input window.")
    return p.parse_args(argparse_help(argv))   # -help as gflags spells it, too


def read_windows_csv(path):
    """[(filename, K x 4 int array of ymin, xmin, ymax, xmax)], files in order of appearance."""
    windows = OrderedDict()
    with open(path, newline="") as f:
        reader = csv.DictReader(f, skipinitialspace=True)
        fields = [c.strip() for c in (reader.fieldnames or [])]
        missing = [c for c in ["filename"] + COORD_COLS if c not in fields]
        if missing:
            raise SystemExit("ERROR: %s: the header lacks the column(s) %s" % (path, missing))
        for row in reader:
            row = {k.strip(): v for k, v in row.items()}
            box = [int(round(float(row[c]))) for c in COORD_COLS]
            windows.setdefault(row["filename"].strip(), []).append(box)
    return [(f, np.array(b, dtype=int)) for f, b in windows.items()]


def save_detections(path, detections):
    predictions = np.array([d["prediction"] for d in detections]).reshape(len(detections), -1)
    windows = np.array([d["window"] for d in detections]).reshape(len(detections), 4)
    names = [d["filename"] for d in detections]
    if path.lower().endswith("csv"):
        class_cols = ["class{}".format(x) for x in range(predictions.shape[1])]
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["filename"] + COORD_COLS + class_cols)
            for name, box, pred in zip(names, windows, predictions):
                w.writerow([name] + [int(v) for v in box] + [repr(float(v)) for v in pred])
        return
    import h5py
    with h5py.File(path, "w") as f:
        f.create_dataset("filename", data=np.array(names, dtype=h5py.string_dtype()))
        f.create_dataset("window", data=windows)
        f.create_dataset("prediction", data=predictions)


def main(argv=None):
    """Entry point; ``argv`` excludes the program name. Returns the exit code."""
    from ..detector import Detector
    args = parse_args(sys.argv[1:] if argv is None else argv)
    mean = None
    if args.mean_file:
        mean = load_mean(require_file(args.mean_file, "mean_file"))
        if mean.ndim == 3 and mean.shape[1:] != (1, 1):
            mean = mean.mean(1).mean(1)
        mean = mean.reshape(-1)
    channel_swap = [int(s) for s in args.channel_swap.split(",")] if args.channel_swap else None
    set_mode(args.gpu)
    detector = Detector(require_file(args.model_def, "model_def"),
                        require_file(args.pretrained_model, "pretrained_model"), mean=mean,
                        input_scale=args.input_scale, raw_scale=args.raw_scale,
                        channel_swap=channel_swap, context_pad=args.context_pad)
    t = time.time()
    print("Loading input...")
    lower = args.input_file.lower()
    if args.crop_mode == "list":
        if not lower.endswith("csv"):
            raise SystemExit("ERROR: --crop_mode list needs a .csv input with windows")
        detections = detector.detect_windows(read_windows_csv(args.input_file))
    elif lower.endswith("txt"):
        with open(args.input_file) as f:
            inputs = [line.strip() for line in f if line.strip()]
        detections = detector.detect_selective_search(inputs)
    elif lower.endswith("csv"):
        detections = detector.detect_selective_search(
            [f for f, _ in read_windows_csv(args.input_file)])
    else:
        raise SystemExit("ERROR: Unknown input file type: not in txt or csv.")
    print("Processed {} windows in {:.3f} s.".format(len(detections), time.time() - t))
    t = time.time()
    save_detections(args.output_file, detections)
    print("Saved to {} in {:.3f} s.".format(args.output_file, time.time() - t))
    return 0


if __name__ == "__main__":
    sys.exit(main())
