"""Privacy gates: the audit's numbers per clip may not get worse than benchmarks/baselines.json.

norfair's MOTA gate, for privacy: each case of benchmarks/quality_gates.py (the real pipeline
on a clip, then the audit of its output with the run's boxes file) is measured by the same
functions the command uses, and its leaks, suspects, re-ID and ¬ID may only stay or fall,
the faces the audit sees only stay or rise. The numbers are compared exactly: every input is
fixed (seeds, sizes, dlib as the recognizer, an empty model cache), so the same code and
libraries give the same numbers (two runs here: identical, down to the leak frames), and one
more leak is one more face shown. A change in a library's version can move them too: the
baseline records the versions it was taken with. After a change that improves the numbers,
refresh the baseline (README, *Privacy audit*):

    python benchmarks/quality_gates.py --write-baselines

The swap case (random SimSwap weights) is left to that command: see its note in CASES.
"""

import copy
import sys

import pytest

from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
import quality_gates as qg  # noqa: E402

BASELINE = qg.load_baselines()
TESTED = [c for c in qg.CASES if c.in_tests]


def test_every_case_has_a_baseline_taken_with_its_settings():
    assert set(BASELINE["cases"]) == {c.name for c in qg.CASES}, f"refresh: {qg.COMMAND} --write-baselines"
    for c in qg.CASES:
        b = BASELINE["cases"][c.name]
        assert (b["clip"], b["settings"]["every"], b["settings"]["recognizer"]) == (c.clip, c.every, "dlib"), c.name
        # judged by the detector the audit picks for a default run (one the run does not use); a
        # new default detector changes that choice, and the baseline must be taken again
        from pipeline.audit.leak_detector import choose, models_of
        from pipeline.run.config import RunConfig

        assert b["settings"]["leak_detector"] == choose(qg.LEAK_DETECTOR, models_of(RunConfig().detector)), c.name


@pytest.mark.parametrize("case", TESTED, ids=[c.name for c in TESTED])
def test_privacy_numbers_are_no_worse_than_the_baseline(case, quality_gate):
    numbers, _ = quality_gate(case.name)
    assert qg.worse_than_baseline(numbers, BASELINE["cases"][case.name]) == []


def test_the_comparison_fails_on_one_more_leak_and_passes_on_one_fewer():
    base = {"case": "c", "settings": {"every": 3}, "leaks": 2, "suspects": 5, "reid_rate": 0.05,
            "negated_reid_rate": 0.0, "detector_faces": 100, "faces": 50}

    def changed(**kw):
        m = copy.deepcopy(base)
        m.update(kw)
        return m

    assert qg.worse_than_baseline(changed(), base) == []
    cases = [  # (change, gates that must fail)
        (dict(leaks=3), ["leaks"]),
        (dict(suspects=6, reid_rate=0.0501), ["suspects", "reid_rate"]),
        (dict(negated_reid_rate=0.01), ["negated_reid_rate"]),
        (dict(detector_faces=99), ["detector_faces"]),  # an audit that sees less is no improvement
        (dict(faces=49), ["faces"]),
        (dict(reid_rate=None), ["reid_rate"]),  # nothing embedded any more
    ]
    for change, failing in cases:
        worse = qg.worse_than_baseline(changed(**change), base)
        assert [w.split()[1] for w in worse] == failing, (change, worse)
    better = changed(leaks=0, suspects=1, detector_faces=120)
    assert qg.worse_than_baseline(better, base) == []
    assert len(qg.better_than_baseline(better, base)) == 3
    (msg,) = qg.worse_than_baseline(changed(settings={"every": 1}), base)
    assert "--write-baselines" in msg
