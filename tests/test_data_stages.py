"""The data stages stream: task, teach, filter and build work in chunks on Arrow files, the filter keeps only its
verdicts, token ids are made once per content key, and a run's rationales export as a dataset."""

import json

import numpy as np
import pytest

from harness.records import EXAMPLES, GENERATIONS, GRADES, TRAINING, RecordTable

RECIPE = """
[run]
name = "stream"
output_dir = "{runs}"

[task]
kind = "synthetic_arithmetic"
train_size = 700
validation_size = 10
test_size = 12

[teacher]
kind = "program"
samples = 3
temperature = 1.0
error_rate = 0.3

[[strategy]]
kind = "diverse_reasoning"
samples = 3

[[student]]
kind = "transformers"
tokenizer = "word"
architecture = {{ model_type = "gpt2", n_layer = 1, n_embd = 32, n_head = 2, n_positions = 128 }}

[training]
max_steps = 4
batch_size = 8
threads = 1

[evaluation]
limit = 4
batch_size = 4
max_gen_toks = 24

[[sink]]
kind = "local"
dir = "{results}"
"""


@pytest.fixture(scope="module")
def streamed(tmp_path_factory):
    """One run whose data stages go through several chunks (the chunk size made small)."""
    from harness._run import stages
    from harness.cli import main

    tmp_path = tmp_path_factory.mktemp("stream")
    recipe = tmp_path / "stream.toml"
    recipe.write_text(RECIPE.format(runs=tmp_path / "runs", results=tmp_path / "results"))
    saved = stages.CHUNK
    stages.CHUNK = 128  # 700 questions: 6 chunks per stage
    try:
        code = main(["run", str(recipe)])
    finally:
        stages.CHUNK = saved
    return tmp_path, recipe, code


def test_chunked_stages_give_every_record_once_in_order(streamed):
    tmp_path, _, code = streamed
    assert code == 0
    run = tmp_path / "runs" / "stream"
    train = RecordTable(run / "task" / "train.arrow", EXAMPLES)
    gens = RecordTable(run / "teach" / "generations.arrow", GENERATIONS)
    grades = RecordTable(run / "filter" / "grades.arrow", GRADES)
    assert len(train) == 700 and len(gens) == len(grades) == 2100
    assert [g.example_id for g in gens] == [e.id for e in train for _ in range(3)]  # grouped, in question order
    assert [g.sample_index for g in gens][:6] == [0, 1, 2, 0, 1, 2]
    report = json.loads((run / "filter" / "teacher_report.json").read_text())
    assert report["questions"] == 700 and report["correct_samples"] == sum(g.correct for g in grades)
    assert 0.6 < report["sample_accuracy"] < 0.8  # error_rate 0.3: the filter really rejects
    build = json.loads((run / "build-diverse_reasoning" / "done.json").read_text())["record"]
    pairs = RecordTable(run / "build-diverse_reasoning" / "train.arrow", TRAINING)
    # the strategy's counts add up over its chunks
    assert build["strategy"]["offered"] == 2100 and build["strategy"]["kept"] == len(pairs) == build["examples"]
    assert build["strategy"]["wrong"] == 2100 - report["correct_samples"]


def test_the_filter_keeps_verdicts_not_a_copy_of_the_text(streamed):
    run = streamed[0] / "runs" / "stream"
    teach = sum(f.stat().st_size for f in (run / "teach").iterdir())
    filter_ = sum(f.stat().st_size for f in (run / "filter").iterdir())
    assert filter_ < teach / 5
    assert not any(f.suffix == ".jsonl" for f in (run / "filter").iterdir())


def test_token_ids_are_made_once_per_content_key(streamed, cli):
    tmp_path, recipe, _ = streamed
    stores = list((tmp_path / "runs" / "stream" / "cache" / "tokens").iterdir())
    assert len(stores) == 1 and (stores[0] / "store.json").is_file()
    made = (stores[0] / "store.json").stat().st_mtime_ns
    # another training of the same data (a different step count) reuses the ids; different data makes new ones
    assert cli("run", recipe, "--set", "training.max_steps=5").code == 0
    assert (stores[0] / "store.json").stat().st_mtime_ns == made
    assert len(list((tmp_path / "runs" / "stream" / "cache" / "tokens").iterdir())) == 1
    assert cli("run", recipe, "--set", "strategy.0.samples=2").code == 0
    assert len(list((tmp_path / "runs" / "stream" / "cache" / "tokens").iterdir())) == 2


