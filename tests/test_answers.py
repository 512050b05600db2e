import pytest

from harness.answers import candidates, extract, is_correct, process_results_for, score
from harness.types import AnswerSpec

NUM = AnswerSpec("number")
NUMSTR = AnswerSpec("number_string")
CHOICE = AnswerSpec("choice", choices="ABCDE")
YESNO = AnswerSpec("yesno")
TEXT = AnswerSpec("text")


@pytest.mark.parametrize("text, spec, prefix, expected", [
    # the prefix occurs: first candidate after it
    ("3 + 4 = 7. 7 * 2 = 14. --> 14", NUM, "-->", "14"),
    ("2 then --> 5 and 6", NUM, "-->", "5"),
    # prefix defined but missing: last candidate of the whole text
    ("3 + 4 = 7. 7 * 2 = 14.", NUM, "-->", "14"),
    # no prefix defined: first candidate
    (" 12 apples, then 13", NUM, None, "12"),
    # commas in numbers, negatives, decimals, trailing period
    ("--> 1,234.", NUMSTR, "-->", "1234"),
    ("--> -5", NUM, "-->", "-5"),
    ("--> 2.50.", NUM, "-->", "2.50"),
    ("Therefore, the answer is 42.", NUM, "Therefore, the answer is", "42"),
    # prefix present but nothing after it
    ("7 --> ", NUM, "-->", None),
    ("no numbers here", NUM, None, None),
    # multiple choice letters
    ("The answer is (B) because A is wrong --> C", CHOICE, "-->", "C"),
    ("so (D)", CHOICE, None, "D"),
    # yes/no with punctuation and case
    ("--> Yes.", YESNO, "-->", "yes"),
    ("It is not, so: no, --> ", YESNO, "-->", None),
    ("maybe... Yes, no", YESNO, None, "yes"),
    ("'yes'\n", YESNO, "-->", "yes"),
    # text answers: quotes, periods, newlines and all whitespace removed
    (' "ab". ', TEXT, None, "ab"),
    ('"n a o a".', TEXT, None, "naoa"),
])
def test_extract(text, spec, prefix, expected):
    assert extract(text, spec, prefix) == expected


@pytest.mark.parametrize("pred, gold, spec, ok", [
    ("14", "14", NUM, True),
    ("14.0", "14", NUM, True),
    ("14.0000001", "14", NUM, True),
    ("14.01", "14", NUM, False),
    ("1234", "1,234", NUM, True),
    ("14.0", "14", NUMSTR, False),
    ("1234", "1,234", NUMSTR, True),
    ("yes", "Yes", YESNO, True),
    ("B", "B", CHOICE, True),
    (None, "3", NUM, False),
])
def test_is_correct(pred, gold, spec, ok):
    assert is_correct(pred, gold, spec) is ok


def test_score_reports_all_three_metrics():
    assert score("5 + 3 = 8. --> 9", "8", NUM, "-->") == {"acc": 0.0, "contains_answer": 1.0, "correct_format": 1.0}
    assert score("5 + 3 = 8.", "8", NUM, "-->") == {"acc": 1.0, "contains_answer": 1.0, "correct_format": 0.0}
    assert score("8", "8", NUM, None) == {"acc": 1.0, "contains_answer": 1.0, "correct_format": 1.0}


def test_process_results_for_lm_eval():
    fn = process_results_for("number", "", "-->")
    assert fn({"answer": "12"}, [" 6 * 2 = 12. --> 12"]) == {"acc": 1.0, "contains_answer": 1.0,
                                                             "correct_format": 1.0}


def test_candidates_unknown_kind():
    with pytest.raises(ValueError, match="unknown answer kind 'bogus'"):
        candidates("x", AnswerSpec("bogus"))
