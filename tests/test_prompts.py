import os
from pathlib import Path

import pytest

from harness import prompts
from harness.errors import DataError
from harness.types import SubStep

DATA = Path(os.environ.get("HARNESS_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data"))


def test_zero_shot_cot_prompts_are_exact():
    assert prompts.zero_shot_stage1("What is 2+3?") == "Q: What is 2+3?\nA: Let's think step by step."
    assert prompts.zero_shot_stage2("What is 2+3?", " 2+3 is 5.", "Therefore, the answer (arabic numerals) is") == (
        "Q: What is 2+3?\nA: Let's think step by step. 2+3 is 5.\nTherefore, the answer (arabic numerals) is")


def test_few_shot_split():
    assert prompts.split_few_shot(" 2 + 3 = 5. The answer is 5.\n\nQ: next") == ("2 + 3 = 5.", "5.")
    assert prompts.split_few_shot(" no answer here") == ("no answer here", "")


def test_decomposition_parse():
    completion = ("Sub-question 1: How many after buying?\nAnswer 1: 5 + 3 = 8.\n"
                  "Sub-question 2: How many after giving?\nAnswer 2: 8 - 2 = 6.\nThe answer is 6.")
    steps, rationale, answer = prompts.parse_decomposition(completion)
    assert steps == (SubStep("How many after buying?", "5 + 3 = 8."), SubStep("How many after giving?", "8 - 2 = 6."))
    assert rationale == "5 + 3 = 8. 8 - 2 = 6." and answer == "6."
    assert prompts.decompose("Q?").endswith("Problem: Q?\n")


@pytest.mark.skipif(not (DATA / "reasoning-teacher").is_dir(), reason="no ../shared/data")
def test_few_shot_exemplars_from_the_fine_tune_cot_file(tmp_path):
    block = prompts.load_few_shot(DATA / "reasoning-teacher" / "data" / "few_shot_cot_prompts.json", "svamp")
    assert block.startswith("Q: ") and "The answer is" in block
    assert prompts.few_shot(block, "Q2?").endswith("\n\nQ: Q2?\nA:")
    with pytest.raises(DataError, match="no few-shot prompt for 'nope'"):
        prompts.load_few_shot(DATA / "reasoning-teacher" / "data" / "few_shot_cot_prompts.json", "nope")


def test_prompt_option_checks_shared_by_teachers():
    from harness_builtins.teacher_hf import Config as HFConfig
    from harness_builtins.teacher_openai import Config as OpenAIConfig

    assert OpenAIConfig(model="m", prompt="few_shot_cot", concurrency=0).check() == [
        ("few_shot_file", "few_shot_cot needs few_shot_file and few_shot_key"), ("concurrency", "must be at least 1")]
    assert HFConfig(model="m", prompt="chain").check() == [
        ("prompt", "'chain': choose from zero_shot_cot, few_shot_cot, decompose, fine_tune_cot, or a student format "
                   "the teacher should write in (token, natural, think)")]


def test_a_teacher_writes_in_any_student_format_and_is_read_back():
    from harness.prompts import STUDENT_FORMATS, StudentFormat, first_prompt, parse_first, register_format

    for name, fmt in STUDENT_FORMATS.items():
        assert first_prompt(name, "What is 2 + 3?") == fmt.render_prompt("What is 2 + 3?")
        completion = fmt.render_target("2 + 3 = 5.", "5") + (fmt.stop[0] + " next" if fmt.stop else "")
        assert parse_first(name, completion) == ("2 + 3 = 5.", "5", ()), name
    assert parse_first("fine_tune_cot", " 2 + 3 = 5. --> 5 ### Q") == ("2 + 3 = 5.", "5", ())
    mine = StudentFormat("Problem: {question}\nWork:", " {rationale}\nAnswer: {answer}", "Answer:", ("\n\n",))
    register_format("mine", mine)
    try:
        assert parse_first("mine", " 2 + 3 = 5.\nAnswer: 5\n\nProblem: x") == ("2 + 3 = 5.", "5", ())
        with pytest.raises(ValueError, match="registered already, differently"):
            register_format("mine", STUDENT_FORMATS["token"])
    finally:
        STUDENT_FORMATS.pop("mine")
