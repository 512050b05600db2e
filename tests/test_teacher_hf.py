"""The hf teacher: a local transformers model, batched sampling, the shared prompts and cache."""

import pytest

from harness import TeacherUsage
from harness.errors import BadInputError
from harness_builtins.task_synthetic import Config as TaskConfig
from harness_builtins.task_synthetic import SyntheticArithmetic
from harness_builtins.teacher_hf import Config, HFTeacher

TASK = SyntheticArithmetic(TaskConfig(train_size=5, validation_size=0, test_size=1))
EXAMPLES = TASK.load()["train"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from .conftest import tiny_causal_lm

    return tiny_causal_lm(tmp_path_factory.mktemp("teacher") / "tiny",
                          [e.question for e in EXAMPLES] + ["Let's think step by step. Therefore, the answer"])


def test_sampling_batches_and_cache(model_dir, tmp_path):
    options = dict(model=str(model_dir), samples=3, temperature=1.0, max_tokens=6, answer_max_tokens=3,
                   batch_size=2, cache_dir=str(tmp_path))
    t = HFTeacher(Config(**options))
    ticks = []
    out = t.generate(EXAMPLES, TASK, ticks.append)
    assert len(ticks) == 5 and [[g.sample_index for g in gens] for gens in out] == [[0, 1, 2]] * 5
    assert all(g.rationale and g.answer_text is not None for gens in out for g in gens)
    assert len({g.rationale for gens in out for g in gens}) > 5  # sampling varies
    assert t.usage().requests == 5 + 15  # stage-1 prompts, then one answer prompt per sample
    again = HFTeacher(Config(**options))
    assert again.generate(EXAMPLES, TASK, lambda n: None) == out
    assert again.usage().as_dict() | {"cached": 0} == TeacherUsage().as_dict()  # no model loaded (no placement)
    assert again.usage().cached == 30


def test_greedy_is_deterministic(model_dir, tmp_path):
    t = HFTeacher(Config(model=str(model_dir), samples=2, max_tokens=5, answer_max_tokens=2, cache_dir=str(tmp_path)))
    out = t.generate(EXAMPLES[:2], TASK, lambda n: None)
    assert out[0][0].rationale == out[0][1].rationale


def test_unloadable_model(tmp_path):
    with pytest.raises(BadInputError, match="teacher.model: cannot load"):
        HFTeacher(Config(model=str(tmp_path / "none"), cache_dir=str(tmp_path))).generate(EXAMPLES, TASK, print)
