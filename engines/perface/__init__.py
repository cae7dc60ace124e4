"""PerFace: an ArcFace IResNet fine-tuned on human face-similarity triplets (Kumagai et al., ICIP 2025).

    from engines.iresnet import iresnet50, load_backbone
    from engines.perface import FaceCrops, load_triplets, train, triplet_accuracy
    from pipeline.detect.retinaface import RetinaFaceDetector

    model = load_backbone(iresnet50(), "backbone.pth")         # insightface arcface_torch R50
    faces = FaceCrops(RetinaFaceDetector())                           # detect → align to ArcFace 112, cached
    history = train(model, load_triplets("train.csv"), load_triplets("val.csv"), epochs=10, faces=faces)

`triplets` reads and writes the annotation CSV (`reference,a,b,votes_a,votes_b`); `train` holds
the recipe (cosine triplet loss, margin 0.1, SGD 0.01 / 0.9 / 5e-4, batch 32) and triplet accuracy.
"""

from .train import (
    MARGIN,
    FaceCrops,
    cosine_triplet_loss,
    evaluate,
    model_embedder,
    set_trainable,
    train,
    triplet_accuracy,
)
from .triplets import (
    Triplet,
    load_triplets,
    triplets_from_identities,
    write_triplets_csv,
)

__all__ = [
    "MARGIN",
    "FaceCrops",
    "Triplet",
    "cosine_triplet_loss",
    "evaluate",
    "load_triplets",
    "model_embedder",
    "set_trainable",
    "train",
    "triplet_accuracy",
    "triplets_from_identities",
    "write_triplets_csv",
]
