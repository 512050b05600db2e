"""The failure paths a hostile tester walks: failed teacher requests, identical requests in flight, half-written
checkpoints, bad data files, late failures caught by validate, and secrets put in the wrong place. Every test here
names the exit code and the message a user sees."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from harness.records import TRAINING, RecordTable

from .conftest import REPO
from .fake_openai import FakeOpenAI

DATA = Path(os.environ.get("HARNESS_DATA_DIR") or REPO.parent / "shared" / "data")
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason="the shared benchmark data is not here")


def api_recipe(tmp_path: Path, base_url: str, extra_teacher: str = "", strategy: str = 'kind = "fine_tune_cot"',
               student: str = "") -> Path:
    path = tmp_path / "api.toml"
    path.write_text(f"""[run]
name = "api"
output_dir = "{tmp_path / 'runs'}"

[task]
kind = "synthetic_arithmetic"
train_size = 12
validation_size = 0
test_size = 4

[teacher]
kind = "openai"
model = "m"
base_url = "{base_url}"
api_key_env = ""
cache_dir = "{tmp_path / 'cache'}"
samples = 2
temperature = 0.7
max_attempts = 2
backoff_base = 0.01
timeout = 2.0
{extra_teacher}

[[strategy]]
{strategy}

[[student]]
kind = "transformers"
{student or 'tokenizer = "word"' + chr(10) + 'architecture = { model_type = "gpt2", n_layer = 1, n_embd = 32, n_head = 2, n_positions = 128 }'}

[training]
max_steps = 2
batch_size = 4
threads = 1

[evaluation]
max_gen_toks = 8

