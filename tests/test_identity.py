"""Identity: persons across tracks, one fake identity each, the assignment's constraints.

Self-contained: scenes made from astronaut.png (a real face), galleries of random vectors
(identities that are nobody) and hand-made vectors for the assignment's rules.
"""

import json

import numpy as np
import pytest

from conftest import run_cli
from pipeline import RunConfig, anonymize_video
from pipeline.identity.stage import IdentityConfig
from pipeline.identity.persons import PersonRegistry
from pipeline.track.shot_cuts import ShotCutDetector
from pipeline.identity.assignment import AssignConfig, SourceAssigner, group_name
from pipeline.identity.attributes import PersonAttributes
from pipeline.identity.gallery import Source, SourceGallery
from pipeline.synthetic import Actor, make_scene_video
from simswap_kit import make_gallery_file

LABELS4 = [("female", "young"), ("female", "older"), ("male", "young"), ("male", "older")]


def _unit(v):
    v = np.asarray(v, np.float32)
    return v / np.linalg.norm(v)


@pytest.fixture(scope="module")
def gallery4(tmp_path_factory):
    path = tmp_path_factory.mktemp("gal") / "g.npz"
    make_gallery_file(path, n=4, labels=LABELS4)
    return path


def _run(video, gallery, tmp_path, **kw):
    cfg = RunConfig(mode="blur", gallery=str(gallery), **kw)
    report = anonymize_video(str(video), str(tmp_path / "out.mp4"), cfg, progress=False, log=lambda m: None,
                             boxes_path=str(tmp_path / "b.jsonl"))
    rows = [json.loads(line) for line in (tmp_path / "b.jsonl").read_text().splitlines()]
    return report, rows


# ---- videos --------------------------------------------------------------------------------

def test_a_face_that_leaves_and_comes_back_keeps_its_person_and_source(tmp_path, gallery4):
    def walk(i):  # in for 20 frames, away for 30 (longer than the tracker's patience), back for 20
        if 20 <= i < 50:
            return None
        return (20 + 4 * i, 30, 150) if i < 20 else (20 + 4 * (70 - i), 30, 150)

    make_scene_video(str(tmp_path / "leave.mp4"), [Actor(walk)], frames=70)
    report, rows = _run(tmp_path / "leave.mp4", gallery4, tmp_path)
    tracks = report["tracks"]
    assert len(tracks) == 2, "the tracker must have lost the face while it was away"
    assert tracks[0]["last_frame"] < 50 <= tracks[1]["first_frame"]
    assert tracks[0]["person_id"] == tracks[1]["person_id"] is not None
    assert tracks[0]["source_ids"] == tracks[1]["source_ids"] and len(tracks[0]["source_ids"]) == 1
    (person,) = report["persons"]
    assert person["tracks"] == [1, 2] and person["track_similarity"]["2"] >= 0.925
    # every face on every frame was anonymized with that person's identity recorded
    assert all(f["source_id"] == tracks[0]["source_id"] for r in rows for f in r["faces"])


def test_norfair_reid_gives_a_briefly_hidden_face_its_track_back(tmp_path, gallery4):
    """Hidden for 30 frames (longer than the tracker's patience, shorter than its ReID
    memory): with the identity stage on, the embedding brings the old track id back."""
    make_scene_video(str(tmp_path / "hide.mp4"), [Actor(lambda i: None if 20 <= i < 50 else (20 + 2 * i, 60, 90))], frames=70)
    plain = anonymize_video(str(tmp_path / "hide.mp4"), str(tmp_path / "p.mp4"), RunConfig(mode="blur"),
                            progress=False, log=lambda m: None)
    assert len(plain["tracks"]) == 2 and plain["video"]["shot_cuts"] == []
    report, _ = _run(tmp_path / "hide.mp4", gallery4, tmp_path)
    (track,) = report["tracks"]
    assert track["first_frame"] == 0 and track["last_frame"] == 69 and len(track["source_ids"]) == 1


