"""5-point similarity alignment (Umeyama, via scikit-image) into SimSwap's crops, batched.

The templates are the ones SimSwap's own inference aligns with, so our crops look like the
ones its generator was trained on:
- 224 ("people" model): insightface's five pose templates (profile-left … profile-right) on a
  112 grid, scaled to the crop; the template with the smallest residual wins, per face.
- 512 (512_beta): the FFHQ-style template on a 512 grid.
Landmark order is RetinaFace's: the eye on the image's left, the other eye, nose tip, then the
mouth corners in the same left-to-right order.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from skimage.transform import SimilarityTransform

# Five-point templates (x, y), in pixels of a 112×112 crop: left profile … right profile.
POSE_TEMPLATES_112 = np.array(
    [
        [[51.642, 50.115], [57.617, 49.990], [35.740, 69.007], [51.157, 89.050], [57.025, 89.702]],
        [[45.031, 50.118], [65.568, 50.872], [39.677, 68.111], [45.177, 86.190], [64.246, 86.758]],
        [[39.730, 51.138], [72.270, 51.138], [56.000, 68.493], [42.463, 87.010], [69.537, 87.010]],
        [[46.845, 50.872], [67.382, 50.118], [72.737, 68.111], [48.167, 86.758], [67.236, 86.190]],
        [[54.796, 49.990], [60.771, 50.115], [76.673, 69.007], [55.388, 89.702], [61.257, 89.050]],
    ],
    np.float64,
)
# FFHQ-style template, in pixels of a 512×512 crop.
FFHQ_TEMPLATE_512 = np.array(
    [[[192.98138, 239.94708], [318.90277, 240.1936], [256.63416, 314.01935], [201.26117, 371.41043], [313.08905, 371.15118]]],
    np.float64,
)
FRONTAL = 2  # index of the frontal pose template
# insightface's ArcFace template (`arcface_dst`), in pixels of a 112×112 crop: what ArcFace
# R50 and PerFace (fine-tuned from it) were trained on. Not SimSwap's frontal template.
ARCFACE_TEMPLATE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    np.float64,
)


def templates(size: int) -> np.ndarray:
    """(T, 5, 2) template points for a crop of `size` pixels, in SimSwap's own dtypes: its 112-grid
    templates are float32 arrays scaled in float32 (`src_map * image_size / 112`), the FFHQ one
    is float64. scikit-image's estimate then works in those precisions, so the matrices come out
    bit-identical to SimSwap's (float64 inputs move the translation by ~3e-5 crop px)."""
    if size == 512:
        return FFHQ_TEMPLATE_512 * size / 512
    return POSE_TEMPLATES_112.astype(np.float32) * size / 112


def _similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    if hasattr(SimilarityTransform, "from_estimate"):  # scikit-image >= 0.26
        params = getattr(SimilarityTransform.from_estimate(src, dst), "params", None)
    else:
        t = SimilarityTransform()
        params = t.params if t.estimate(src, dst) else None
    if params is None or not np.isfinite(params).all():
        raise ValueError(f"no similarity transform fits these landmarks: {np.round(src, 1).tolist()}")
    return params


def estimate(landmarks: np.ndarray, size: int) -> tuple[np.ndarray, int]:
    """Frame→crop 2×3 float64 matrix for one face (5×2 landmarks) and the template index used.

    float64 as SimSwap's `estimate_norm` returns it: the crop warp and the paste-back then
    sample at the official positions (float32 would move the translation by up to 1e-4 px)."""
    best, best_err, best_i = None, np.inf, 0
    pts = np.asarray(landmarks, np.float32)  # what detectors return, and the precision SimSwap estimates in
    homogeneous = np.insert(pts, 2, np.ones(5), axis=1)
    for i, tpl in enumerate(templates(size)):
        m = _similarity(pts, tpl)[:2]
        err = np.sum(np.sqrt(np.sum((np.dot(m, homogeneous.T).T - tpl) ** 2, axis=1)))  # estimate_norm's error
        if err < best_err:
            best, best_err, best_i = m, err, i
    return best, best_i


