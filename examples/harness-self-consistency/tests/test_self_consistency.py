from harness import AnswerSpec, Example, Generation, GradedGeneration
from harness_self_consistency import Config, SelfConsistency, vote

SPEC = AnswerSpec("number")


def test_majority_vote():
    outputs = [" 2 + 2 = 5. --> 5", " 2 + 2 = 4. --> 4", " 4. --> 4", " --> 5", " 2 * 2 = 4 --> 4"]
    assert vote(outputs, SPEC) == " 2 + 2 = 4. --> 4"
    assert vote([" --> 7", " --> 8"], SPEC) == " --> 7"  # a tie: the earliest answer
    assert vote([" no answer"], SPEC) == " no answer"


def test_training_pairs_are_fine_tune_cot():
    e = Example("q1", "What is 2 + 2?", "4")
    good = GradedGeneration(Generation("q1", 0, "2 + 2 = 4.", "4"), "4", True)
    bad = GradedGeneration(Generation("q1", 1, "2 + 2 = 5.", "5"), "5", False)
    rows = SelfConsistency(Config()).build([e], {"q1": [good, bad]}, None)
    assert [(r.prompt, r.target) for r in rows] == [("What is 2 + 2? ###", " 2 + 2 = 4. --> 4")]
    assert Config(k=0).check() == [("k", "must be at least 1")]


def test_runs_end_to_end_through_the_harness(tmp_path):
    """The same test passes with the package installed (its entry point registers it) and uninstalled (only
    plugin_registered does)."""
    import json

    import harness_self_consistency
    from harness.cli import main
    from harness.testing import plugin_registered, tiny_recipe

    recipe = tiny_recipe(tmp_path, 'kind = "self_consistency"\nk = 2', steps=5, path=tmp_path / "r.toml",
                         overrides=['teacher={ kind = "fake", rationale = "I count." }', "evaluation.max_gen_toks=16"])
    with plugin_registered(harness_self_consistency):
        assert main(["run", str(recipe)]) == 0
    summary = json.loads((tmp_path / "runs" / "tiny" / "summary.json").read_text())
    assert summary["self_consistency"]["n"] == 8
