"""The built-in task, teacher and strategies: exact strings, determinism, filter counts."""

import hashlib
import json
import re

import pytest

from harness.answers import extract, is_correct
from harness.types import GradedGeneration, TrainingExample
from harness_builtins.strategy_fine_tune_cot import Config as FtcConfig
from harness_builtins.strategy_fine_tune_cot import FineTuneCoT
from harness_builtins.strategy_vanilla import Config as VanillaConfig
from harness_builtins.strategy_vanilla import Vanilla
from harness_builtins.task_synthetic import Config as TaskConfig
from harness_builtins.task_synthetic import SyntheticArithmetic
from harness_builtins.teacher_program import Config as TeacherConfig
from harness_builtins.teacher_program import ProgramTeacher


@pytest.fixture(scope="module")
def splits():
    return SyntheticArithmetic(TaskConfig(train_size=400, validation_size=20, test_size=50)).load()


def test_task_is_deterministic_and_splits_are_disjoint(splits):
    again = SyntheticArithmetic(TaskConfig(train_size=400, validation_size=20, test_size=50)).load()
    assert {k: list(v) for k, v in splits.items()} == {k: list(v) for k, v in again.items()}
    assert {k: len(v) for k, v in splits.items()} == {"train": 400, "validation": 20, "test": 50}
    questions = [{e.question for e in split} for split in splits.values()]
    assert sum(len(q) for q in questions) == 470  # no duplicates within or across splits
    other_seed = SyntheticArithmetic(TaskConfig(train_size=400, validation_size=20, test_size=50, seed=1)).load()
    assert other_seed["test"] != splits["test"]


def _stream_digest(config: TaskConfig) -> str:
    h = hashlib.sha256()
    for name, split in SyntheticArithmetic(config).load().items():
        for e in split:
            h.update(json.dumps([name, e.id, e.question, e.answer, e.rationale,
                                 [[s.question, s.answer] for s in e.steps], e.meta], sort_keys=True).encode())
    return h.hexdigest()[:16]


def test_the_generated_problems_stay_the_same_from_release_to_release():
    """Committed results name a seed, not their problems: the stream a seed gives is pinned (a faster generator
    must draw the same numbers in the same order)."""
    assert _stream_digest(TaskConfig(train_size=2000, validation_size=20, test_size=50)) == "27b9e4b80a412730"
    assert _stream_digest(TaskConfig(train_size=300, validation_size=0, test_size=10, seed=7, min_ops=1, max_ops=6,
                                     max_start=5, max_operand=3, max_value=12)) == "8538418a84344cd1"


def test_growing_train_keeps_test_fixed(splits):
    bigger = SyntheticArithmetic(TaskConfig(train_size=800, validation_size=20, test_size=50)).load()
    assert bigger["test"] == splits["test"] and bigger["validation"] == splits["validation"]


def test_problems_stay_in_range_and_answers_are_exact(splits):
    for e in [*splits["train"], *splits["test"]]:
        ops = e.meta["ops"]
        assert 2 <= len(ops) <= 4 and 1 <= e.meta["start"] <= 20
        value = e.meta["start"]
        for o in ops:
            assert o["before"] == value
            value = {"add": value + o["x"], "sub": value - o["x"], "double": value * 2}[o["op"]]
            assert o["after"] == value and 0 <= value <= 99
            assert o["op"] == "double" or 1 <= o["x"] <= 9
        assert e.answer == str(value)
        assert e.question.endswith("?")


def test_program_teacher_greedy_rationale_is_correct_and_exact(splits):
    teacher = ProgramTeacher(TeacherConfig())
    done = []
    gens = teacher.generate(splits["train"][:50], None, done.append)
    assert len(done) == 50 and all(len(g) == 1 for g in gens)
    e, g = splits["train"][0], gens[0][0]
    expected = " ".join(f"{o['before']} {dict(add='+', sub='-', double='*')[o['op']]} {o['x']} = {o['after']}."
                        for o in e.meta["ops"])
    assert g.rationale == expected and g.answer_text == e.answer and g.meta["phrasing"] == "equations"
    assert len(g.steps) == len(e.meta["ops"])
    for e, (g,) in zip(splits["train"][:50], gens):
        # the rationale itself ends in the answer, and the answer text is right
        assert re.findall(r"\d+", g.rationale)[-1] == e.answer == g.answer_text


