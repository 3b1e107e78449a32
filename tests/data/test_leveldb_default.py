"""data_param.backend defaults to LEVELDB (as in caffe.proto): a prototxt that names no backend
reads a LevelDB, with plyvel installed as a core dependency."""
import numpy as np

import decaf
from decaf.data.datum import array_to_datum
from decaf.data.db import open_db


def test_prototxt_without_backend_reads_leveldb(tmp_path):
    images = np.arange(3 * 1 * 2 * 2, dtype=np.uint8).reshape(3, 1, 2, 2)
    with open_db("leveldb", str(tmp_path / "db"), "new") as db, db.writer() as txn:
        for i, img in enumerate(images):
            txn.put(b"%08d" % i, array_to_datum(img, label=10 + i).SerializeToString())
    proto = tmp_path / "net.prototxt"
    proto.write_text('layer { name: "d" type: "Data" top: "data" top: "label" '
                     'data_param { source: "%s" batch_size: 3 } }' % (tmp_path / "db"))
    net = decaf.Net(str(proto), decaf.TEST)
    assert net.layers[0].layer_param.data_param.backend == 0      # LEVELDB
    out = net.forward()
    np.testing.assert_array_equal(out["data"], images.astype(np.float32))
    np.testing.assert_array_equal(out["label"], [10, 11, 12])
