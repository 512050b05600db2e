"""Diverse reasoning, distilling step-by-step and Socratic CoT: exact formats, counts, inference loop."""


from harness.types import Generation, GradedGeneration, SubStep, TrainingExample
from harness_builtins.strategy_diverse import Config as DiverseConfig
from harness_builtins.strategy_diverse import DiverseReasoning
from harness_builtins.strategy_socratic import END, Socratic, socratic_lm_class
from harness_builtins.strategy_socratic import Config as SocraticConfig
from harness_builtins.strategy_step_by_step import Config as SbsConfig
from harness_builtins.strategy_step_by_step import StepByStep
from harness_builtins.task_synthetic import Config as TaskConfig
from harness_builtins.task_synthetic import SyntheticArithmetic

TASK = SyntheticArithmetic(TaskConfig(train_size=20, validation_size=0, test_size=1))
EXAMPLES = TASK.load()["train"]
E = EXAMPLES[0]


def graded(*items):
    """(rationale, correct[, steps]) -> GradedGeneration list with sample indices in order."""
    out = []
    for i, item in enumerate(items):
        rationale, correct, *steps = item
        gen = Generation(E.id, i, rationale, E.answer if correct else "-1", steps=tuple(steps[0]) if steps else ())
        out.append(GradedGeneration(gen, gen.answer_text, correct))
    return {E.id: out}


def test_diverse_reasoning_keeps_first_d_correct_distinct_rationales():
    gens = graded(("a", True), ("b", False), ("a", True), (" a ", True), ("c", True), ("d", True))
    s = DiverseReasoning(DiverseConfig(samples=5))
    rows = s.build([E], gens, TASK)
    assert [r.target for r in rows] == [f" a --> {E.answer}", f" c --> {E.answer}"]
    assert s.stats() == {"offered": 5, "wrong": 1, "duplicates": 2, "kept": 2}
    assert len(DiverseReasoning(DiverseConfig(samples=5, deduplicate=False)).build([E], gens, TASK)) == 4
    assert len(DiverseReasoning(DiverseConfig(samples=6, filter=False)).build([E], gens, TASK)) == 4


def test_step_by_step_pairs_and_weights():
    rows = StepByStep(SbsConfig(alpha=0.25)).build([E], graded(("wrong", False), ("right way", True)), TASK)
    assert rows == [TrainingExample(E.id, f"predict: {E.question} ###", f" {E.answer}", weight=0.5),
                    TrainingExample(E.id, f"explain: {E.question} ###", " right way", weight=1.5)]
    only_predict = StepByStep(SbsConfig()).build([E], graded(("wrong", False)), TASK)
    assert [r.prompt.split(":")[0] for r in only_predict] == ["predict"]
    assert StepByStep(SbsConfig()).prompt(E) == f"predict: {E.question} ###"


STEPS = [SubStep("How many after adding 7?", "19 + 7 = 26"), SubStep("How many after doubling?", "26 * 2 = 52")]


def test_socratic_two_model_formats():
    rows = Socratic(SocraticConfig()).build([E], graded(("r", True, STEPS)), TASK)
    q = E.question
    assert rows == [
        TrainingExample(E.id, f"{q} ### Q:", " How many after adding 7?", role="decomposer"),
        TrainingExample(E.id, f"{q} ### Q: How many after adding 7? A:", " 19 + 7 = 26", role="solver"),
        TrainingExample(E.id, f"{q} ### Q: How many after adding 7? Q:", " How many after doubling?", role="decomposer"),
        TrainingExample(E.id, f"{q} ### Q: How many after adding 7? A: 19 + 7 = 26 Q: How many after doubling? A:",
                        " 26 * 2 = 52", role="solver"),
        TrainingExample(E.id, f"{q} ### Q: How many after adding 7? Q: How many after doubling? Q:", f" {END}",
                        role="decomposer"),
    ]
    assert Socratic(SocraticConfig()).roles() == ("decomposer", "solver")


def test_socratic_unified_prefixes_and_sources():
    unified = Socratic(SocraticConfig(mode="unified"))
    rows = unified.build([E], graded(("r", True, STEPS)), TASK)
    assert unified.roles() == ("",) and {r.role for r in rows} == {""}
    assert rows[0].prompt == f"decompose: {E.question} ### Q:" and rows[1].prompt.startswith("solve: ")
    # wrong final answer: filtered; gold source: the example's own steps, with no teacher needed
    assert Socratic(SocraticConfig()).build([E], graded(("r", False, STEPS)), TASK) == []
    gold = Socratic(SocraticConfig(source="gold"))
    assert gold.uses_teacher is False and len(gold.build([E], {}, TASK)) == 2 * len(E.steps) + 1
    no_answers = E.__class__(id="x", question="q", answer="1", steps=(SubStep("sub?", ""),))
    assert gold.build([no_answers], {}, TASK) == []  # StrategyQA-style steps without answers cannot train a solver


