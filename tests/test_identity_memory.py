"""Identity stage memory: a live camera runs for days while people come and go, so what the
stage keeps must follow who is on screen, not how long it has run; and forgetting a track
must never cost a face its person or its fake identity.

Real pieces throughout: astronaut.png walking through a self-made clip, decoded with PyAV,
RetinaFace's detections, the norfair tracker with its ReID, dlib embeddings of the real face
pixels, and SimSwap's ArcFace network (generated weights) for the source latent. The clip's
frames are detected once and replayed, so a long run stays cheap.
"""

from fractions import Fraction

import av
import pytest

from engines.embedders import calibration, load_embedder
from engines.simswap import ArcFaceResNet, latent_from_crops
from pipeline.core.records import Frame, TrackedFrame
from pipeline.detect.retinaface import RetinaFaceDetector
from pipeline.identity.assignment import AssignConfig, SourceAssigner
from pipeline.identity.persons import PersonRegistry
from pipeline.identity.stage import IdentityConfig, IdentityStage
from pipeline.synthetic import Actor, make_scene_video
from simswap_kit import make_gallery_file
from trackers import FaceTracker, TrackerConfig

WALK = 24  # frames of one appearance
# Short patience so that a gap long enough to end a track (ReID included) stays short.
TRACKER = TrackerConfig(patience=5, reid_patience=20)
IDENTITY = IdentityConfig(max_samples=2)  # the two samples a decision takes: dlib is the slow part


@pytest.fixture(scope="module")
def walk(tmp_path_factory):
    """(decoded frames, their detections): the astronaut walking in, then the empty scene."""
    path = tmp_path_factory.mktemp("walk") / "walk.mp4"
    make_scene_video(str(path), [Actor(lambda i: None if i >= WALK else (20 + 3 * i, 40, 140))], frames=WALK + 1)
    with av.open(str(path)) as c:
        images = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    dets = RetinaFaceDetector().detect(images)
    assert all(len(d) == 1 for d in dets[:WALK]) and len(dets[WALK]) == 0, [len(d) for d in dets]
    return images, dets


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    embedder = load_embedder("dlib")
    arc = ArcFaceResNet(layers=(1, 1, 1, 1)).eval()
    gallery = make_gallery_file(tmp_path_factory.mktemp("gal") / "g.npz", n=4)
    return embedder, arc, gallery


def _tracked(walk, embedder, gaps, tracker_config=TRACKER):
    """TrackedFrames from the real tracker: one appearance, then per gap that many empty
    frames and another appearance."""
    images, dets = walk
    tracker = FaceTracker(tracker_config, embed=embedder.embed)
    schedule = list(range(WALK))
    for gap in gaps:
        schedule += [WALK] * gap + list(range(WALK))
    for i, k in enumerate(schedule):
        yield TrackedFrame(Frame(i, i, Fraction(1001, 30000), images[k]), tracker.update(dets[k], images[k]), len(dets[k]))


def _stage(models, max_id_gap):
    embedder, arc, gallery = models
    latents = []

    def latent_fn(crops):
        latents.append(len(crops))
        return latent_from_crops(arc, crops)

    assigner = SourceAssigner(gallery, "dlib", AssignConfig(margin=calibration("dlib")[1]))
    stage = IdentityStage(embedder, PersonRegistry("dlib", calibration("dlib")[0]), assigner, IDENTITY,
                          latent_fn=latent_fn, max_id_gap=max_id_gap)
    return stage, latents


def test_tracker_gives_an_id_back_no_later_than_its_max_id_gap(walk, models):
    """The identity stage forgets a track after `max_id_gap` (plus its look-ahead): an id the
    tracker gave back later than that would reach a stage that has forgotten it."""
    cfg = TrackerConfig(patience=3, reid_patience=6)
    longest, revived_after_patience = 0, False
    for gap in range(1, cfg.patience + cfg.reid_patience + 6):
        last: dict[int, int] = {}
        for tf in _tracked(walk, models[0], [gap], cfg):
            for face in tf.faces:
                if face.track_id is None:
                    continue
                if face.track_id in last:
                    longest = max(longest, tf.frame.index - last[face.track_id])
                    revived_after_patience |= tf.frame.index - last[face.track_id] > cfg.patience + 1
                last[face.track_id] = tf.frame.index
    assert revived_after_patience, "ReID never gave an id back: nothing measured"
    assert longest <= cfg.max_id_gap


