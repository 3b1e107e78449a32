"""Caffe's data path: databases (LMDB, LevelDB), Datum records, the DataTransformer, MNIST
conversion and background prefetching.

    from decaf.data import open_db, array_to_datum, datum_to_array, DataTransformer
"""
from .db import open_db, DBError  # noqa: F401
from .datum import (array_to_datum, datum_to_array, decode_datum, decode_image,  # noqa: F401
                    encode_image, read_image, parse_datum)
from .transformer import DataTransformer, load_mean_file  # noqa: F401