def test_the_token_store_gives_what_encoding_in_memory_gives(tmp_path):
    from harness.records import write_records
    from harness.types import TrainingExample
    from harness_builtins.student_transformers import encode, train_word_tokenizer
    from harness_builtins.student_transformers.tokens import TokenStore, encoded

    pairs = [TrainingExample(f"e{i}", f"q {i} ###", f" {i} + 1 = {i + 1} --> {i + 1}", weight=1.0 + (i == 7),
                             turns=((" and", " more"),) if i % 5 == 0 else ()) for i in range(40)]
    pairs.append(TrainingExample("kd", "q 1 ###", " x", signals={"target_ids": [5, 6], "topk_ids": [[5, 7], [6, 8]],
                                                                 "topk_logprobs": [[-0.1, -2.0], [-0.2, -3.0]],
                                                                 "half": [2.5, 3.0], "bonus": 2.0}))
    pairs.append(TrainingExample("k3", "q 2 ###", " y", signals={"target_ids": [5], "topk_ids": [[5, 7, 9]],
                                                                 "topk_logprobs": [[-0.1, -2.0, -4.0]]}))
    write_records(tmp_path / "t.arrow", TRAINING, pairs)
    table = RecordTable(tmp_path / "t.arrow", TRAINING)
    tok = train_word_tokenizer([p.text() for p in pairs])
    store = encoded(table, tok, 64, False, None, tmp_path / "cache")
    assert isinstance(store, TokenStore) and len(store) == len(pairs)
    expected = encode(tok, pairs, 64)
    for row in expected:  # signal values are kept as float32, what training turns them into anyway
        for name in ("topk_logprobs", "half"):
            if name in row:
                row[name] = np.asarray(row[name], dtype=np.float32).tolist()
    assert [store[i] for i in range(len(pairs))] == expected
    assert list(store.lengths) == [len(r["input_ids"]) for r in encode(tok, pairs, 64)]


def test_export_writes_parquet_a_datasets_folder_and_a_card(streamed, cli, tmp_path):
    import datasets
    import pyarrow.parquet as pq

    run = streamed[0] / "runs" / "stream"
    result = cli("export", run, "--out", tmp_path / "export")
    assert result.code == 0, result.err
    table = pq.read_table(tmp_path / "export" / "data.parquet")
    assert table.num_rows == 2100 and table.column_names[:3] == ["id", "question", "gold_answer"]
    report = json.loads((run / "filter" / "teacher_report.json").read_text())
    assert sum(table.column("correct").to_pylist()) == report["correct_samples"]
    loaded = datasets.load_from_disk(str(tmp_path / "export" / "dataset"))
    assert len(loaded) == 2100 and loaded[0]["rationale"]
    card = (tmp_path / "export" / "README.md").read_text()
    assert "`program`" in card and "2,100 for 700 questions" in card and "correctness filter" in card
    pushed = cli("export", run, "--out", tmp_path / "export2", "--push")
    assert pushed.code == 2 and "no [[sink]] with kind = \"hub\"" in pushed.err
    missing = cli("export", tmp_path / "nowhere")
    assert missing.code == 2 and "not a run folder" in missing.err


def test_export_push_goes_where_the_recipes_hub_sink_says(streamed, tmp_path, monkeypatch):
    import huggingface_hub.constants

    from harness._run.export import export, push

    from .test_results import FakeHub

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    out = tmp_path / "export"
    export(streamed[0] / "runs" / "stream", out)
    hub = FakeHub()
    try:
        repo = push(out, {"sink": [{"kind": "hub", "config": {"org": "me", "endpoint": hub.url}}]}, "stream")
    finally:
        hub.close()
    assert repo == "me/stream-rationales" and hub.unknown == []
    assert hub.repos == [{"name": "stream-rationales", "organization": "me", "type": "dataset",
                          "visibility": "private"}]
    assert hub.files["data.parquet"] == (out / "data.parquet").read_bytes() and "README.md" in hub.files
    assert hub.validated and "task_categories" in hub.validated[0]  # the card's metadata went through the check
    assert "hf_test_token" not in "".join(v.decode(errors="replace") for v in hub.files.values())