class Scripted:
    """Stands in for a (model, tokenizer) role: answers prompts from a script, records what it was asked."""

    def __init__(self, script):
        self.script, self.asked = script, []


class ScriptedSocraticLM:
    """SocraticLM with _generate replaced by scripts, to test the loop itself."""

    @staticmethod
    def make(strategy, decomposer, solver):
        cls = socratic_lm_class()
        lm = cls({"decomposer": None, "solver": None}, strategy, 8, TASK.answer)

        def generate(role, prompts):
            who = decomposer if role == "decomposer" else solver
            who.asked.extend(prompts)
            return [who.script(p) for p in prompts]

        lm._generate = generate
        return lm


class Request:
    def __init__(self, context):
        self.args = (context, {})


def test_socratic_loop_alternates_and_stops_at_end_or_bound():
    def decomposer(prompt):
        return END if prompt.count(" Q:") > 2 else f"sub {prompt.count(' Q:')}?"

    solver = Scripted(lambda p: f"{p.count(' Q:')} + 1 = {p.count(' Q:') + 1}")
    dec = Scripted(decomposer)
    lm = ScriptedSocraticLM.make(Socratic(SocraticConfig()), dec, solver)
    (out,) = lm.generate_until([Request("Tom has apples. ###")])
    assert out == "Q: sub 1? A: 1 + 1 = 2 Q: sub 2? A: 2 + 1 = 3 --> 3"
    assert dec.asked[0] == "Tom has apples. ### Q:" and len(dec.asked) == 3 and len(solver.asked) == 2
    never_ends = Scripted(lambda p: "again?")
    bounded = ScriptedSocraticLM.make(Socratic(SocraticConfig(max_steps=4)), never_ends, Scripted(lambda p: "7"))
    (out,) = bounded.generate_until([Request("Q ###")])
    assert out.count(" Q:") + out.startswith("Q:") == 4 and out.endswith("--> 7")
    silent = ScriptedSocraticLM.make(Socratic(SocraticConfig()), Scripted(lambda p: END), Scripted(lambda p: "x"))
    assert silent.generate_until([Request("Q ###")]) == ["-->"]


ALL = """
[[strategy]]
kind = "vanilla"

[[strategy]]
kind = "fine_tune_cot"

[[strategy]]
kind = "diverse_reasoning"
samples = 2

[[strategy]]
kind = "socratic"

[[strategy]]
kind = "socratic"
name = "socratic_unified"
mode = "unified"

[[strategy]]
kind = "socratic"
name = "socratic_packed"
packed = true

[[strategy]]
kind = "step_by_step"
"""


def test_every_strategy_end_to_end(tmp_path):
    import json

    from harness.cli import main

    from .conftest import TINY

    text = TINY.replace("[run]\n", f'[run]\noutput_dir = "{tmp_path / "runs"}"\n', 1)
    text = text.replace('[[strategy]]\nkind = "vanilla"\n\n[[strategy]]\nkind = "fine_tune_cot"\n', ALL)
    text = text.replace('kind = "program"', 'kind = "program"\nsamples = 2\ntemperature = 0.7')
    recipe = tmp_path / "all.toml"
    recipe.write_text(text + f'\n[[sink]]\nkind = "local"\ndir = "{tmp_path / "results"}"\n')
    assert main(["run", str(recipe), "--set", "evaluation.limit=6", "--set", "training.max_steps=20"]) == 0
    run = tmp_path / "runs" / "tiny"
    summary = json.loads((run / "summary.json").read_text())
    assert sorted(summary) == sorted(["vanilla", "fine_tune_cot", "diverse_reasoning", "socratic",
                                      "socratic_unified", "socratic_packed", "step_by_step"])
    # Socratic trains two models, its unified variant one
    assert (run / "train-socratic-decomposer" / "model").is_dir() and (run / "train-socratic-solver").is_dir()
    assert (run / "train-socratic_unified" / "model").is_dir()
    build = json.loads((run / "build-socratic" / "done.json").read_text())["record"]
    # one decomposer pair per step plus one [END] per question, one solver pair per step
    assert build["questions"] == 300
    assert build["roles"]["decomposer"] == build["roles"]["solver"] + 300
    packed = json.loads((run / "build-socratic_packed" / "done.json").read_text())["record"]
    assert packed["roles"] == {"decomposer": 300, "solver": 300}  # one sequence per question and role
    diverse = json.loads((run / "build-diverse_reasoning" / "done.json").read_text())["record"]["strategy"]
    assert diverse["offered"] == 600 and diverse["kept"] + diverse["duplicates"] == 600
    # lm-eval ran the decomposer/solver loop: its per-sample log holds the transcript
    (samples,) = (run / "evaluate-socratic" / "lm_eval").rglob("samples_*.jsonl")
    first = json.loads(samples.read_text().splitlines()[0])
    assert "-->" in first["resps"][0][0]
    (results,) = (run / "evaluate-socratic" / "lm_eval").rglob("results_*.json")
    assert json.loads(results.read_text())["config"]["model"] == "SocraticLM"


