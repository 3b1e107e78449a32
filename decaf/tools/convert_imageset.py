"""``decaf convert_imageset``: Caffe's tools/convert_imageset.

    convert_imageset [FLAGS] ROOTFOLDER/ LISTFILE DB_NAME

LISTFILE has lines ``subfolder1/file1.JPEG 7`` (path, then the label after the LAST space).
Each image is read with Pillow (BGR / gray, as OpenCV), optionally resized, and stored as a
Datum under the key ``"%08d_<path>"`` (line number, then the path), committing every 1000.
Flags (Caffe's): -gray -shuffle -backend lmdb|leveldb -resize_width -resize_height
-check_size -encoded -encode_type. Unreadable images are skipped with an error message.
"""
import os
import sys

from .. import backend as _backend
from .. import glog as log
from ..data.cli import UsageError, parse_flags, run_tool
from ..data.datum import ImageError, array_to_datum, encode_image, read_image
from ..data.db import open_db
from ..data.prefetch import read_image_list
from ..errors import DecafError

W = "convert_imageset.cpp"

FLAGS = {"gray": False, "shuffle": False, "backend": "lmdb", "resize_width": 0,
         "resize_height": 0, "check_size": False, "encoded": False, "encode_type": ""}

USAGE = ("Convert a set of images to the leveldb/lmdb\n"
         "format used as input for Caffe.\n"
         "Usage:\n"
         "    convert_imageset [FLAGS] ROOTFOLDER/ LISTFILE DB_NAME\n"
         "The ImageNet dataset for the training demo is at\n"
         "    http://www.image-net.org/download-images\n"
         "Flags: -gray -shuffle -backend (lmdb|leveldb) -resize_width -resize_height "
         "-check_size -encoded -encode_type")


def image_to_datum(path, label, height, width, is_color, encoding):
    """Caffe's ReadImageToDatum: None when the image cannot be read."""
    try:
        chw = read_image(path, is_color, height, width)
    except ImageError as e:
        log.error("Could not open or find file %s (%s)" % (path, e), "io.cpp")
        return None
    if encoding:
        from ..proto import caffe_pb2
        datum = caffe_pb2.Datum()
        ext = os.path.splitext(path)[1].lower().lstrip(".")
        enc = encoding.lower()
        same_ext = ext == enc or (enc == "jpg" and ext == "jpeg")
        if (chw.shape[0] == 3) == is_color and not height and not width and same_ext:
            with open(path, "rb") as f:  # ReadFileToDatum: keep the file's own bytes
                datum.data = f.read()
        else:
            datum.data = encode_image(chw, encoding)
        datum.label = label
        datum.encoded = True
        return datum
    datum = array_to_datum(chw, label)
    datum.encoded = False  # CVMatToDatum sets it explicitly (so it is serialized)
    return datum


def _run(argv):
    flags, args = parse_flags(argv, FLAGS)
    if len(args) != 3:
        raise UsageError("expected ROOTFOLDER/ LISTFILE DB_NAME, got %d arguments" % len(args))
    root, list_file, db_name = args
    is_color = not flags["gray"]
    lines = read_image_list(list_file, allow_empty=True)
    if flags["shuffle"]:
        log.info("Shuffling data", W)
        order = _backend.rng().permutation(len(lines))
        lines = [lines[i] for i in order]
    log.info("A total of %d images." % len(lines), W)
    if flags["encode_type"] and not flags["encoded"]:
        log.info("encode_type specified, assuming encoded=true.", W)
    height, width = max(0, flags["resize_height"]), max(0, flags["resize_width"])
    count, data_size = 0, None
    with open_db(flags["backend"], db_name, "new") as db:
        with db.writer(1000) as writer:
            for line_id, (name, label) in enumerate(lines):
                enc = flags["encode_type"]
                if flags["encoded"] and not enc:  # guess the encoding from the file name
                    enc = os.path.splitext(name)[1].lstrip(".").lower()
                datum = image_to_datum(root + name, label, height, width, is_color, enc)
                if datum is None:
                    continue
                if flags["check_size"]:
                    size = len(datum.data)
                    if data_size is None:
                        data_size = datum.channels * datum.height * datum.width
                    elif size != data_size:
                        raise DecafError("Incorrect data field size %d (%s; expected %d)"
                                         % (size, name, data_size))
                writer.put(("%08d_%s" % (line_id, name)).encode("utf-8"),
                           datum.SerializeToString())
                count += 1
                if count % 1000 == 0:
                    log.info("Processed %d files." % count, W)
    if count % 1000 != 0:
        log.info("Processed %d files." % count, W)
    return 0


def main(argv=None):
    """Entry point; ``argv`` excludes the program name. Returns the exit code."""
    return run_tool(_run, sys.argv[1:] if argv is None else argv, USAGE)


if __name__ == "__main__":
    sys.exit(main())