def warp_to_template(image: np.ndarray, landmarks: np.ndarray, template: np.ndarray, size: int) -> np.ndarray:
    """(N, size, size, 3) crops of one image's faces aligned to one template (embedders' input).

    A face whose landmarks fit no similarity comes back black rather than failing the rest.
    """
    lms = np.asarray(landmarks, np.float64).reshape(-1, 5, 2)
    crops = np.zeros((len(lms), size, size, 3), np.uint8)
    for i, lm in enumerate(lms):
        try:
            m = _similarity(lm, template)[:2]
        except ValueError:
            continue
        crops[i] = cv2.warpAffine(image, m, (size, size), flags=cv2.INTER_LINEAR, borderValue=0)
    return crops


def template_matrices(landmarks: np.ndarray, template: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, 2, 3) image → template matrices, as warp_to_template fits them, and which faces fit
    (an unfit face gets a valid placeholder matrix, for batched warps to skip by the mask)."""
    lms = np.asarray(landmarks, np.float64).reshape(-1, 5, 2)
    out, ok = np.zeros((len(lms), 2, 3)), np.zeros(len(lms), bool)
    out[:, 0, 0] = out[:, 1, 1] = 1.0
    for i, lm in enumerate(lms):
        try:
            m = _similarity(lm, template)[:2]
        except ValueError:
            continue
        if abs(np.linalg.det(m[:, :2])) > 1e-12:  # a collapsed fit cannot be inverted for sampling
            out[i], ok[i] = m, True
    return out, ok


@dataclass
class AlignedFaces:
    """All faces of a batch of frames, aligned: crops[i] came from frames[frame_index[i]]."""

    crops: np.ndarray  # (N, S, S, 3) uint8 RGB
    matrices: np.ndarray  # (N, 2, 3) float64, frame → crop
    frame_index: np.ndarray  # (N,) int
    pose: np.ndarray  # (N,) template index (2 = frontal for 224; 0 for 512); -1 where not aligned
    ok: np.ndarray  # (N,) bool: False where no similarity fits the landmarks (crop left black)

    def __len__(self) -> int:
        return len(self.crops)


@dataclass
class FaceFits:
    """Where every face of a batch of frames goes in crop space; the warp itself comes after,
    on the host (`align`) or on a device (pipeline.anonymize.torch_faces), from the same numbers."""

    matrices: np.ndarray  # (N, 2, 3) float64, frame → crop (zeros where not ok)
    frame_index: np.ndarray  # (N,) int
    pose: np.ndarray  # (N,) template index (2 = frontal for 224; 0 for 512); -1 where not aligned
    ok: np.ndarray  # (N,) bool: False where no similarity fits the landmarks


def fit_all(landmarks: list[np.ndarray], size: int = 224) -> FaceFits:
    """Fits every face of every frame; `landmarks[f]` is (K_f, 5, 2) for frame f. Faces come out
    frame by frame, in the order given. One bad face never fails the others of the batch."""
    if size not in (224, 512):
        raise ValueError(f"SimSwap crops are 224 or 512 pixels, got {size}")
    mats, idx, poses, ok = [], [], [], []
    for f, lms in enumerate(landmarks):
        for lm in np.asarray(lms, np.float32).reshape(-1, 5, 2):
            try:
                m, pose = estimate(lm, size)
                ok.append(True)
            except ValueError:
                m, pose = np.zeros((2, 3), np.float64), -1
                ok.append(False)
            mats.append(m)
            idx.append(f)
            poses.append(pose)
    if not mats:
        return FaceFits(np.zeros((0, 2, 3), np.float64), np.zeros((0,), np.int64), np.zeros((0,), np.int64), np.zeros((0,), bool))
    return FaceFits(np.stack(mats), np.array(idx), np.array(poses), np.array(ok))


def warp_all(frames: list[np.ndarray], fits: FaceFits, size: int) -> np.ndarray:
    """(N, size, size, 3) uint8 crops on the host, black where the fit failed."""
    crops = np.zeros((len(fits.ok), size, size, 3), np.uint8)
    for i in np.flatnonzero(fits.ok):
        crops[i] = cv2.warpAffine(frames[fits.frame_index[i]], fits.matrices[i], (size, size), flags=cv2.INTER_LINEAR, borderValue=0)
    return crops


def align(frames: list[np.ndarray], landmarks: list[np.ndarray], size: int = 224) -> AlignedFaces:
    """Aligns every face of every frame in one call. `landmarks[f]` is (K_f, 5, 2) for frame f."""
    fits = fit_all(landmarks, size)
    return AlignedFaces(warp_all(frames, fits, size), fits.matrices, fits.frame_index, fits.pose, fits.ok)
