"""The 12 Fine-tune-CoT benchmarks from the real files in ../shared/data, and the recorded GPT-3 teacher."""

import json
import os
import re
from dataclasses import replace
from pathlib import Path

import pytest

from harness._run.registry import load_registry
from harness.answers import extract, is_correct
from harness.errors import DataError
from harness.records import TRAINING, RecordTable

DATA = Path(os.environ.get("HARNESS_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data"))
pytestmark = pytest.mark.skipif(not (DATA / "reasoning-teacher").is_dir(),
                                reason=f"benchmark data not found at {DATA} (set HARNESS_DATA_DIR)")

# REFERENCE.md: Fine-tune-CoT's train/test sizes (AQuA's train set is not available as a local file).
SIZES = {"single_eq": (356, 152), "addsub": (276, 119), "multiarith": (420, 180), "gsm8k": (7473, 1319),
         "aqua": (0, 254), "svamp": (700, 300), "date_understanding": (258, 111),
         "tracking_shuffled_objects": (525, 225), "last_letter_concatenation": (350, 150), "coin_flip": (350, 150),
         "commonsense_qa": (9741, 1221), "strategy_qa": (1603, 687)}
OVERLAP = {"multiarith": 5, "strategy_qa": 1}  # measured: duplicated questions across Fine-tune-CoT's splits


@pytest.fixture(scope="module")
def registry():
    return load_registry()


def load(registry, name, **options):
    factory = registry.get("task", name).factory
    return factory(factory.Config(data_dir=str(DATA), **options))


@pytest.fixture(scope="module")
def splits(registry):
    return {name: load(registry, name).load() for name in SIZES}


@pytest.mark.parametrize("name", sorted(SIZES))
def test_fine_tune_cot_splits(name, splits):
    from harness.data import split_overlap

    s = splits[name]
    train, test = SIZES[name]
    assert (len(s["train"]) + len(s["validation"]), len(s["test"])) == (train, test)
    assert len(s["validation"]) == int(train * 0.1)
    assert not {e.id for e in s["train"]} & {e.id for e in s["validation"]}
    assert len(split_overlap(s)) == OVERLAP.get(name, 0)
    assert all(e.question and e.answer for split in s.values() for e in split)


def test_gold_structure(splits):
    gsm = splits["gsm8k"]["train"][0]
    assert gsm.answer == "72" and "<<48/2=24>>" in gsm.rationale
    assert gsm.steps[0].question == "How many clips did Natalia sell in May?"
    assert all(e.steps for e in splits["gsm8k"]["test"])
    svamp = splits["svamp"]
    assert all("equation" in e.meta for split in svamp.values() for e in split)
    assert all("equations" in e.meta for name in ("addsub", "multiarith", "single_eq")
               for split in splits[name].values() for e in split)
    sqa = [e for split in splits["strategy_qa"].values() for e in split]
    assert all(e.steps and e.rationale for e in sqa)
    aqua = splits["aqua"]["test"][0]
    assert aqua.question.endswith("Answer choices: (A) 5(√3 + 1), (B) 6(√3 + √2), (C) 7(√3 – 1), (D) 8(√3 – 2), "
                                  "(E) None of these.")
    date = splits["date_understanding"]["test"][0]
    assert "Which choice is true? Answer choices: (A)" in date.question and date.answer in "ABCDEF"


def test_validation_and_random_splits_are_seeded(registry, splits):
    again = load(registry, "svamp").load()
    assert again == splits["svamp"]
    other = load(registry, "svamp", seed=1).load()
    assert other["test"] == splits["svamp"]["test"] and other["validation"] != splits["svamp"]["validation"]
    random_split = load(registry, "svamp", split="random", test_fraction=0.25).load()
    assert len(random_split["test"]) == 250 and random_split["test"] != splits["svamp"]["test"]


