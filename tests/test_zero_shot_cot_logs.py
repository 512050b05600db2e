"""The recorded GPT-3 Zero-shot-CoT logs: parsing every record, and reproducing each log's accuracy."""

import os
from pathlib import Path

import pytest

from harness.answers import extract, is_correct
from harness.errors import DataError
from harness.types import AnswerSpec
from harness_builtins.teacher_recorded.logs import LOG_NAMES, parse_log

DATA = Path(os.environ.get("HARNESS_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data"))
LOGS = DATA / "zero_shot_cot" / "log"
pytestmark = pytest.mark.skipif(not LOGS.is_dir(), reason=f"no Zero-shot-CoT logs at {LOGS} (set HARNESS_DATA_DIR)")

SPECS = {"addsub": AnswerSpec("number"), "aqua": AnswerSpec("choice", "ABCDE"), "coin_flip": AnswerSpec("yesno"),
         "commonsense_qa": AnswerSpec("choice", "ABCDE"), "date_understanding": AnswerSpec("choice", "ABCDEF"),
         "gsm8k": AnswerSpec("number_string"), "last_letter_concatenation": AnswerSpec("text"),
         "multiarith": AnswerSpec("number_string"), "tracking_shuffled_objects": AnswerSpec("choice", "ABC"),
         "single_eq": AnswerSpec("number"), "strategy_qa": AnswerSpec("yesno"), "svamp": AnswerSpec("number")}
SIZES = {"addsub": 395, "aqua": 254, "coin_flip": 500, "commonsense_qa": 1221, "date_understanding": 369,
         "gsm8k": 1319, "last_letter_concatenation": 500, "multiarith": 600, "tracking_shuffled_objects": 750,
         "single_eq": 508, "strategy_qa": 2290, "svamp": 1000}


@pytest.mark.parametrize("task", sorted(LOG_NAMES))
def test_every_record_parses_and_the_accuracy_reproduces(task):
    log = parse_log(LOGS / f"{LOG_NAMES[task]}_zero_shot_cot.log")
    assert len(log.records) == SIZES[task]
    assert all(r.question and r.rationale and r.gold for r in log.records)
    spec = SPECS[task]
    predictions = [extract(r.answer_step, spec, None) for r in log.records]
    # The harness's answer cleansing, compared with the logged gold as the log compared (strings), reproduces
    # every log's reported accuracy (in fact to the hundredth of a point).
    as_logged = 100 * sum(p is not None and p == r.gold for p, r in zip(predictions, log.records)) / len(log.records)
    assert as_logged == pytest.approx(log.reported_accuracy, abs=0.01)
    verdicts = [is_correct(p, r.gold, spec) for p, r in zip(predictions, log.records)]
    accuracy = 100 * sum(verdicts) / len(verdicts)
    if task in ("addsub", "single_eq"):
        # The harness's scoring (REFERENCE's rule for these: floats within 1e-6) differs from the log's string
        # comparison only where a right answer has another float representation than the gold.
        disagree = [r for r, ok in zip(log.records, verdicts) if ok != (r.prediction == r.gold)]
        assert disagree and all(r.prediction != r.gold and abs(float(r.prediction) - float(r.gold)) < 1e-6
                                for r in disagree)
        assert accuracy - 100 * len(disagree) / len(verdicts) == pytest.approx(log.reported_accuracy, abs=0.5)
    else:
        assert accuracy == pytest.approx(log.reported_accuracy, abs=0.5)


def test_trigger_repeated_inside_the_answer_step():
    # AQuA record 193: the stage-2 completion itself continues with the trigger
    log = parse_log(LOGS / "aqua_zero_shot_cot.log")
    r = log.records[192]
    assert r.rationale.endswith("Therefore, it would take Mr.Sam a total of (")
    assert r.answer_step.startswith("E.") and r.prediction == "E" and r.gold == "E"


def test_malformed_log_names_the_file_and_record(tmp_path):
    bad = tmp_path / "x_zero_shot_cot.log"
    bad.write_text("Namespace(direct_answer_trigger='\\nTherefore, the answer is')\n*************************\n"
                   "1st data\nQ: what?\nGT : 3\n*************************\n")
    with pytest.raises(DataError, match=r"x_zero_shot_cot.log: record 1 is malformed"):
        parse_log(bad)
    with pytest.raises(DataError, match=r"cannot read the Zero-shot-CoT log"):
        parse_log(tmp_path / "missing.log")
