"""``decaf extract_features``: Caffe's tools/extract_features.cpp.

    extract_features pretrained_net_param feature_extraction_proto_file \
        extract_feature_blob_name1[,name2,...] save_feature_dataset_name1[,name2,...] \
        num_mini_batches db_type [CPU/GPU] [DEVICE_ID=0]

Runs the TEST net ``num_mini_batches`` times and stores, for every item n of each named blob,
one Datum as Caffe writes it: ``channels``/``height``/``width`` = the blob's legacy
channels()/height()/width() (1 for missing axes), ``float_data`` = the item's
count/num values, no label; keys ``"%010d"`` (0, 1, ... per dataset); a commit every 1000
records. Each dataset is a new LMDB or LevelDB (``db_type``). The log lines are Caffe's,
including its ERROR-level progress lines (and its "Extacting" spelling).
"""
import sys

import numpy as np

from .. import backend
from .. import glog as log
from ..data.cli import UsageError, run_tool
from ..data.db import backend_name, open_db
from ..errors import DecafError

W = "extract_features.cpp"

USAGE = ("This program takes in a trained network and an input data layer, and then extract "
         "features of the input data produced by the net.\n"
         "Usage: extract_features  pretrained_net_param  feature_extraction_proto_file  "
         "extract_feature_blob_name1[,name2,...]  save_feature_dataset_name1[,name2,...]  "
         "num_mini_batches  db_type  [CPU/GPU] [DEVICE_ID=0]\n"
         "Note: you can extract multiple features in one pass by specifying multiple feature "
         "blob names and dataset names separated by ','. The names cannot contain white space "
         "characters and the number of blobs and datasets must be equal.")


def feature_datums(blob):
    """Serialized Datums (one per item of the blob's first axis), as extract_features fills
    them: legacy channels/height/width and the item's values in float_data."""
    from ..proto import caffe_pb2
    num = blob.num
    data = backend.to_numpy(blob.data).reshape(num, -1).astype(np.float32)
    datum = caffe_pb2.Datum()
    datum.height, datum.width, datum.channels = blob.height, blob.width, blob.channels
    for n in range(num):
        datum.ClearField("float_data")
        datum.float_data.extend(data[n].tolist())
        yield datum.SerializeToString()


def _use_device(rest):
    """Caffe's optional [CPU/GPU] [DEVICE_ID=0] arguments (anything but "GPU" means CPU)."""
    if rest and rest[0] == "GPU":
        log.error("Using GPU", W + ":52")
        device = _atoi(rest[1]) if len(rest) > 1 else 0
        if device < 0:
            raise UsageError("Check failed: device_id >= 0 (%d vs. 0)" % device)
        log.error("Using Device_id=%d" % device, W + ":58")
        if not backend.has_gpu():
            raise DecafError("GPU requested but no GPU is available (decaf needs CuPy and a "
                             "CUDA device); leave out GPU to run on the CPU")
        backend.set_device(device)
        backend.set_mode_gpu()
    else:
        log.error("Using CPU", W + ":62")
        backend.set_mode_cpu()


def _atoi(text):
    """C's atoi: the leading integer of ``text`` (0 when there is none)."""
    digits = text.strip()
    end = 1 if digits[:1] in "+-" and digits[:1] else 0
    while end < len(digits) and digits[end].isdigit():
        end += 1
    try:
        return int(digits[:end])
    except ValueError:
        return 0


def extract_features(weights, model, blob_names, dataset_names, num_mini_batches, db_type):
    """Write the features of ``blob_names`` into new databases ``dataset_names``; returns the
    number of records written per dataset."""
    from ..net import Net
    from ..proto import caffe_pb2
    db_type = backend_name(db_type)
    net = Net(model, phase=caffe_pb2.TEST)
    net.copy_trained_layers_from(weights)
    if len(blob_names) != len(dataset_names):
        raise UsageError("Check failed: blob_names.size() == dataset_names.size() (%d vs. %d)  "
                         "the number of blob names and dataset names must be equal"
                         % (len(blob_names), len(dataset_names)))
    for name in blob_names:
        if name not in net.blobs:
            raise DecafError("Check failed: feature_extraction_net->has_blob(blob_names[i]) "
                             "Unknown feature blob name %s in the network %s" % (name, model))
    dbs, writers = [], []
    try:
        for name in dataset_names:
            log.info("Opening dataset " + name, W + ":125")
            dbs.append(open_db(db_type, name, "new"))
            writers.append(dbs[-1].transaction())
        log.error("Extacting Features", W + ":133")
        counts = [0] * len(blob_names)
        for _ in range(num_mini_batches):
            net.forward_loss()
            for i, name in enumerate(blob_names):
                for value in feature_datums(net.blobs[name]):
                    writers[i].put(b"%010d" % counts[i], value)
                    counts[i] += 1
                    if counts[i] % 1000 == 0:
                        writers[i].commit()
                        writers[i] = dbs[i].transaction()
                        log.error("Extracted features of %d query images for feature blob %s"
                                  % (counts[i], name), W + ":166")
        for i, name in enumerate(blob_names):
            if counts[i] % 1000 != 0:
                writers[i].commit()
            log.error("Extracted features of %d query images for feature blob %s"
                      % (counts[i], name), W + ":177")
    finally:
        for db in dbs:
            db.close()
    log.error("Successfully extracted the features!", W + ":182")
    return counts


def _run(argv):
    if len(argv) < 6:
        log.error(USAGE, W + ":35")
        return 1
    _use_device(argv[6:])
    weights, model, blobs, datasets, batches, db_type = argv[:6]
    extract_features(weights, model, blobs.split(","), datasets.split(","), _atoi(batches),
                     db_type)
    return 0


def main(argv=None):
    """Entry point; ``argv`` excludes the program name. Returns the exit code."""
    try:
        return run_tool(_run, sys.argv[1:] if argv is None else argv, USAGE)
    finally:
        backend.set_mode_cpu()


if __name__ == "__main__":
    sys.exit(main())