def test_missing_data_is_a_clear_error(registry, tmp_path, monkeypatch):
    monkeypatch.delenv("HARNESS_DATA_DIR", raising=False)
    factory = registry.get("task", "svamp").factory
    with pytest.raises(DataError, match="task.data_dir: no local data directory; set task.data_dir in the recipe "
                                        "or the HARNESS_DATA_DIR environment variable"):
        factory(factory.Config()).load()
    with pytest.raises(DataError, match=r"task.data_dir: .*svamp.json is missing \(expected under the data "
                                        r"directory"):
        factory(factory.Config(data_dir=str(tmp_path))).load()
    bad = tmp_path / "reasoning-teacher" / "acl-branch-5a5104a" / "dataset"
    bad.mkdir(parents=True)
    (bad / "svamp.json").write_text('[{"question": "q"}]')
    with pytest.raises(DataError, match=r"svamp.json: record 0 has no 'answer' field"):
        factory(factory.Config(data_dir=str(tmp_path))).load()


def test_hub_source_offline_fails_clearly(registry, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataError, match=r"task 'gsm8k': cannot load hub dataset openai/gsm8k: .*Use source = "
                                        r"\"local\" with data_dir"):
        load(registry, "gsm8k", source="hub").load()
    with pytest.raises(DataError, match=r"task 'svamp': cannot load hub dataset ChilleD/SVAMP"):
        load(registry, "svamp", source="hub").load()
    with pytest.raises(DataError, match=r"task 'coin_flip' has no hub source defined"):
        load(registry, "coin_flip", source="hub").load()


@pytest.mark.parametrize("name, log_accuracy", [("svamp", 62.1), ("date_understanding", 67.48),
                                                 ("commonsense_qa", 64.62), ("strategy_qa", 54.76)])
def test_recorded_teacher_replays_gpt3_with_the_logs_accuracy(registry, splits, name, log_accuracy):
    """Every example finds its log record; multiple-choice letters are mapped into the task's own choice order,
    so grading the replayed answers against the task's gold letters gives the log's accuracy."""
    teacher_cls = registry.get("teacher", "zero_shot_cot_log").factory
    teacher = teacher_cls(teacher_cls.Config(dataset=name, data_dir=str(DATA)))
    task = load(registry, name)
    examples = [e for split in splits[name].values() for e in split]
    if name == "commonsense_qa":  # the log covers the dev set (the test split) only
        examples = splits[name]["test"]
    generations = teacher.generate(examples, task, lambda n: None)
    assert not [g for (g,) in generations if g.meta.get("missing")]
    correct = sum(is_correct(extract(g.answer_text, task.answer, None), e.answer, task.answer)
                  for e, (g,) in zip(examples, generations))
    assert 100 * correct / len(examples) == pytest.approx(log_accuracy, abs=0.5)


def test_recorded_teacher_needs_a_matching_log(registry, splits):
    from harness.errors import BadInputError

    teacher_cls = registry.get("teacher", "zero_shot_cot_log").factory
    teacher = teacher_cls(teacher_cls.Config(dataset="coin_flip", data_dir=str(DATA)))
    with pytest.raises(BadInputError, match=r"none of the 3 questions is in .*coin_flip_zero_shot_cot.log"):
        teacher.generate(splits["svamp"]["test"][:3], load(registry, "svamp"), lambda n: None)


