"""MTCNN (Zhang et al. 2016), our torch definition of the three-stage cascade, on the weights
the `mtcnn` PyPI package ships (MIT): the audit's third face detector.

Why a third one: the audit's leak check must use a detector the run did not use, and a run
with `--detector ensemble` uses both RetinaFace and CenterFace. dlib's CNN was the only one
left and is blind to the faces that matter there (benchmarks/results/audit_detector.md).
MTCNN is unrelated to both (a proposal network on an image pyramid, then two refinement
networks on crops, trained on WIDER FACE and CelebA), and its weights come from PyPI.

The `mtcnn` package runs them with TensorFlow, which we do not install: `weights.py` reads
its files without running their pickles, `model.py` is the three networks, `cascade.py` the
pyramid, proposals, refinements and NMS between them.
"""
