"""MTCNN, the audit's third detector: our torch cascade on the `mtcnn` package's weights,
read without running their pickles. Real weights, real faces."""

import pickle

import lz4.frame
import numpy as np
import pytest
from skimage import data

from engines import get_model, load
from engines.mtcnn.weights import LAYOUT, read_arrays, state_dict
from engines.registry import local_file
from engines.simswap.safe_pickle import UnsafeCheckpointError
from pipeline.detect.retinaface import RetinaFaceDetector
from pipeline.detect.recall import iou


def test_weights_load_strictly_into_our_networks():
    entry = get_model("mtcnn")
    assert [f.role for f in entry.files] == ["pnet", "rnet", "onet"] and entry.licence == "MIT"
    for spec in entry.files:
        arrays = read_arrays(open(local_file(entry, spec), "rb").read())
        sd = state_dict(spec.role, arrays)
        assert len(sd) == sum(1 if n.startswith("prelu") else 2 for n in LAYOUT[spec.role])
    with pytest.raises(ValueError, match="onet weights: 16 arrays, expected 21"):
        state_dict("onet", arrays[:16])


def test_a_pickle_naming_anything_else_stops_before_it_runs(tmp_path):
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    payload = lz4.frame.compress(pickle.dumps([Evil()]))
    with pytest.raises(UnsafeCheckpointError, match="refer to io.open|refer to builtins.open"):
        read_arrays(payload)
    assert not marker.exists()
    with pytest.raises(ValueError, match="not an LZ4 frame"):
        read_arrays(b"not lz4 at all")
    with pytest.raises(ValueError, match="expected a list of arrays"):
        read_arrays(lz4.frame.compress(pickle.dumps({"a": 1})))


def test_finds_the_astronaut_where_retinaface_does_and_nothing_on_flat_grey():
    """Box within the face RetinaFace finds (IoU > 0.6), eyes above the nose above the mouth,
    left eye left of the right one; a flat frame has no face; found again at half size (the
    working size brings the frame up to 640)."""
    image = data.astronaut()
    mtcnn = load("mtcnn")
    (found,) = mtcnn.detect([image])
    (ref,) = RetinaFaceDetector().detect([image])
    assert len(found) == 1 and found.scores[0] > 0.9
    assert iou(found.boxes, ref.boxes)[0, 0] > 0.6
    lm = found.landmarks[0]
    assert lm[0, 0] < lm[1, 0] and lm[3, 0] < lm[4, 0]
    assert max(lm[0, 1], lm[1, 1]) < lm[2, 1] < min(lm[3, 1], lm[4, 1])
    assert np.abs(lm - ref.landmarks[0]).max() < 8
    assert len(mtcnn.detect([np.full((360, 640, 3), 90, np.uint8)])[0]) == 0
    (small,) = mtcnn.detect([image[::2, ::2].copy()])
    assert len(small) == 1 and iou(small.boxes * 2, ref.boxes)[0, 0] > 0.6
    assert mtcnn.long_side(256, 256) == 640 and mtcnn.long_side(2160, 3840) == 1280