def test_real_task_with_recorded_teacher_end_to_end(tmp_path, monkeypatch, cli):
    """recipes/multiarith_gpt3.toml, with a tiny from-scratch student, runs end to end on the real files."""
    from .conftest import REPO

    monkeypatch.setenv("HARNESS_DATA_DIR", str(DATA))
    result = cli("run", REPO / "recipes" / "multiarith_gpt3.toml",
                 "--set", f'run.output_dir="{tmp_path / "runs"}"', "--set", 'student.model=""',
                 "--set", "student.tokenizer=word", "--set",
                 'student.architecture={model_type="gpt2", n_layer=1, n_embd=32, n_head=2, n_positions=512}',
                 "--set", "training.max_steps=5", "--set", "evaluation.limit=4", "--set", "evaluation.max_gen_toks=16",
                 "--set", "sink.kind=local", "--set", f'sink.dir="{tmp_path / "results"}"')
    assert result.code == 0, result.err
    runs = tmp_path / "runs" / "multiarith_gpt3"
    report = json.loads((runs / "filter" / "teacher_report.json").read_text())
    assert report["questions"] == 378 and report["questions_without_correct"] == 378 - report["correct_samples"]
    assert 0.7 < report["teacher_accuracy"] < 0.9  # text-davinci-002 on MultiArith: 78.67% over all 600
    task_record = json.loads((runs / "task" / "done.json").read_text())["record"]
    assert task_record["sizes"] == {"train": 378, "validation": 42, "test": 180}
    assert len(task_record["test_overlap"]) == 5
    built = RecordTable(runs / "build-fine_tune_cot" / "train.arrow", TRAINING)
    assert len(built) == report["correct_samples"]
    assert " --> " in built[0].target


def test_hub_loading_with_a_local_dataset_folder(tmp_path, monkeypatch):
    """The hub path (datasets.load_dataset + field templates + the hub's own splits) on a local dataset folder."""
    from harness_builtins.task_benchmarks import BenchmarkTask, Config, Definition

    folder = tmp_path / "svamp_like"
    folder.mkdir()
    rows = lambda n, off: "".join(json.dumps({"Body": f"Tom has {i} apples.", "Question": "How many?",
                                              "Answer": float(i)}) + "\n" for i in range(off, off + n))
    (folder / "train.jsonl").write_text(rows(10, 0))
    (folder / "test.jsonl").write_text(rows(4, 100))
    definition = Definition(title="t", answer="number", trigger="x", format="unified", files={},
                            hub={"path": str(folder), "train": "train", "test": "test",
                                 "question": "{Body} {Question}", "answer": "Answer"})
    task_cls = type("HubTask", (BenchmarkTask,), {"definition": definition, "name": "hubtask"})
    splits = task_cls(Config(source="hub", validation_fraction=0.2)).load()
    assert [len(splits[k]) for k in ("train", "validation", "test")] == [8, 2, 4]
    assert splits["test"][0].question == "Tom has 100 apples. How many?" and splits["test"][0].answer == "100.0"
    bad = Definition(**{**definition.__dict__, "hub": {**definition.hub, "answer": "Nope"}})
    bad_cls = type("BadHubTask", (BenchmarkTask,), {"definition": bad, "name": "bad"})
    with pytest.raises(DataError, match=r"has no field 'Nope'; its fields: Body, Question, Answer"):
        bad_cls(Config(source="hub")).load()


HUB_ROWS = {  # one row per task in its hub dataset's own schema (see the dataset cards), and the split it is in
    "aqua": ("test", {"question": "What is 7 x 3?", "options": ["A)21", "B)22", "C)23", "D)24", "E)25"],
                      "rationale": "7 x 3 = 21", "correct": "A"}),
    "commonsense_qa": ("validation", {
        "id": "x", "question_concept": "punishing",
        "question": "The sanctions against the school were a punishing blow, and they seemed to what the efforts "
                    "the school had made to change?",
        "choices": {"label": ["A", "B", "C", "D", "E"],
                    "text": ["ignore", "enforce", "authoritarian", "yell at", "avoid"]}, "answerKey": "A"}),
    "multiarith": ("test", {"question": "Tom had 5 apples and bought 3. How many now?", "final_ans": "8"}),
    "strategy_qa": ("test", {"question": "Is it common to see frost during some college commencements?",
                             "answer": True}),
}