def test_two_faces_crossing_never_share_a_source(tmp_path, gallery4):
    # Her mirror image: embedders call it the same person, so only "on screen together" keeps them apart.
    make_scene_video(str(tmp_path / "cross.mp4"),
                     [Actor(lambda i: (10 + 3 * i, 40, 140)), Actor(lambda i: (200 - 3 * i, 50, 140), mirror=True)],
                     frames=64)
    report, rows = _run(tmp_path / "cross.mp4", gallery4, tmp_path)
    assert all(len(t["source_ids"]) == 1 for t in report["tracks"]), report["tracks"]
    both = 0
    for r in rows:
        sources = [f["source_id"] for f in r["faces"] if f["track_id"] is not None]
        persons = [f["person_id"] for f in r["faces"] if f["track_id"] is not None]
        assert len(set(sources)) == len(sources) and len(set(persons)) == len(persons), r
        both += len(sources) == 2
    assert both >= 30
    assert len(report["persons"]) == 2


def test_fleet_scope_keeps_a_person_s_identity_across_videos_and_video_scope_stores_nothing(tmp_path, gallery4):
    def walk(i):
        return (20 + 3 * i, 40, 140)

    make_scene_video(str(tmp_path / "a.mp4"), [Actor(walk)], frames=24)
    make_scene_video(str(tmp_path / "b.mp4"), [Actor(walk, mirror=True)], frames=24, seed=3)
    reg = tmp_path / "persons.npz"
    out = []
    for i, video in enumerate(("a.mp4", "b.mp4")):
        res = run_cli(tmp_path / video, "-o", tmp_path / f"o{i}.mp4", "--mode", "blur", "--gallery", gallery4,
                      "--identity-scope", "fleet", "--person-registry", reg, "--seed", str(7 + i), "--report", tmp_path / f"r{i}.json", "-q")
        assert res.returncode == 0, res.stderr
        out.append(json.loads((tmp_path / f"r{i}.json").read_text()))
    assert out[1]["persons"][0]["from_registry"] and out[1]["persons"][0]["source_id"] == out[0]["persons"][0]["source_id"]
    with np.load(reg, allow_pickle=False) as z:
        assert set(z.files) == {"meta", "embeddings"} and z["embeddings"].shape == (1, 128)
        meta = json.loads(bytes(z["meta"]).decode())
    assert set(meta["persons"][0]) == {"id", "source_id", "group", "weight"}  # no boxes, times or video names
    # video scope (the default) writes no registry; a registry path without fleet scope is refused
    before = sorted(p.name for p in tmp_path.iterdir())
    assert run_cli(tmp_path / "a.mp4", "-o", tmp_path / "o2.mp4", "--gallery", gallery4, "-q").returncode == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(before + ["o2.mp4"])
    res = run_cli(tmp_path / "a.mp4", "-o", tmp_path / "o3.mp4", "--gallery", gallery4, "--person-registry", reg)
    assert res.returncode == 2 and "--identity-scope fleet" in res.stderr


def test_a_registry_from_another_gallery_is_refused(tmp_path, gallery4):
    other = tmp_path / "other.npz"
    make_gallery_file(other, n=3, seed=5)
    reg = PersonRegistry("dlib", 0.9)
    p = reg.new(0)
    p.add(_unit(np.ones(128)), 1.0)
    p.source_id = "src_a"
    reg.save(str(tmp_path / "r.npz"), SourceGallery.load(str(other)).fingerprint())
    make_scene_video(str(tmp_path / "a.mp4"), [Actor(lambda i: (20, 40, 140))], frames=4)
    res = run_cli(tmp_path / "a.mp4", "-o", tmp_path / "o.mp4", "--gallery", gallery4,
                  "--identity-scope", "fleet", "--person-registry", tmp_path / "r.npz")
    assert res.returncode == 2 and "belongs to another gallery" in res.stderr
    assert not (tmp_path / "o.mp4").exists()


def test_shot_cuts_are_found_and_motion_is_not(tmp_path, synthetic):
    import av

    det = ShotCutDetector()
    with av.open(synthetic.path) as c:
        assert not any(det.update(f.to_ndarray(format="rgb24")) for f in c.decode(video=0))
    rng = np.random.default_rng(0)
    a = np.full((120, 160, 3), (40, 60, 160), np.uint8)
    b = rng.integers(150, 255, (120, 160, 3), dtype=np.uint8)
    det = ShotCutDetector()
    assert [det.update(x) for x in (a, a, b, b)] == [False, False, True, False]


# ---- assignment rules on controlled vectors --------------------------------------------------

def _gallery(vectors, labels, latents=None):
    sources = [Source(f"s{i}", g, a, {"e": _unit(v)}, latent=None if latents is None else _unit(latents[i]))
               for i, (v, (g, a)) in enumerate(zip(vectors, labels))]
    return SourceGallery(sources, np.zeros((len(sources), 224, 224, 3), np.uint8))


