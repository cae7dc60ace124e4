"""The PerFace recipe: fine-tune an ArcFace IResNet with a cosine triplet loss on human triplets.

Kumagai et al., ICIP 2025: ArcFace IResNet-50, the whole net fine-tuned with

    L = max(0, cos(x, x⁻) − cos(x, x⁺) + m),  m = 0.1

SGD (lr 0.01, momentum 0.9, weight decay 5e-4), batch 32 triplets. Evaluation is triplet
accuracy, the share of triplets with cos(ref, pos) > cos(ref, neg) (paper, Table 1: ArcFace
0.701 → PerFace 0.917).

Each image goes through a face detector (the caller's: the command line gives the project's,
pipeline.detect.retinaface.RetinaFaceDetector); its biggest face is aligned to the ArcFace 112
template and the crop is cached in memory (`FaceCrops`). Training crops get a light
augmentation (horizontal flip, small brightness/contrast jitter); evaluation crops none.

    faces = FaceCrops(RetinaFaceDetector())
    history = train(model, train_triplets, val_triplets, epochs=10, faces=faces, log=print)
    triplet_accuracy(model, val_triplets, faces)
"""

from __future__ import annotations

import math
from collections.abc import Callable

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from engines.iresnet import INPUT_SIZE, preprocess

from .triplets import Triplet

MARGIN = 0.1
# Stages from the input up: `train_last=N` fine-tunes only the last N of them.
STAGES = (("conv1", "bn1", "prelu"), ("layer1",), ("layer2",), ("layer3",), ("layer4",), ("bn2", "dropout", "fc", "features"))

EmbedFn = Callable[[np.ndarray], np.ndarray]


class FaceCrops:
    """Aligned 112×112 RGB crops of the biggest face in each image, cached in memory per path.

    `detector`: anything with `detect([rgb]) -> [Detections]` (pipeline.core.records), e.g.
    pipeline.detect.retinaface.RetinaFaceDetector: the pipeline's, which this package does not import
    (engines sit below the pipeline). An image without a face, or one that cannot be read,
    raises ValueError naming the file.
    """

    def __init__(self, detector):
        self.detector = detector
        self._cache: dict[str, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self._cache)

    def get(self, path: str) -> np.ndarray:
        crop = self._cache.get(path)
        if crop is None:
            crop = self._cache[path] = self._align(path)
        return crop

    def stack(self, paths: list[str]) -> np.ndarray:
        """(N, 112, 112, 3) uint8 crops of `paths`, in order."""
        if not paths:
            return np.zeros((0, INPUT_SIZE, INPUT_SIZE, 3), np.uint8)
        return np.stack([self.get(p) for p in paths])

    def _align(self, path: str) -> np.ndarray:
        from pipeline.core.alignment import ARCFACE_TEMPLATE_112, warp_to_template

        bgr = cv2.imread(path, cv2.IMREAD_COLOR)
        if bgr is None:
            raise ValueError(f"cannot read image {path} (missing, or not an image OpenCV decodes)")
        rgb = np.ascontiguousarray(bgr[:, :, ::-1])
        det = self.detector.detect([rgb])[0]
        if len(det) == 0:
            raise ValueError(f"no face found in {path}; remove its triplets or give a clearer photo")
        biggest = det.largest()
        return warp_to_template(rgb, det.landmarks[biggest : biggest + 1], ARCFACE_TEMPLATE_112, INPUT_SIZE)[0]


def cosine_triplet_loss(ref: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor, margin: float = MARGIN) -> torch.Tensor:
    """Mean over the batch of max(0, cos(ref, neg) − cos(ref, pos) + margin); (N, D) inputs."""
    if not ref.shape == pos.shape == neg.shape:
        raise ValueError(f"cosine_triplet_loss needs three (N, D) tensors of one shape, got {tuple(ref.shape)}, {tuple(pos.shape)}, {tuple(neg.shape)}")
    return torch.clamp(F.cosine_similarity(ref, neg, dim=-1) - F.cosine_similarity(ref, pos, dim=-1) + margin, min=0.0).mean()


def model_embedder(model: nn.Module, batch_size: int = 64) -> EmbedFn:
    """(N, 112, 112, 3) uint8 crops → (N, D) L2-normalized embeddings, in eval mode, no grad."""

    def embed(crops: np.ndarray) -> np.ndarray:
        was_training = model.training
        model.eval()
        out = []
        try:
            with torch.no_grad():
                for i in range(0, len(crops), batch_size):
                    out.append(F.normalize(model(preprocess(crops[i : i + batch_size])), dim=1).numpy())
        finally:
            model.train(was_training)
        return np.concatenate(out) if out else np.zeros((0, 0), np.float32)

    return embed


def _as_embedder(model_or_embed_fn) -> EmbedFn:
    return model_embedder(model_or_embed_fn) if isinstance(model_or_embed_fn, nn.Module) else model_or_embed_fn


def evaluate(model_or_embed_fn, triplets: list[Triplet], faces: FaceCrops, margin: float = MARGIN) -> dict:
    """{"accuracy", "loss"} of `triplets`: each image embedded once, no augmentation."""
    if not triplets:
        return {"accuracy": None, "loss": None}
    paths = sorted({p for t in triplets for p in (t.reference, t.positive, t.negative)})
    emb = np.asarray(_as_embedder(model_or_embed_fn)(faces.stack(paths)), np.float64)
    emb /= np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    index = {p: i for i, p in enumerate(paths)}
    r, p, n = (np.array([index[getattr(t, f)] for t in triplets]) for f in ("reference", "positive", "negative"))
    cos_pos = (emb[r] * emb[p]).sum(1)
    cos_neg = (emb[r] * emb[n]).sum(1)
    return {
        "accuracy": float(np.mean(cos_pos > cos_neg)),
        "loss": float(np.maximum(0.0, cos_neg - cos_pos + margin).mean()),
    }