def test_a_long_run_of_comings_and_goings_keeps_the_stage_small_and_the_person_one(walk, models):
    # 36 appearances; every 6th gap is short enough for ReID to give the track back (the stage
    # must not have forgotten it), the others end the track, so the next appearance is a new one.
    gaps = [12 if k % 6 == 5 else 40 for k in range(35)]
    stage, latents = _stage(models, TRACKER.max_id_gap)
    sizes, tracks, faces = [], set(), []
    for tf in stage(_tracked(walk, models[0], gaps)):
        sizes.append(stage.state_size())
        for face in tf.faces:
            if face.track_id is not None:
                tracks.add(face.track_id)
                faces.append((face.track_id, face.person_id, face.source_id))
    assert len(tracks) == 36 - sum(g == 12 for g in gaps) >= 30, "each long gap must start a new track"

    # Bounded: a track is held for its appearance, the tracker's patience, the look-ahead and
    # max_id_gap (24 + 5 + 8 + 22 < 64 frames between two starts): at most two at once.
    assert max(s["tracks"] for s in sizes) <= 2, max(sizes, key=lambda s: s["tracks"])
    assert all(s["crops"] <= s["undecided"] and s["pending_samples"] <= s["undecided"] * IDENTITY.max_samples for s in sizes)
    assert max(s["confirmed"] for s in sizes) <= 2
    assert sizes[-1]["crops"] == 0 and sizes[-1]["tracks"] <= 1  # the last track was decided, the others forgotten

    # ...and right: one person, one source, on every tracked face of every appearance.
    (person,) = stage.registry.persons
    assert {(p, s) for _, p, s in faces} == {(person.id, person.source_id)} and person.source_id is not None
    assert latents == [1], "one person: one source latent, computed once"
    (row,) = stage.persons()
    assert sorted(row["tracks"]) == sorted(tracks) and len(row["tracks"]) == len(tracks)
    first, *later = row["tracks"]
    assert row["track_similarity"][str(first)] is None  # nobody to compare with yet
    assert all(row["track_similarity"][str(t)] >= calibration("dlib")[0] for t in later)


def test_a_forgotten_track_that_comes_back_keeps_its_person_and_source(walk, models):
    """A stage told a gap shorter than the tracker's (here none): the tracker gives the id
    back after the stage forgot it; the returning face is decided again and linked to its
    person by embedding, not emitted without one, and still counted as one track."""
    stage, latents = _stage(models, max_id_gap=0)
    forgotten, faces = False, []
    for tf in stage(_tracked(walk, models[0], [18])):  # < patience + reid_patience: ReID revives it
        forgotten |= stage.state_size()["tracks"] == 0
        faces += [(f.track_id, f.person_id, f.source_id) for f in tf.faces if f.track_id is not None]
    assert forgotten, "the stage never forgot the track: nothing tested"
    assert len({t for t, _, _ in faces}) == 1, "the tracker must have given the id back"
    (person,) = stage.registry.persons
    assert {(p, s) for _, p, s in faces} == {(person.id, person.source_id)} and person.source_id is not None
    assert latents == [1] and person.tracks == [faces[0][0]]


def test_the_margin_latent_is_taken_from_the_swap_sizes_crop(walk, models):
    """A face's own latent (for the latent-space margin) comes from a crop aligned like the
    sources' for that generator: the 224 pose-template crop, or the FFHQ 512 one."""
    embedder, arc, gallery = models
    for size in (224, 512):
        shapes = []

        def latent_fn(crops):
            shapes.append(crops.shape)
            return latent_from_crops(arc, crops)

        assigner = SourceAssigner(gallery, "dlib", AssignConfig(margin=calibration("dlib")[1]))
        stage = IdentityStage(embedder, PersonRegistry("dlib", calibration("dlib")[0]), assigner, IDENTITY,
                              latent_fn=latent_fn, max_id_gap=TRACKER.max_id_gap, latent_size=size)
        list(stage(_tracked(walk, embedder, [])))
        assert shapes == [(1, size, size, 3)]
