"""`decaf classify` and `decaf detect` (pycaffe's python/classify.py and python/detect.py)."""
import csv

import numpy as np
import pytest

import caffe
from decaf.tools import classify, detect

from .test_classifier_detector import save_tiny_model


@pytest.fixture
def model(tmp_path):
    path, weights, _ = save_tiny_model(tmp_path, 4)
    mean = tmp_path / "mean.npy"
    np.save(str(mean), np.full((3, 10, 10), 100.0))       # a full mean image (not 6x6)
    return ["--model_def", path, "--pretrained_model", weights,
            "--mean_file", str(mean)]


def write_images(tmp_path, n=3):
    from PIL import Image
    rs = np.random.RandomState(5)
    (tmp_path / "imgs").mkdir()
    paths = []
    for i in range(n):
        p = tmp_path / "imgs" / ("im%d.jpg" % i)
        Image.fromarray(rs.randint(0, 256, (9, 11, 3)).astype(np.uint8)).save(str(p))
        paths.append(str(p))
    return paths


def test_classify_directory_file_and_npy(model, tmp_path, capsys):
    paths = write_images(tmp_path)
    out = tmp_path / "pred.npy"
    assert classify.main([str(tmp_path / "imgs"), str(out), "--images_dim", "8,8"] + model) == 0
    pred = np.load(str(out))
    assert pred.shape == (3, 5)
    np.testing.assert_allclose(pred.sum(1), 1, rtol=1e-5)
    text = capsys.readouterr().out
    assert "CPU mode" in text and "Classifying 3 inputs." in text
    assert classify.main([paths[1], str(out), "--images_dim", "8,8", "--center_only"] + model) == 0
    single = np.load(str(out))
    clf = caffe.Classifier(model[1], model[3], image_dims=(8, 8), mean=np.full(3, 100.0),
                           raw_scale=255, channel_swap=(2, 1, 0))
    np.testing.assert_allclose(single, clf.predict([caffe.io.load_image(paths[1])], False),
                               rtol=1e-5)
    arr = np.stack([caffe.io.load_image(p) for p in paths])
    np.save(str(tmp_path / "in.npy"), arr)
    assert classify.main([str(tmp_path / "in.npy"), str(out), "--images_dim", "8,8"] + model) == 0
    np.testing.assert_allclose(np.load(str(out)), pred, rtol=1e-5)


def test_classify_missing_default_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CAFFE_ROOT", raising=False)
    with pytest.raises(SystemExit, match="--mean_file"):
        classify.main(["x.jpg", "out.npy"])


def test_detect_list_to_csv_and_h5(model, tmp_path):
    paths = write_images(tmp_path, 2)
    windows = tmp_path / "windows.csv"
    with open(str(windows), "w") as f:
        f.write("filename,xmin,ymin,xmax,ymax\n")
        f.write("%s,0,0,6,6\n%s,2,1,9,8\n%s,1,1,5,5\n" % (paths[0], paths[1], paths[0]))
    out_csv = tmp_path / "det.csv"
    assert detect.main([str(windows), str(out_csv), "--crop_mode", "list",
                        "--context_pad", "0"] + model) == 0
    rows = list(csv.reader(open(str(out_csv))))
    assert rows[0] == ["filename", "ymin", "xmin", "ymax", "xmax"] + \
        ["class%d" % i for i in range(5)]
    # grouped by image in order of first appearance, as pycaffe's detect.py does
    assert [r[0] for r in rows[1:]] == [paths[0], paths[0], paths[1]]
    assert rows[1][1:5] == ["0", "0", "6", "6"] and rows[3][1:5] == ["1", "2", "8", "9"]
    probs = np.array([[float(v) for v in r[5:]] for r in rows[1:]])
    np.testing.assert_allclose(probs.sum(1), 1, rtol=1e-5)
    h5py = pytest.importorskip("h5py")
    out_h5 = tmp_path / "det.h5"
    assert detect.main([str(windows), str(out_h5), "--crop_mode", "list",
                        "--context_pad", "1"] + model) == 0
    with h5py.File(str(out_h5), "r") as f:
        assert f["prediction"].shape == (3, 5) and f["window"].shape == (3, 4)
        assert [s.decode() if isinstance(s, bytes) else s for s in f["filename"][()]] == \
            [paths[0], paths[0], paths[1]]


def test_detect_bad_inputs(model, tmp_path):
    with pytest.raises(ValueError, match="context_pad"):     # default 16 > a 6-pixel input
        detect.main(["w.csv", "o.csv", "--crop_mode", "list"] + model)
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(SystemExit):
        detect.main([str(tmp_path / "x.json"), "o.csv", "--crop_mode", "list",
                     "--context_pad", "1"] + model)
    bad = tmp_path / "bad.csv"
    bad.write_text("filename,x0\nimg.jpg,1\n")
    with pytest.raises(SystemExit, match="lacks the column"):
        detect.main([str(bad), "o.csv", "--crop_mode", "list", "--context_pad", "1"] + model)