def test_step1_estimates_gender_and_age_and_keeps_to_them():
    rng = np.random.default_rng(1)
    centre = {lab: rng.normal(size=16) for lab in LABELS4}
    vecs, labs = [], []
    for lab in LABELS4:
        for _ in range(4):
            vecs.append(centre[lab] + 0.2 * rng.normal(size=16))
            labs.append(lab)
    a = SourceAssigner(_gallery(vecs, labs), "e", AssignConfig(margin=0.999))
    for lab in LABELS4:
        est = a.estimate(_unit(centre[lab]))
        assert (est.gender.value, est.age_group.value) == lab and est.required == lab and est.unsure == []
        got = a.assign(_unit(centre[lab]), key=1)
        assert (got.source.gender, got.source.age_group) == lab and got.basis == "embedding" and got.group == group_name(lab)
    # known attributes replace the estimate
    got = a.assign(_unit(centre[("female", "young")]), key=1, attributes=PersonAttributes.given("male", "older"))
    assert (got.source.gender, got.source.age_group) == ("male", "older") and got.basis == "attributes"


def test_step2_draws_among_the_least_similar_and_is_deterministic():
    z = _unit(np.eye(8)[0])
    # s0..s5 with decreasing similarity to z: cos = 0.8, 0.6, 0.4, 0.2, 0.0, -0.2
    vecs = [_unit(np.r_[c, np.sqrt(1 - c * c), np.zeros(6)]) for c in (0.8, 0.6, 0.4, 0.2, 0.0, -0.2)]
    a = SourceAssigner(_gallery(vecs, [("male", "young")] * 6), "e", AssignConfig(pool=0.34, margin=0.9))
    picks = {a.assign(z, key=k).source.id for k in range(40)}
    assert picks == {"s4", "s5"}  # the least similar third, nothing else
    assert [a.assign(z, key=k).source.id for k in range(10)] == [a.assign(z, key=k).source.id for k in range(10)]
    b = SourceAssigner(a.gallery, "e", AssignConfig(pool=0.34, margin=0.9, seed=1))
    assert [a.assign(z, key=k).source.id for k in range(20)] != [b.assign(z, key=k).source.id for k in range(20)]


def test_candidates_too_close_to_z_or_to_minus_z_are_rejected():
    z = _unit(np.eye(8)[0])
    near, anti, ok = _unit(np.r_[0.95, 0.3122, np.zeros(6)]), _unit(np.r_[-0.95, 0.3122, np.zeros(6)]), _unit(np.eye(8)[2])
    a = SourceAssigner(_gallery([near, anti, ok], [("female", "older")] * 3), "e", AssignConfig(pool=1.0, margin=0.5))
    assert {a.assign(z, key=k).source.id for k in range(20)} == {"s2"}
    # the same rule in SimSwap's latent space, when the query's latent is known
    lat = [np.eye(8)[3], np.eye(8)[4], -np.eye(8)[5]]
    b = SourceAssigner(_gallery([ok, ok, ok], [("female", "older")] * 3, latents=lat), "e",
                       AssignConfig(pool=1.0, margin=0.5, latent_margin=0.3))
    zl = _unit(np.eye(8)[5])
    assert {b.assign(z, key=k, z_latent=zl).source.id for k in range(20)} == {"s0", "s1"}


def test_sources_in_use_are_excluded_and_a_synthetic_identity_fills_the_gap():
    z = _unit(np.eye(8)[0])
    vecs = [np.eye(8)[i] for i in (1, 2, 3)]
    a = SourceAssigner(_gallery(vecs, [("male", "older")] * 3), "e", AssignConfig(margin=0.9))
    got = a.assign(z, key=0, exclude={"s0", "s1", "s2"})
    assert got.source.synthetic and got.source.id.startswith("mix:") and len(got.source.members) == 2
    assert np.isclose(np.linalg.norm(got.source.embeddings["e"]), 1.0)
    assert a.source(got.source.id) is got.source  # the swapper finds it by id
    # a mix that would sit too close to z is not used either
    near = [_unit(np.r_[0.8, 0.6, 0, 0, 0, 0, 0, 0]), _unit(np.r_[0.8, -0.6, 0, 0, 0, 0, 0, 0])]
    b = SourceAssigner(_gallery(near, [("male", "older")] * 2), "e", AssignConfig(margin=0.9))
    assert b.assign(z, key=0, exclude={"s0", "s1"}) is None  # their mean is z itself