def test_program_teacher_diverse_samples_are_stable_and_varied(splits):
    teacher = ProgramTeacher(TeacherConfig(samples=4, temperature=0.7))
    first = teacher.generate(splits["train"][:30], None, lambda n: None)
    again = teacher.generate(splits["train"][:30], None, lambda n: None)
    assert first == again
    assert [g.sample_index for g in first[0]] == [0, 1, 2, 3]
    phrasings = {g.meta["phrasing"] for gens in first for g in gens}
    assert phrasings == {"equations", "narrative", "words"}


def test_program_teacher_error_rate_makes_wrong_answers(splits):
    teacher = ProgramTeacher(TeacherConfig(error_rate=0.5))
    gens = teacher.generate(splits["train"], None, lambda n: None)
    wrong = sum(g[0].answer_text != e.answer for e, g in zip(splits["train"], gens))
    slipped = sum(g[0].meta["slipped"] for g in gens)
    assert wrong == slipped and 150 < wrong < 250


def graded_for(examples, teacher):
    gens = teacher.generate(examples, None, lambda n: None)
    spec = SyntheticArithmetic.answer
    return {e.id: [GradedGeneration(g, p := extract(g.answer_text, spec, None), is_correct(p, e.answer, spec))
                   for g in gs] for e, gs in zip(examples, gens)}


def test_vanilla_format(splits):
    e = splits["train"][0]
    rows = Vanilla(VanillaConfig()).build([e], {}, None)
    assert rows == [TrainingExample(e.id, f"{e.question} ###", f" {e.answer}")]


def test_fine_tune_cot_token_format(splits):
    e = splits["train"][0]
    graded = graded_for([e], ProgramTeacher(TeacherConfig()))
    strategy = FineTuneCoT(FtcConfig())
    (row,) = strategy.build([e], graded, None)
    assert row.prompt == f"{e.question} ###"
    assert row.target == f" {graded[e.id][0].generation.rationale} --> {e.answer}"
    assert strategy.prediction_prefix == "-->" and strategy.stop() == ["###"]


def test_fine_tune_cot_natural_format(splits):
    e = splits["train"][0]
    graded = graded_for([e], ProgramTeacher(TeacherConfig()))
    (row,) = FineTuneCoT(FtcConfig(format="natural")).build([e], graded, None)
    assert row.prompt == f"Q: {e.question}\n\nA: Let's think step by step.\n\n"
    assert row.target == f" {graded[e.id][0].generation.rationale}\n\nTherefore, the answer is {e.answer}"


def test_fine_tune_cot_filter_counts(splits):
    examples = splits["train"]
    graded = graded_for(examples, ProgramTeacher(TeacherConfig(samples=2, temperature=1.0, error_rate=0.3)))
    correct = sum(g.correct for gs in graded.values() for g in gs)
    assert 0 < correct < 800
    assert len(FineTuneCoT(FtcConfig()).build(examples, graded, None)) == correct
    assert len(FineTuneCoT(FtcConfig(filter=False)).build(examples, graded, None)) == 800
    assert len(FineTuneCoT(FtcConfig(filter=False, max_samples=1)).build(examples, graded, None)) == 400


def test_gold_teacher_gives_the_tasks_own_rationales_and_steps():
    from harness.types import Example, SubStep
    from harness_builtins.teacher_gold import Config, GoldTeacher

    examples = [Example("a", "q1", "24", rationale="48/2 = <<48/2=24>>24 each.\nSo 24.",
                        steps=(SubStep("How many each?", "48/2 = 24"),)),
                Example("b", "q2", "3")]
    ticks = []
    (a,), (b,) = GoldTeacher(Config()).generate(examples, None, ticks.append)
    assert (a.rationale, a.answer_text, a.steps) == ("48/2 = <<48/2=24>>24 each. So 24.", "24", examples[0].steps)
    assert b.meta == {"missing": True} and b.answer_text == "" and len(ticks) == 2
    (a,), _ = GoldTeacher(Config(strip_calculations=True)).generate(examples, None, ticks.append)
    assert a.rationale == "48/2 = 24 each. So 24."
