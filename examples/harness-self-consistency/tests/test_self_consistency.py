from harness_self_consistency import Config, SelfConsistency, vote

from harness import AnswerSpec, Example, Generation, GradedGeneration

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


def test_label_smoothing_is_a_loss_plugged_in_from_this_package():
    import math
    from types import SimpleNamespace

    import torch
    from harness_self_consistency import LabelSmoothing

    assert SelfConsistency(Config()).objective() is None  # cross-entropy unless asked
    logits = torch.tensor([[[1.0, 2.0, 0.0], [0.0, 0.0, 0.0]]])
    labels = torch.tensor([[-100, 1]])
    outputs = SimpleNamespace(logits=logits, loss=torch.tensor(0.4))
    loss = LabelSmoothing(0.1).loss(outputs, labels, {"num_items": 1})
    uniform = -float(torch.log_softmax(logits[0, 0], -1).mean())
    assert math.isclose(float(loss), 0.9 * 0.4 + 0.1 * uniform, rel_tol=1e-6)