@pytest.mark.parametrize("name", sorted(HUB_ROWS))
def test_hub_schemas_render_like_the_fine_tune_cot_files(tmp_path, registry, name):
    """Each hub definition, pointed at a local folder holding a row in the hub dataset's schema, gives the
    question text and answer that Fine-tune-CoT's own files have (choices rendered ``(A) x, (B) y.``)."""
    from harness_builtins.task_benchmarks import Config

    split, row = HUB_ROWS[name]
    task_cls = registry.get("task", name).factory
    hub = task_cls.definition.hub
    folder = tmp_path / name
    folder.mkdir()
    for part in {hub["train"], hub["test"]}:
        (folder / f"{part}.jsonl").write_text(json.dumps(row) + "\n")
    local_hub = {**{k: v for k, v in hub.items() if k != "name"}, "path": str(folder)}  # a folder has no configs
    local = type("LocalHub", (task_cls,), {"definition": replace(task_cls.definition, hub=local_hub)})
    loaded = local(Config(source="hub", validation_fraction=0.0)).load()
    (example,) = loaded["test"]
    assert split == hub["test"]
    if name == "commonsense_qa":  # the very first record of Fine-tune-CoT's commonsense_qa.json
        assert example.question == (
            "The sanctions against the school were a punishing blow, and they seemed to what the efforts the school "
            "had made to change? Answer choices: (A) ignore, (B) enforce, (C) authoritarian, (D) yell at, (E) avoid.")
    expected = {"aqua": ("What is 7 x 3? Answer choices: (A) 21, (B) 22, (C) 23, (D) 24, (E) 25.", "A"),
                "commonsense_qa": (example.question, "A"),
                "multiarith": ("Tom had 5 apples and bought 3. How many now?", "8"),
                "strategy_qa": ("Is it common to see frost during some college commencements?", "Yes")}[name]
    assert (example.question, example.answer) == expected
    if name == "aqua":  # the local AQuA file renders the same way
        local_aqua = load(registry, "aqua").load()["test"][0]
        assert re.search(r" Answer choices: \(A\) .+, \(B\) .+, \(C\) .+, \(D\) .+, \(E\) .+\.$",
                         local_aqua.question)


def test_svamp_socratic_recipe_runs_offline_with_overrides(tmp_path, monkeypatch, cli):
    """recipes/svamp_socratic.toml with local SVAMP files, a local OpenAI-compatible server and a tiny student."""
    from .conftest import REPO
    from .fake_openai import FakeOpenAI

    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    with FakeOpenAI() as server:
        result = cli("run", REPO / "recipes" / "svamp_socratic.toml",
                     "--set", f'run.output_dir="{tmp_path / "runs"}"', "--set", "task.source=local",
                     "--set", f'task.data_dir="{DATA}"', "--set", f'teacher.base_url="{server.base_url}"',
                     "--set", 'teacher.api_key_env=""', "--set", 'student.model=""', "--set", "student.tokenizer=word",
                     "--set", 'student.architecture={model_type="gpt2", n_layer=1, n_embd=32, n_head=2, n_positions=512}',
                     # the server's decompositions answer 4 every time: keep them all (no correctness filter)
                     "--set", "strategy.0.filter=false", "--set", "strategy.1.filter=false",
                     "--set", "strategy.2.filter=false", "--set", "training.max_steps=3",
                     "--set", "evaluation.limit=3", "--set", "evaluation.max_gen_toks=8",
                     "--set", "strategy.1.max_steps=2", "--set", "strategy.2.max_steps=2",
                     "--set", "sink.kind=local", "--set", f'sink.dir="{tmp_path / "results"}"')
        assert result.code == 0, result.err
        assert server.served["/v1/chat/completions"] == 630  # one decomposition per training question
    runs = tmp_path / "runs" / "svamp_socratic"
    assert sorted(json.loads((runs / "summary.json").read_text())) == ["fine_tune_cot", "socratic",
                                                                       "socratic_unified"]
    build = json.loads((runs / "build-socratic" / "done.json").read_text())["record"]
    assert build["roles"] == {"decomposer": 630 * 3, "solver": 630 * 2}