def test_identity_config_and_run_config_validate():
    with pytest.raises(ValueError, match="valid: video, fleet, random"):
        IdentityConfig(scope="global")
    with pytest.raises(ValueError, match="--person-registry"):
        RunConfig(identity=IdentityConfig(scope="fleet"))


# ---- gallery files ---------------------------------------------------------------------------

def test_gallery_build_merges_an_identity_s_photos_and_round_trips(tmp_path):
    import cv2
    from skimage import data

    folder = tmp_path / "photos"
    folder.mkdir()
    astro = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
    cv2.imwrite(str(folder / "a1.png"), astro)
    cv2.imwrite(str(folder / "a2.png"), cv2.resize(astro, (400, 400)))
    cv2.imwrite(str(folder / "a3.png"), astro)  # the same pixels as a1: skipped
    cv2.imwrite(str(folder / "m1.png"), np.ascontiguousarray(astro[:, ::-1]))
    (folder / "labels.csv").write_text(
        "file,identity,gender,age_group\na1.png,astro,female,older\na2.png,astro,female,young\n"
        "a3.png,astro,female,young\nm1.png,mirror,female,older\n")
    res = run_cli("gallery", "build", folder, "--labels", folder / "labels.csv", "-o", tmp_path / "g.npz")
    assert res.returncode == 0, res.stderr
    assert "copy of a1.png" in res.stderr and "conflicting labels" in res.stderr
    g = SourceGallery.load(str(tmp_path / "g.npz"))
    assert g.ids == ["astro", "mirror"]
    astro_src = g.sources[0]
    assert astro_src.files == ["a1.png", "a2.png"] and astro_src.age_group == "older"  # tie → first row
    assert g.embedders == ["dlib"] and g.matrix("dlib").shape == (2, 128) and g.crops.shape == (2, 224, 224, 3)
    assert np.allclose(np.linalg.norm(g.matrix("dlib"), axis=1), 1.0, atol=1e-5)
    with np.load(tmp_path / "g.npz", allow_pickle=False) as z:  # loads without pickle
        assert "meta" in z.files
    show = run_cli("gallery", "show", tmp_path / "g.npz")
    assert show.returncode == 0 and "astro: female, older; 2 photo(s)" in show.stdout


@pytest.mark.parametrize("content, message", [
    ("file,identity\nx.png,a\n", "needs columns"),
    ("file,identity,gender,age_group\nx.png,a,robot,young\n", "line 2: gender must be"),
    ("file,identity,gender,age_group\nmissing.png,a,male,young\n", "line 2: missing.png not found"),
])
def test_gallery_build_rejects_bad_labels_with_exit_2(tmp_path, content, message):
    import cv2
    from skimage import data

    (tmp_path / "x.png").write_bytes(cv2.imencode(".png", data.astronaut())[1].tobytes())
    (tmp_path / "l.csv").write_text(content)
    res = run_cli("gallery", "build", tmp_path, "--labels", tmp_path / "l.csv", "-o", tmp_path / "g.npz")
    assert res.returncode == 2 and message in res.stderr and res.stderr.count("\n") == 1
    assert not (tmp_path / "g.npz").exists()


def test_a_video_given_as_the_gallery_is_refused_in_one_line(tmp_path, synthetic):
    res = run_cli(synthetic.path, "-o", tmp_path / "o.mp4", "--mode", "blur", "--gallery", synthetic.path)
    assert res.returncode == 2 and res.stderr.count("\n") == 1, res.stderr
    assert "not an anonswap gallery file (not an .npz archive" in res.stderr and "pickle" not in res.stderr
    assert not (tmp_path / "o.mp4").exists()


def _rewrite(src, dst, edit):
    """The npz at `src` with its header and arrays changed by `edit(meta, arrays)`."""
    with np.load(src, allow_pickle=False) as z:
        meta, arrays = json.loads(bytes(z["meta"]).decode()), {k: z[k] for k in z.files if k != "meta"}
    meta = edit(meta, arrays)
    np.savez(dst, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8), **arrays)
    return dst