[[sink]]
kind = "local"
dir = "{tmp_path / 'results'}"
""")
    return path


def train_questions() -> list:
    from harness_builtins.task_synthetic import Config, SyntheticArithmetic

    return SyntheticArithmetic(Config(train_size=12, validation_size=0, test_size=4)).load()["train"]


def stage(tmp_path: Path, name: str) -> dict:
    return json.loads((tmp_path / "runs" / "api" / name / "done.json").read_text())


# 1 and 2: failed generations are asked again by a plain re-run, and never trained on ----------------------------

def test_failed_requests_are_left_out_then_retried_by_a_plain_rerun(tmp_path, cli):
    poisoned = train_questions()[3].question
    with FakeOpenAI(poison=poisoned) as server:
        recipe = api_recipe(tmp_path, server.base_url, strategy='kind = "fine_tune_cot"\nfilter = false')
        first = cli("run", recipe)
        assert first.code == 0, first.err
        teach = stage(tmp_path, "teach")
        assert teach["record"]["failed"] == 2 and teach["record"]["incomplete"] is True
        assert "2 failed: they are left out of training, and the next run of this recipe asks only them again" \
            in first.err
        build = stage(tmp_path, "build-fine_tune_cot")
        assert build["record"]["failed_or_empty_generations"] == 2 and build["record"]["examples"] == 22
        rows = RecordTable(tmp_path / "runs" / "api" / "build-fine_tune_cot" / "train.arrow", TRAINING)
        assert all(not r.target.startswith(" -->") and r.target.strip() for r in rows)  # no empty rationale
        assert poisoned not in {r.prompt[: -len(" ###")] for r in rows}

        server.poison = None  # the server recovers; the user runs the same command again
        before = server.requests
        second = cli("run", recipe)
        assert second.code == 0, second.err
        # only the failed question is asked again: one n=2 rationale request and its two answer requests
        assert server.requests - before == 3
        assert "teach (openai)" in second.err and "up to date" not in second.err.split("teach (openai)")[1][:40]
        teach = stage(tmp_path, "teach")
        assert teach["record"]["failed"] == 0 and "incomplete" not in teach["record"]
        assert teach["record"]["usage"]["cached"] == 44 and teach["record"]["usage"]["requests"] == 3
        assert stage(tmp_path, "build-fine_tune_cot")["record"]["examples"] == 24  # the filter ablation: all 24

        third = cli("run", recipe)  # finished now: nothing is asked and nothing re-runs
        assert third.code == 0 and server.requests - before == 3 and "teach (openai)" in third.err
        assert all("up to date" in line for line in third.err.splitlines() if line.startswith(("•", "✓")))


# 3: identical requests in flight are sent once -----------------------------------------------------------------

def test_identical_requests_in_flight_are_sent_once(tmp_path):
    from harness_builtins.task_synthetic import Config as TaskConfig
    from harness_builtins.task_synthetic import SyntheticArithmetic
    from harness_builtins.teacher_openai import Config, OpenAITeacher

    task = SyntheticArithmetic(TaskConfig(train_size=30, validation_size=0, test_size=1))
    examples = task.load()["train"]
    # The server returns one choice per request and the same rationale for each sample of a question, so the
    # two samples' answer prompts are identical and asked at the same moment (concurrency 64, 50 ms latency).
    with FakeOpenAI(max_n=1, latency=0.05) as server:
        t = OpenAITeacher(Config(model="m", base_url=server.base_url, api_key_env="", cache_dir=str(tmp_path),
                                 samples=2, temperature=0.7, concurrency=64))
        out = t.generate(examples, task, lambda n: None)
    assert all(len(gens) == 2 and all(g.answer_text == "42." for g in gens) for gens in out)
    # per question: the n=2 request (one choice back), the second sample on its own, one answer request
    assert server.requests == 30 * 3 and t.usage().deduplicated == 30
    assert len(server.prompts) == server.requests


# 4: a half-written checkpoint never blocks resume ---------------------------------------------------------------

def test_resume_skips_a_checkpoint_cut_short_and_reports_the_whole_runs_loss(tmp_path):
    from harness import TrainingContext
    from harness_builtins.student_transformers import Config, TransformersStudent

    from .test_training import CORPUS, GPT2, ROWS

    def run(folder: Path, steps: int, checkpoints: Path | None):
        student = TransformersStudent(Config(architecture=GPT2, tokenizer="word"))
        settings = dict(max_steps=steps, batch_size=4, logging_steps=1, threads=1, checkpoint_steps=2,
                        keep_checkpoints=5)
        from harness import TrainingSettings

        return student.train(ROWS * 8, TrainingSettings(**settings), folder / "model", CORPUS, lambda n: None,
                             TrainingContext(checkpoint_dir=checkpoints))

    whole = run(tmp_path / "whole", 6, tmp_path / "whole-ckpt")
    ckpt = tmp_path / "ckpt"
    run(tmp_path / "first", 6, ckpt)
    # what a kill while checkpoint-4 was being written leaves: checkpoint-2 complete, checkpoint-4 partial, no more
    shutil.rmtree(ckpt / "checkpoint-6")
    assert sorted(p.name for p in ckpt.iterdir()) == ["checkpoint-2", "checkpoint-4"]
    # a kill between the optimizer save and the trainer-state save: checkpoint-4 has weights, no state, no marker
    (ckpt / "checkpoint-4" / "trainer_state.json").unlink()
    (ckpt / "checkpoint-4" / "harness-complete.json").unlink()
    resumed = run(tmp_path / "resumed", 6, ckpt)
    assert resumed["resumed_from_step"] == 2 and resumed["skipped_incomplete_checkpoints"] == ["checkpoint-4"]
    assert resumed["steps"] == 6
    # the loss is the whole run's, equal to the uninterrupted run's (exact resume), not the last 4 steps' only
    assert resumed["losses"] == pytest.approx(whole["losses"], abs=2e-4)
    assert resumed["train_loss"] == pytest.approx(whole["train_loss"], abs=2e-4)


# 5: bad data files: exit 2, file and record named, never a traceback --------------------------------------------

def _data_copy(tmp_path: Path, *relative: str) -> Path:
    root = tmp_path / "data"
    for rel in relative:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(DATA / rel, root / rel)
    return root


SVAMP_FILES = ("reasoning-teacher/acl-branch-5a5104a/dataset/svamp.json", "reasoning-teacher/data/split/svamp__default.json")


@needs_data
@pytest.mark.parametrize("damage, message", [
    ("split_without_train", "svamp__default.json: expected an object with \"train\" and \"test\" lists"),
    ("invalid_utf8", "svamp.json: not UTF-8 text (byte 2"),
    ("enrich_wrong_shape", "SVAMP.json: record 1 has no 'Equation' field"),
])
def test_bad_data_files_are_named_with_exit_2(tmp_path, cli, damage, message):
    root = _data_copy(tmp_path, *SVAMP_FILES, "svamp/SVAMP.json")
    if damage == "split_without_train":
        (root / SVAMP_FILES[1]).write_text(json.dumps({"test": [0, 1]}))
    elif damage == "invalid_utf8":
        (root / SVAMP_FILES[0]).write_bytes(b"[{\xff\"question\": 1}]")
    else:
        records = json.loads((root / "svamp/SVAMP.json").read_text())
        del records[1]["Equation"]
        (root / "svamp/SVAMP.json").write_text(json.dumps(records))
    result = cli("tasks", "--data-dir", root, "--json")
    assert result.code == 0  # harness tasks lists every task, the bad one with its error
    rows = {r["task"]: r for r in json.loads(result.out)}
    assert message in rows["svamp"]["source"] and rows["svamp"]["source"].startswith("unavailable: ")
    recipe = tmp_path / "r.toml"
    recipe.write_text((REPO / "recipes" / "quickstart.toml").read_text().replace(
        'kind = "synthetic_arithmetic"', f'kind = "svamp"\ndata_dir = "{root}"').replace(
        "[run]\n", f'[run]\noutput_dir = "{tmp_path / "runs"}"\n', 1))
    text = recipe.read_text()
    recipe.write_text("\n".join(line for line in text.splitlines()
                                if not line.startswith(("train_size", "validation_size", "test_size"))))
    run = cli("run", recipe)
    assert run.code == 2 and message in run.err and "Traceback" not in run.err


@needs_data
def test_strategyqa_enrich_file_of_the_wrong_shape(tmp_path, cli):
    files = ("reasoning-teacher/acl-branch-5a5104a/dataset/strategy_qa.json",
             "reasoning-teacher/data/split/strategy_qa__default.json", "strategyqa/train.json")
    root = _data_copy(tmp_path, *files)
    records = json.loads((root / "strategyqa/train.json").read_text())
    records[2]["facts"] = "one fact, not a list"
    (root / "strategyqa/train.json").write_text(json.dumps(records))
    result = cli("tasks", "--data-dir", root, "--json")
    rows = {r["task"]: r for r in json.loads(result.out)}
    assert result.code == 0 and "train.json: record 2: 'facts' is str, expected list" in rows["strategy_qa"]["source"]


# 6: validate catches late failures before any teacher money is spent ------------------------------------------

@pytest.mark.parametrize("student, message", [
    ('model = "/no/such/folder"', "student[0].model: folder '/no/such/folder' does not exist"),
    ('model = "no-org/no-such-model"', "student[0].model: cannot load 'no-org/no-such-model' (HF_HUB_OFFLINE is set"),
    ('tokenizer = "word"\narchitecture = { model_type = "gpt2", n_layer = "x" }',
     "student[0].architecture.n_layer: must be a whole number of at least 1, got 'x'"),
    ('tokenizer = "word"\narchitecture = { model_type = "gpt2", n_embd = 30, n_head = 4 }',
     "student[0].architecture: the width (30) must be divisible by the number of attention heads (4)"),
    ('tokenizer = "word"\narchitecture = { model_type = "no_such_type" }',
     "student[0].architecture: cannot build a 'no_such_type' config"),
    ('tokenizer = "word"\narchitecture = { model_type = "gpt2" }\nlora = { r = 4, dropout = "high" }',
     "student[0].lora.dropout: must be a number in [0, 1)"),
    ('model = "/no/such/folder"\nlora = { r = 4, dropout = "high" }',  # the LoRA table's problem shows too
     "student[0].lora.dropout: must be a number in [0, 1)"),
])
def test_validate_names_a_student_that_would_fail_after_the_teacher_was_paid(tmp_path, cli, student, message):
    with FakeOpenAI() as server:
        recipe = api_recipe(tmp_path, server.base_url, student=student)
        for command in ("validate", "run"):
            result = cli(command, recipe)
            assert result.code == 2 and message in result.err, result.err
        assert server.requests == 0  # run refused before the teach stage


def test_validate_names_a_missing_or_non_model_folder_for_the_hf_teacher(tmp_path, cli):
    from .conftest import TINY

    recipe = tmp_path / "r.toml"
    for model, message in ((tmp_path / "nowhere", f"teacher.model: folder '{tmp_path / 'nowhere'}' does not exist"),
                           (tmp_path, f"teacher.model: folder '{tmp_path}' is not a model folder: it has no "
                                      "config.json")):
        recipe.write_text(TINY.replace('kind = "program"', f'kind = "hf"\nmodel = "{model}"'))
        result = cli("validate", recipe)
        assert result.code == 2 and message in result.err, result.err


def test_recipe_value_errors_that_used_to_crash_late_or_with_a_traceback(tmp_path, cli):
    from .conftest import TINY

    recipe = tmp_path / "r.toml"
    recipe.write_text(TINY.replace("max_gen_toks = 32", "max_gen_toks = -5").replace(
        '[[strategy]]\nkind = "vanilla"', '[[strategy]]\nkind = "vanilla"\nname = { a = 1 }'))
    result = cli("validate", recipe)
    assert result.code == 2 and "Traceback" not in result.err
    assert "evaluation.max_gen_toks: must be at least 1" in result.err
    assert "strategy[0].name: must be a string of letters, digits" in result.err


def test_a_type_error_does_not_hide_the_sections_other_problems(tmp_path, cli):
    from .conftest import TINY

    recipe = tmp_path / "r.toml"
    recipe.write_text(TINY.replace("max_steps = 40", 'max_steps = "many"\nprocesses = 0'))
    result = cli("validate", recipe)
    assert result.code == 2
    assert "training.max_steps: expected an integer, got string 'many'" in result.err
    assert "training.processes: must be at least 1" in result.err


# 7: secrets put in the wrong place never land on disk ------------------------------------------------------------

KEY = "sk-test-0123456789abcdefSECRET"


def _files_hold(root: Path, text: str) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and text.encode() in p.read_bytes()]


def test_the_key_itself_in_api_key_env_is_refused_without_echoing_it(tmp_path, cli):
    with FakeOpenAI() as server:
        recipe = api_recipe(tmp_path, server.base_url)
        recipe.write_text(recipe.read_text().replace('api_key_env = ""', f'api_key_env = "{KEY}"'))
        for command in ("validate", "run"):
            result = cli(command, recipe)
            assert result.code == 2 and "teacher.api_key_env: must be the NAME of an environment variable" in result.err
            assert KEY not in result.err + result.out
    assert not (tmp_path / "runs").exists() or not _files_hold(tmp_path / "runs", KEY)


def test_credentials_in_the_url_and_secrets_in_extra_body_are_refused(tmp_path, cli):
    recipe = api_recipe(tmp_path, f"http://user:{KEY}@127.0.0.1:9/v1",
                        extra_teacher=f'extra_body = {{ api_key = "{KEY}", top_k = 5 }}')
    result = cli("validate", recipe)
    assert result.code == 2 and KEY not in result.err
    assert "teacher.base_url: holds a secret (user:password@, a key in its query, or a key itself)" in result.err
    assert "teacher.extra_body.api_key: looks like a secret" in result.err


HF = "hf_" + "aB3dE5gH7jK9mN1pQ3sT5vX7z"
GROQ = "gsk_" + "aB3dE5gH7jK9mN1pQ3sT5vX7zaB3d"


@pytest.mark.parametrize("place", [
    'api_key_env = "{HF}"', 'api_key_env = "{GROQ}"',
    'serve = "env VLLM_API_KEY={KEY} vllm serve {{model}} --port {{port}}"',
    'serve = "env HF_TOKEN={HF} vllm serve {{model}} --port {{port}}"',
    "serve = \"vllm serve {{model}} --port {{port}} '--api-key' {KEY}\"",
    'base_url = "http://127.0.0.1:9/v1?api_key={KEY}"', 'base_url = "http://127.0.0.1:9/v1?key=abcdef123456"',
    'extra_body = {{ user = "{KEY}" }}', 'extra_body = {{ metadata = {{ note = "{HF}" }} }}',
    'extra_body = {{ auth = "plain-words-but-auth" }}', 'extra_body = {{ extra_headers = {{ X-Id = "{GROQ}" }} }}',
])
def test_a_secret_wherever_it_is_put_is_refused_before_anything_is_written(tmp_path, cli, place):
    """The checks read values, not only key names: a key-shaped value, a NAME=value assignment in a serve
    command, a quoted --api-key, a key in a URL's query or anywhere in extra_body."""
    recipe = api_recipe(tmp_path, "http://127.0.0.1:9/v1")
    line = place.format(KEY=KEY, HF=HF, GROQ=GROQ)
    field = line.split(" = ", 1)[0]
    text = recipe.read_text()
    text = "\n".join(x for x in text.splitlines() if not x.startswith(f"{field} = "))  # the recipe's own, if any
    recipe.write_text(text.replace('[teacher]\n', f'[teacher]\n{line}\n', 1))
    result = cli("validate", recipe)
    assert result.code == 2, result.err
    assert f"teacher.{field}" in result.err and "Traceback" not in result.err
    said = [x for x in result.err.splitlines() if x.startswith("error: ") and "secret" in x.split(": ", 3)[3]]
    assert len(said) == len({x.split(": ")[2] for x in said}), "one message per secret"
    for secret in (KEY, HF, GROQ):
        assert secret not in result.err + result.out
    assert not (tmp_path / "runs").exists() or not _files_hold(tmp_path / "runs", KEY)