def triplet_accuracy(model_or_embed_fn, triplets: list[Triplet], faces: FaceCrops) -> float | None:
    """Share of triplets with cos(ref, pos) > cos(ref, neg); a model or an embed function
    ((N, 112, 112, 3) uint8 RGB crops → (N, D)); None for no triplets."""
    return evaluate(model_or_embed_fn, triplets, faces)["accuracy"]


def set_trainable(model: nn.Module, train_last: int | None) -> list[nn.Parameter]:
    """Freezes all but the last `train_last` of `STAGES` (None: the whole net, as PerFace).

    Returns the parameters to optimize. `features.weight` stays frozen at 1, as in arcface_torch.
    """
    n = len(STAGES)
    if train_last is not None and not 1 <= train_last <= n:
        raise ValueError(f"train_last must be between 1 (head only) and {n} (whole net), got {train_last}")
    keep = n if train_last is None else train_last
    trainable = {name for stage in STAGES[n - keep :] for name in stage}
    for name, child in model.named_children():
        for prm in child.parameters():
            prm.requires_grad = name in trainable
    model.features.weight.requires_grad = False
    return [prm for prm in model.parameters() if prm.requires_grad]


def _frozen_to_eval(model: nn.Module) -> None:
    # Frozen stages keep their BatchNorm statistics (those of the pretrained net).
    for child in model.children():
        params = list(child.parameters())
        if params and not any(prm.requires_grad for prm in params):
            child.eval()


def augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random horizontal flip and small brightness/contrast jitter of (N, 3, H, W) in [-1, 1]."""
    n = len(x)
    flip = torch.rand(n, generator=generator) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    contrast = 1.0 + (torch.rand(n, 1, 1, 1, generator=generator) - 0.5) * 0.2  # ×[0.9, 1.1]
    brightness = (torch.rand(n, 1, 1, 1, generator=generator) - 0.5) * 0.2  # ±0.1 (±13/255)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return ((x - mean) * contrast + mean + brightness).clamp(-1.0, 1.0)


def train(
    model: nn.Module,
    train_triplets: list[Triplet],
    val_triplets: list[Triplet],
    epochs: int,
    *,
    batch_size: int = 32,
    lr: float = 0.01,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    margin: float = MARGIN,
    seed: int = 0,
    train_last: int | None = None,
    augmentation: bool = True,
    faces: FaceCrops,
    log: Callable[[str], None] | None = None,
) -> list[dict]:
    """Fine-tunes `model` in place; returns the history, one row per epoch from epoch 0 (before training).

    Each row: `epoch`, `loss` (mean training-batch loss of the epoch, with augmentation and
    BatchNorm in training mode; None at epoch 0), and, measured after the epoch in eval mode
    without augmentation, `train_loss`, `train_accuracy`, `val_loss`, `val_accuracy`
    (None without validation triplets). Deterministic given `seed` (shuffling and augmentation).
    """
    if not train_triplets:
        raise ValueError("no training triplets (after dropping ties and filtering)")
    if epochs < 0 or batch_size < 1:
        raise ValueError(f"epochs must be >= 0 and batch_size >= 1, got {epochs}, {batch_size}")
    log = log or (lambda message: None)
    for t in (*train_triplets, *val_triplets):  # align every face once, failing before training starts
        for p in (t.reference, t.positive, t.negative):
            faces.get(p)
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    params = set_trainable(model, train_last)
    optimizer = torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    steps = math.ceil(len(train_triplets) / batch_size)

    def measure(epoch: int, batch_loss: float | None) -> dict:
        tr, va = evaluate(model, train_triplets, faces, margin), evaluate(model, val_triplets, faces, margin)
        row = {"epoch": epoch, "loss": batch_loss, "train_loss": tr["loss"], "train_accuracy": tr["accuracy"],
               "val_loss": va["loss"], "val_accuracy": va["accuracy"]}
        val = "" if va["accuracy"] is None else f", val loss {va['loss']:.4f}, val accuracy {va['accuracy']:.3f}"
        step = "" if batch_loss is None else f"batch loss {batch_loss:.4f}, "
        log(f"epoch {epoch}/{epochs}: {step}train loss {tr['loss']:.4f}, train accuracy {tr['accuracy']:.3f}{val}")
        return row

    history = [measure(0, None)]
    for epoch in range(1, epochs + 1):
        model.train()
        _frozen_to_eval(model)
        order = torch.randperm(len(train_triplets), generator=generator).tolist()
        total = 0.0
        for s in range(steps):
            batch = [train_triplets[i] for i in order[s * batch_size : (s + 1) * batch_size]]
            # Each image once per batch (one augmentation draw): small sets repeat images a lot.
            paths = list(dict.fromkeys(p for t in batch for p in (t.reference, t.positive, t.negative)))
            index = {p: i for i, p in enumerate(paths)}
            x = preprocess(faces.stack(paths))
            if augmentation:
                x = augment(x, generator)
            emb = model(x)
            ref, pos, neg = (emb[[index[getattr(t, f)] for t in batch]] for f in ("reference", "positive", "negative"))
            loss = cosine_triplet_loss(ref, pos, neg, margin)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(batch)
        history.append(measure(epoch, total / len(train_triplets)))
    model.eval()
    return history