def test_teach_and_build_in_worker_processes_give_what_one_process_gives(tmp_path, monkeypatch):
    """A large run makes a generated split in parts (synthetic task), and hands the chunks of a parallel teacher
    (program), the filter's grading and a parallel strategy (diverse reasoning) to worker processes: the same
    records in the same order, and the counts summed over the chunks."""
    from harness._run import stages, task_stage, workers
    from harness.cli import main
    from harness.records import ChunkSizer

    # chunks of changing size (about 60 kB of rationales each, the first of 50 questions)
    monkeypatch.setattr(stages, "ChunkSizer", lambda most: ChunkSizer(most, budget=60_000, first=50))
    monkeypatch.setattr(workers, "PARALLEL_FROM", 100)  # 700 questions count as a large run
    assert workers.workers(2, 700) == 2 and workers.workers(2, 99) == 1
    used = []

    def spy(fn, jobs, state, processes, stage):
        used.append((stage, processes))
        return workers.ordered_map(fn, jobs, state, processes, stage)

    monkeypatch.setattr(stages, "ordered_map", spy)
    monkeypatch.setattr(task_stage, "ordered_map", spy)
    runs = {}
    for n in (1, 2):
        recipe = tmp_path / f"w{n}.toml"
        recipe.write_text(RECIPE.format(runs=tmp_path / f"runs{n}", results=tmp_path / "results")
                          .replace('output_dir = "', f'workers = {n}\noutput_dir = "'))
        assert main(["run", str(recipe)]) == 0
        runs[n] = tmp_path / f"runs{n}" / "stream"
    assert len(RecordTable(runs[2] / "teach" / "generations.arrow", GENERATIONS)) == 2100
    for folder, name, kind in (("task", "train", EXAMPLES), ("teach", "generations", GENERATIONS),
                               ("filter", "grades", GRADES),
                               ("build-diverse_reasoning", "train", TRAINING)):
        assert list(RecordTable(runs[2] / folder / f"{name}.arrow", kind)) == list(
            RecordTable(runs[1] / folder / f"{name}.arrow", kind)), folder
    records = [json.loads((run / "build-diverse_reasoning" / "done.json").read_text())["record"]
               for run in runs.values()]
    assert records[0] == records[1] and records[1]["strategy"]["offered"] == 2100
    reports = [(run / "filter" / "teacher_report.json").read_text() for run in runs.values()]
    assert reports[0] == reports[1] and json.loads(reports[1])["samples"] == 2100
    assert used == [("teach", 1), ("filter", 1), ("build diverse_reasoning", 1),  # (the task: no pool at all)
                    ("task train", 2), ("teach", 2), ("filter", 2), ("build diverse_reasoning", 2)]
    assert not list((runs[2] / "task").glob("*.part*"))


def _square_or_die(job, state):
    import os
    import signal

    if job == state["die_at"]:
        os.kill(os.getpid(), signal.SIGKILL)  # what the kernel does to a process out of memory
    return job * job


def test_worker_processes_keep_order_and_a_killed_worker_is_a_message():
    from harness._run.workers import ordered_map
    from harness.errors import RunError

    assert list(ordered_map(_square_or_die, range(12), {"die_at": -1}, 2, "build x")) == [i * i for i in range(12)]
    assert list(ordered_map(_square_or_die, range(5), {"die_at": -1}, 1, "build x")) == [0, 1, 4, 9, 16]
    with pytest.raises(RunError, match=r"build x: a worker process died \(killed by the kernel, most likely out of "
                                       r"memory\). To fit: set run.workers to fewer processes"):
        list(ordered_map(_square_or_die, range(12), {"die_at": 5}, 2, "build x"))


class _Counting:
    """A task whose train split is generated and can be made in parts; two train questions are test questions."""

    answer = None

    def __init__(self, n: int):
        self.n = n

    def source(self) -> str:
        return "counting"

    @staticmethod
    def _example(i: int):
        from harness.types import Example

        return Example(id=f"train-{i}", question=f"What comes after {i % 997}?", answer=str(i % 997 + 1))

    def load(self):
        from harness.data import GeneratedSplit
        from harness.types import Example

        def part(start, stop):
            return (self._example(i) for i in range(start, min(stop, self.n)))

        test = [Example(id=f"test-{k}", question=f"What comes after {k}?", answer=str(k + 1)) for k in (5, 6000)]
        return {"train": GeneratedSplit(self.n, lambda: part(0, self.n), part), "test": test}


def test_a_generated_split_is_made_in_parts_by_worker_processes(tmp_path, monkeypatch):
    """Parts equal in cost when skipping costs half of making (the first is larger), joined in order: the same
    file as one process writes, and the test questions found in every part."""
    from harness._run import task_stage, workers

    assert task_stage._parts(_Counting(9000).load()["train"], 2) == [(0, 6000), (6000, 9000)]
    spans = task_stage._parts(_Counting(10_000).load()["train"], 3)
    assert spans[0][0] == 0 and spans[-1][1] == 10_000 and all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
    assert [round(b - a / 2 - (spans[0][1] - spans[0][0])) for a, b in spans][:2] == [0, 0]  # equal cost
    assert task_stage._parts([], 2) == [] and task_stage._parts(_Counting(9000).load()["test"], 2) == []

    monkeypatch.setattr(workers, "PARALLEL_FROM", 1000)
    outputs = {}
    for setting in (1, 2):
        out = tmp_path / f"w{setting}"
        out.mkdir()
        _, record = task_stage.write_splits(_Counting(9000), "counting", out, setting)
        outputs[setting] = (list(RecordTable(out / "train.arrow", EXAMPLES)), record, sorted(p.name for p in
                                                                                             out.iterdir()))
    assert outputs[1] == outputs[2]
    assert outputs[2][1]["test_overlap"] == ["test-5"] and outputs[2][1]["sizes"] == {"train": 9000, "test": 2}
    assert outputs[2][2] == ["test.arrow", "train.arrow"]