@pytest.mark.parametrize("edit, message", [
    (lambda m, a: [m], "a JSON list header"),
    (lambda m, a: {k: v for k, v in m.items() if k != "identities"}, "'identities' is missing"),
    (lambda m, a: (a.pop("crops"), m)[1], "array 'crops' is missing"),
    (lambda m, a: a.update(emb_dlib=a["emb_dlib"][:, :64]) or m, "dlib vectors have 64 values, the dlib embedder gives 128"),
    (lambda m, a: a.update(emb_dlib=a["emb_dlib"][:2]) or m, "array 'emb_dlib' is float32 2×128, expected float 4×N"),
    (lambda m, a: {**m, "identities": [{**i, "gender": "robot"} for i in m["identities"]]}, "has gender 'robot'"),
    (lambda m, a: a.update(emb_dlib=a["emb_dlib"] * np.nan) or m, "NaN"),
])
def test_a_gallery_with_the_right_header_and_bad_content_is_refused_on_open(tmp_path, gallery4, edit, message):
    """Checked whole on open: these were an AttributeError/KeyError, or a stage error mid-run."""
    from engines.embedders.base import FaceEmbedder
    from pipeline.core.errors import InvalidInputError

    class Dlib128(FaceEmbedder):  # the dlib embedder's name and size, without loading dlib
        name, dim = "dlib", 128

        def embed(self, image, landmarks):
            raise AssertionError("never called")

    bad = _rewrite(gallery4, tmp_path / "bad.npz", edit)
    with pytest.raises(InvalidInputError, match=message.replace("(", r"\(")):
        SourceGallery.open(str(bad), None, [Dlib128()])


def test_a_damaged_person_registry_is_refused_and_no_lock_file_is_left(tmp_path):
    from pipeline.core.errors import InvalidInputError

    path = str(tmp_path / "r.npz")
    reg = PersonRegistry("dlib", 0.9)
    p = reg.new(0)
    p.add(_unit(np.ones(128)), 1.0)
    p.source_id = "src_a"
    reg.save(path, "fp")
    assert sorted(x.name for x in tmp_path.iterdir()) == ["r.npz"], "the merge lock is removed"
    assert len(PersonRegistry.load(path, "dlib", 0.9, "fp", dim=128).persons) == 1
    with pytest.raises(InvalidInputError, match="its vectors have 128 values, the dlib embedder gives 512"):
        PersonRegistry.load(path, "dlib", 0.9, "fp", dim=512)
    _rewrite(path, path, lambda m, a: {**m, "persons": [{**q, "weight": "heavy"} for q in m["persons"]]})
    with pytest.raises(InvalidInputError, match=r"persons\[0\].'weight' is str"):
        PersonRegistry.load(path, "dlib", 0.9, "fp")


def test_concurrent_fleet_runs_merge_into_the_registry(tmp_path):
    """Two fleet workers start from the same registry and save one after the other: the file
    keeps both runs' persons, one person seen by both stays one, and samples add up."""
    path, fp = str(tmp_path / "r.npz"), "gallery-fp"
    rng = np.random.default_rng(0)
    known, shared, only_a, only_b = (_unit(rng.normal(size=128)) for _ in range(4))
    seed = PersonRegistry("dlib", 0.9)
    p = seed.new(0)
    p.add(known, 1.0)
    p.source_id = "src_known"
    seed.save(path, fp)

    runs = [PersonRegistry.load(path, "dlib", 0.9, fp) for _ in range(2)]  # both read before either saves
    for run, own, src in ((runs[0], only_a, "src_a"), (runs[1], only_b, "src_b")):
        run.persons[0].add(known, 2.0)  # the registry person seen again
        for z, sid in ((shared, f"{src}_shared"), (own, src)):
            q = run.new(5)
            q.add(z, 1.0)
            q.source_id = sid
    for run in runs:
        run.save(path, fp)

    final = PersonRegistry.load(path, "dlib", 0.9, fp)
    by_source = {q.source_id: q for q in final.persons}
    assert set(by_source) == {"src_known", "src_a_shared", "src_a", "src_b"}  # b's shared person merged into a's
    assert by_source["src_known"].weight == pytest.approx(5.0)  # 1 loaded + 2 + 2
    assert by_source["src_a_shared"].weight == pytest.approx(2.0)
    assert len({q.id for q in final.persons}) == 4
    assert float(by_source["src_known"].embedding @ known) > 0.999