def test_socratic_solver_can_see_only_the_last_turn():
    rows = Socratic(SocraticConfig(solver_context="last")).build([E], graded(("r", True, STEPS + [
        SubStep("How many after taking away 2?", "52 - 2 = 50")])), TASK)
    solver = [r for r in rows if r.role == "solver"]
    q = E.question
    assert [r.prompt for r in solver] == [
        f"{q} ### Q: How many after adding 7? A:",
        f"{q} ### Q: How many after adding 7? A: 19 + 7 = 26 Q: How many after doubling? A:",
        f"{q} ### Q: How many after doubling? A: 26 * 2 = 52 Q: How many after taking away 2? A:"]
    assert SocraticConfig(solver_context="some").check() == [("solver_context", "'some': use \"full\" or \"last\"")]


def test_socratic_packed_formats():
    q = E.question
    rows = Socratic(SocraticConfig(packed=True)).build([E], graded(("r", True, STEPS)), TASK)
    assert rows == [
        TrainingExample(E.id, f"{q} ###", f" Q: How many after adding 7? Q: How many after doubling? Q: {END}",
                        role="decomposer"),
        TrainingExample(E.id, f"{q} ### Q: How many after adding 7? A:", " 19 + 7 = 26 Q:", role="solver",
                        turns=((" How many after doubling? A:", " 26 * 2 = 52"),)),
    ]
    (unified,) = Socratic(SocraticConfig(mode="unified", packed=True)).build([E], graded(("r", True, STEPS)), TASK)
    assert unified == TrainingExample(E.id, f"{q} ###", " Q: How many after adding 7? A: 19 + 7 = 26 Q: How many "
                                                          f"after doubling? A: 26 * 2 = 52 Q: {END}")
    assert SocraticConfig(packed=True, solver_context="last").check() == [
        ("packed", 'a packed sequence shows the solver every earlier turn; set solver_context = "full" or '
                   'packed = false')]


def test_socratic_inference_prompts_are_what_each_packed_target_saw():
    """At inference every turn's prompt is exactly the packed training text before that turn's target."""
    steps = STEPS + [SubStep("How many after taking away 2?", "52 - 2 = 50")]
    for mode in ("two_models", "unified"):
        strategy = Socratic(SocraticConfig(mode=mode, packed=True))
        rows = strategy.build([E], graded(("r", True, steps)), TASK)
        text = {r.role: r.text() for r in rows}
        asks, answers = text["decomposer" if mode == "two_models" else ""], text["solver" if mode == "two_models" else ""]
        for k, step in enumerate(steps):
            assert asks.startswith(f"{strategy.ask_prompt(E.question, steps[:k])} {step.question}")
            assert answers.startswith(f"{strategy.answer_prompt(E.question, steps[:k], step.question)} {step.answer}")
        assert asks.endswith(f"{strategy.ask_prompt(E.question, steps)} {END}")


def test_socratic_solver_share_splits_a_token_budget(tmp_path):
    import json

    from harness.cli import main

    from .conftest import TINY

    text = TINY.replace("[run]\n", f'[run]\noutput_dir = "{tmp_path / "runs"}"\n', 1)
    text = text.replace('[[strategy]]\nkind = "vanilla"\n\n[[strategy]]\nkind = "fine_tune_cot"\n',
                        '[[strategy]]\nkind = "socratic"\npacked = true\nsolver_share = 0.75\n')
    recipe = tmp_path / "share.toml"
    recipe.write_text(text + f'\n[[sink]]\nkind = "local"\ndir = "{tmp_path / "results"}"\n')
    assert main(["run", str(recipe), "--set", "training.max_tokens=40000", "--set", "evaluation.limit=2"]) == 0
    run = tmp_path / "runs" / "tiny"
    tokens = {role: json.loads((run / f"train-socratic-{role}" / "done.json").read_text())["record"]["tokens"]
              for role in ("decomposer", "solver")}
    assert 0.70 < tokens["solver"] / sum(tokens.values()) < 0.80, tokens
    assert 38000 < sum(tokens.values()) < 45000, tokens  # each model overshoots by less than one batch
    assert SocraticConfig(solver_share=1.0).check()[0][0] == "solver_share"
    assert Socratic(SocraticConfig(mode="unified", solver_share=0.5)).budget_shares() is None