def test_a_secret_in_the_evaluation_server_command_is_refused(tmp_path, cli):
    recipe = api_recipe(tmp_path, "http://127.0.0.1:9/v1")
    recipe.write_text(recipe.read_text() + f'\n[evaluation]\nserve = "env HF_TOKEN={HF} vllm serve {{model}}"\n'
                      if "[evaluation]" not in recipe.read_text() else recipe.read_text().replace(
                          "[evaluation]\n", f'[evaluation]\nserve = "env HF_TOKEN={HF} vllm serve {{model}} --port '
                                             f'{{port}}"\n', 1))
    result = cli("validate", recipe)
    assert result.code == 2 and "evaluation.serve: passes a secret on the command line" in result.err
    assert HF not in result.err


def test_api_key_in_the_recipe_says_where_the_key_goes(tmp_path, cli):
    recipe = api_recipe(tmp_path, "http://127.0.0.1:9/v1", extra_teacher=f'api_key = "{KEY}"')
    result = cli("validate", recipe)
    assert result.code == 2 and KEY not in result.err
    assert "teacher.api_key: never put a secret in a recipe: export it as an environment variable" in result.err


def test_the_keys_value_is_redacted_from_everything_the_run_writes(tmp_path, cli, monkeypatch):
    """The key is in the environment as documented, and also (by mistake) in a place the harness writes: the
    model name the recipe gives. A key of no provider's shape (a key-shaped one is refused before anything runs),
    so the run goes ahead: every file of the run, the results and the output mask it."""
    from harness import secrets

    KEY = "private-0123456789abcdefSECRET"  # noqa: N806 - the key of this test, of no provider's shape
    monkeypatch.setenv("TEST_KEY", KEY)
    with FakeOpenAI(api_key=KEY) as server:
        recipe = api_recipe(tmp_path, server.base_url, strategy='kind = "fine_tune_cot"\nfilter = false')
        recipe.write_text(recipe.read_text().replace('api_key_env = ""', 'api_key_env = "TEST_KEY"').replace(
            'model = "m"', f'model = "m-{KEY}"'))
        result = cli("run", recipe)
    try:
        assert result.code == 0, result.err
        assert server.requests > 0 and KEY not in result.err + result.out
        assert not _files_hold(tmp_path / "runs", KEY) and not _files_hold(tmp_path / "results", KEY)
        manifest = json.loads((tmp_path / "runs" / "api" / "manifest.json").read_text())
        assert manifest["recipe_resolved"]["teacher"]["config"]["model"] == "m-[REDACTED]"
    finally:
        secrets._SECRETS.discard(KEY)  # other tests in this process must not see it masked


@pytest.mark.parametrize("line", ['[task]\nnote = "{KEY}"', '[teacher]\nmodel_note = "see {HF}"'])
def test_a_key_shaped_value_in_any_table_is_refused(tmp_path, cli, line):
    recipe = api_recipe(tmp_path, "http://127.0.0.1:9/v1")
    section, rest = line.format(KEY=KEY, HF=HF).split("\n", 1)
    text = recipe.read_text()
    recipe.write_text(text.replace(f"{section}\n", f"{section}\n{rest}\n", 1) if section in text
                      else text + f"\n{section}\n{rest}\n")
    result = cli("validate", recipe)
    assert result.code == 2 and "looks like an API key or token; keys never go in a recipe" in result.err
    assert KEY not in result.err and HF not in result.err


def test_a_served_student_that_dies_mid_evaluation_is_one_message(tmp_path, cli):
    """evaluation.backend = "vllm" with a server that crashes after a few requests: one message naming the
    server's log, exit 2, no traceback from lm-eval's retries or its requests in flight; training is kept."""
    import sys

    recipe = tmp_path / "die.toml"
    command = f"{sys.executable} {REPO / 'tests' / 'fake_openai.py'} --port {{port}} --model {{model}} --die-after 5"
    recipe.write_text(f"""[run]
name = "die"
output_dir = "{tmp_path / 'runs'}"

[task]
kind = "synthetic_arithmetic"
train_size = 60
validation_size = 0
test_size = 40

[teacher]
kind = "program"

[[strategy]]
kind = "vanilla"

[[student]]
kind = "transformers"
tokenizer = "word"
architecture = {{ model_type = "gpt2", n_layer = 1, n_embd = 32, n_head = 2, n_positions = 128 }}

[training]
max_steps = 2
batch_size = 8
threads = 1

[evaluation]
batch_size = 8
max_gen_toks = 16
backend = "vllm"
serve = "{command}"
serve_timeout = 60

[[sink]]
kind = "local"
dir = "{tmp_path / 'results'}"
""")
    result = cli("run", recipe)
    assert result.code == 2
    assert "error: evaluation: the served student stopped answering" in result.err
    assert "serve.log" in result.err and "Traceback" not in result.err and "retrying" not in result.err
    assert (tmp_path / "runs" / "die" / "train-vanilla" / "done.json").is_file()


def test_a_served_teacher_failing_while_scoring_is_one_message(tmp_path):
    """On-policy distillation with a served teacher answering 500 to the scoring requests: a clear error naming
    the server's log, not an openai traceback."""
    import sys

    import torch

    from harness.errors import EnvironmentFailure
    from harness.serve import ServedScorer

    command = f"{sys.executable} {REPO / 'tests' / 'fake_openai.py'} --port {{port}} --model {{model}} --score-fault"
    scorer = ServedScorer(command, "m", tmp_path / "serve.log", timeout=60)
    try:
        with pytest.raises(EnvironmentFailure, match=r"the teacher's server \(m\) answered HTTP 500 while scoring "
                                                      r"the student's samples .*its log: .*serve\.log"):
            scorer.score(torch.tensor([[5, 6, 7]]), torch.ones(1, 3, dtype=torch.long), 4)
    finally:
        scorer.close()
