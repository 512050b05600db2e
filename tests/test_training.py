"""Students at scale: encoder-decoder models, LoRA, gradient accumulation, several processes (torchrun and the
deepspeed launcher, ZeRO-2/3 on CPU), DeepSpeed JSON files, model selection and out-of-memory messages."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from harness.errors import RunError, is_out_of_memory
from harness.generation import greedy_generate
from harness.io import read_jsonl
from harness.records import TRAINING, RecordTable
from harness.types import TrainingContext, TrainingExample, TrainingSettings
from harness_builtins.student_transformers import (
    Collator,
    Config,
    Selection,
    TransformersStudent,
    encode,
    train_word_tokenizer,
)

ROWS = [TrainingExample("a", "Tom has 5 apples. He buys 3 more. How many?", " 5 + 3 = 8. --> 8"),
        TrainingExample("b", "Mia has 12 cards. She loses 2. How many?", " 12 - 2 = 10. --> 10")]
CORPUS = [r.prompt + r.target for r in ROWS]
GPT2 = {"model_type": "gpt2", "n_layer": 1, "n_embd": 32, "n_head": 2, "n_positions": 64}
T5 = {"model_type": "t5", "d_model": 32, "num_layers": 1, "num_decoder_layers": 1, "num_heads": 2, "d_ff": 64,
      "d_kv": 16, "dropout_rate": 0.0}


def train(tmp_path, arch=GPT2, rows=ROWS * 8, context=None, lora=None, **settings):
    student = TransformersStudent(Config(architecture=arch, tokenizer="word", lora=lora or {}))
    ticks: list[int] = []
    knobs = {"max_steps": 6, "batch_size": 4, "logging_steps": 2, "threads": 1, **settings}
    info = student.train(rows, TrainingSettings(**knobs), tmp_path / "model", CORPUS, ticks.append, context)
    return info, ticks, student


def test_encoder_decoder_rows_feed_the_prompt_to_the_encoder():
    tok = train_word_tokenizer(CORPUS)
    (row,) = encode(tok, ROWS[:1], 256, encoder_decoder=True)
    assert row["input_ids"] == tok(ROWS[0].prompt)["input_ids"]
    assert row["labels"] == tok(ROWS[0].target, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    batch = Collator(tok.pad_token_id)(encode(tok, ROWS, 256, encoder_decoder=True))
    assert batch["labels"].shape[1] == max(len(tok(r.target, add_special_tokens=False)["input_ids"]) + 1
                                           for r in ROWS)  # labels padded to their own width


def test_decoder_only_prompts_keep_the_tokenizers_bos_but_never_an_eos(tmp_path):
    """EOS handling per family: a tokenizer that wraps text in BOS ... EOS (as some do) keeps the BOS on the
    prompt, loses the EOS there, and every target still ends in exactly one EOS."""
    from tokenizers import processors

    tok = train_word_tokenizer(CORPUS)
    bos, eos = tok.eos_token_id, tok.eos_token_id
    tok._tokenizer.post_processor = processors.TemplateProcessing(
        single="<eos> $A <eos>", special_tokens=[("<eos>", eos)])
    (row,) = encode(tok, ROWS[:1], 256)
    plain = tok(ROWS[0].prompt, add_special_tokens=False)["input_ids"]
    target = tok(ROWS[0].target, add_special_tokens=False)["input_ids"]
    assert row["input_ids"] == [bos] + plain + target + [eos]
    assert row["labels"] == [-100] * (len(plain) + 1) + target + [eos]


def test_t5_student_from_scratch_trains_saves_and_generates(tmp_path):
    info, ticks, student = train(tmp_path, arch=T5, max_steps=40, learning_rate=1e-2, logging_steps=10)
    assert info["encoder_decoder"] is True and info["steps"] == 40 and sum(ticks) == 40
    assert info["losses"][-1] < info["losses"][0] / 3  # it learns
    model, tok = student.load(tmp_path / "model")
    assert type(model).__name__ == "T5ForConditionalGeneration"
    out = greedy_generate(model, tok, [ROWS[0].prompt], 8)
    assert out[0].startswith(" 5 + 3 = 8")


def test_weighted_loss_on_an_encoder_decoder_student(tmp_path):
    rows = [TrainingExample(r.example_id, r.prompt, r.target, weight=w) for r in ROWS for w in (0.5, 1.5)] * 4
    info, _, _ = train(tmp_path, arch=T5, rows=rows, max_steps=4)
    assert info["steps"] == 4 and info["losses"][-1] < info["losses"][0]


@pytest.mark.parametrize("arch", [GPT2, T5], ids=["gpt2", "t5"])
def test_lora_trains_only_the_adapter_and_saves_a_merged_model(tmp_path, arch):
    import torch
    from safetensors.torch import load_file

    info, _, student = train(tmp_path, arch=arch, lora={"r": 4, "alpha": 8}, max_steps=8, learning_rate=5e-2)
    assert 0 < info["trainable_parameters"] < info["parameters"] / 10
    model, _ = student.load(tmp_path / "model")  # a plain model: the adapter merged in
    assert not any("lora" in n for n, _ in model.named_parameters())
    adapter = load_file(str(tmp_path / "model" / "adapter" / "adapter_model.safetensors"))
    assert adapter and all("lora" in k for k in adapter)
    # the frozen base is the seeded initial model: merged weights differ from it only by B @ A
    torch.manual_seed(0)
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM

    initial_config = AutoConfig.from_pretrained(tmp_path / "model")
    auto = AutoModelForSeq2SeqLM if initial_config.is_encoder_decoder else AutoModelForCausalLM
    initial = auto.from_config(initial_config)
    changed = [n for n, p in model.named_parameters() if not torch.equal(p, dict(initial.named_parameters())[n])]
    assert changed and all(any(t in n for t in ("attn", "SelfAttention", "EncDecAttention")) for n in changed)


def test_lora_unknown_setting_is_a_recipe_problem():
    assert Config(architecture=GPT2, tokenizer="word", lora={"rank": 4}).check() == [
        ("lora.rank", "unknown LoRA setting; use r, alpha, dropout, target_modules")]


def test_gradient_accumulation_matches_the_full_batch(tmp_path):
    no_dropout = {**GPT2, "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0}  # dropout draws per shape
    full, _, _ = train(tmp_path / "full", arch=no_dropout)
    accumulated, ticks, _ = train(tmp_path / "acc", arch=no_dropout, micro_batch_size=2)
    assert accumulated["batch"] == {"per_device": 2, "accumulation": 2, "total": 4} and sum(ticks) == 6
    assert accumulated["losses"] == pytest.approx(full["losses"], rel=1e-4)


def test_batch_knobs_must_fit_together():
    assert ("batch_size", "6 is not a multiple of processes x micro_batch_size = 4; change batch_size or "
                          "micro_batch_size") in TrainingSettings(batch_size=6, micro_batch_size=4).check()
    assert TrainingSettings(processes=2).check() == [
        ("processes", '2 processes need a launcher: set training.launcher = "torchrun" or "deepspeed"')]


@pytest.fixture(scope="module")
def single_process(tmp_path_factory):
    return train(tmp_path_factory.mktemp("single"))[0]


@pytest.mark.slow
@pytest.mark.parametrize("launcher,stage", [("torchrun", None), ("deepspeed", 2), ("deepspeed", 3)])
def test_two_processes_on_cpu_match_the_single_process_loss_curve(tmp_path, launcher, stage, single_process):
    """Real launchers, 2 processes talking over gloo; the global batch is the same, so is the curve."""
    info, ticks, student = train(tmp_path, processes=2, launcher=launcher, deepspeed_stage=stage)
    assert info["processes"] == 2 and info["deepspeed_stage"] == stage and info["steps"] == 6
    assert info["batch"] == {"per_device": 2, "accumulation": 1, "total": 4}
    assert sum(ticks) == 6  # the parent's progress followed rank 0
    assert info["losses"] == pytest.approx(single_process["losses"], rel=0.02)
    model, _ = student.load(tmp_path / "model")  # ZeRO-3's partitions were gathered into a whole model
    assert sum(p.numel() for p in model.parameters()) == single_process["parameters"]


def test_a_failing_launched_process_is_reported_with_its_log(tmp_path):
    student = TransformersStudent(Config(architecture={"model_type": "gpt2", "n_layer": "x"}, tokenizer="word"))
    with pytest.raises(RunError, match=r"torchrun training with 2 processes failed \(exit \d+\); log: .*launch.log"):
        student.train(ROWS, TrainingSettings(max_steps=1, batch_size=2, processes=2, launcher="torchrun"),
                      tmp_path / "model", CORPUS, lambda n: None)


def test_selection_keeps_the_best_scoring_model(tmp_path):
    """Scores 0.2, 0.9, 0.4 at steps 2, 4, 6: the saved model is the step-4 one, not the last."""
    from safetensors.torch import load_file

    scores = iter([0.2, 0.9, 0.4])
    info, _, _ = train(tmp_path, context=TrainingContext(validate=lambda model, tok: next(scores)), select_every=2)
    assert info["selection"] == {"history": [[2, 0.2], [4, 0.9], [6, 0.4]], "best_step": 4, "best_accuracy": 0.9}
    saved = load_file(str(tmp_path / "model" / "model.safetensors"))
    best = load_file(str(tmp_path / "selection" / "best" / "model.safetensors"))
    assert saved.keys() == best.keys() and all((saved[k] == best[k]).all() for k in saved)
    last = train(tmp_path / "last")[0]
    assert last["losses"] == info["losses"]  # selection does not disturb training itself


def test_selection_scores_real_generations(tmp_path):
    """The validator the pipeline builds: greedy generation scored with the task's answer rule."""
    from harness._evaluation.selection import make_validator
    from harness_builtins.strategy_vanilla import Config as VanillaConfig
    from harness_builtins.strategy_vanilla import Vanilla
    from harness_builtins.task_synthetic import Config as TaskConfig
    from harness_builtins.task_synthetic import SyntheticArithmetic

    task = SyntheticArithmetic(TaskConfig(train_size=4, validation_size=4, test_size=1))
    validation = task.load()["validation"]
    strategy = Vanilla(VanillaConfig())
    validate = make_validator(strategy, task, validation, 4, 2)
    rows = [TrainingExample(e.id, strategy.prompt(e), f" {e.answer}") for e in validation]
    student = TransformersStudent(Config(architecture=GPT2, tokenizer="word"))
    student.train(rows * 16, TrainingSettings(max_steps=150, batch_size=8, threads=1, learning_rate=1e-2),
                  tmp_path / "m", [r.prompt + r.target for r in rows], lambda n: None)
    model, tok = student.load(tmp_path / "m")
    assert validate(model, tok) == 1.0  # memorised: every answer read back right
    assert make_validator(strategy, task, validation, 4, 2)(model.__class__(model.config), tok) < 1.0


def test_selection_state_survives_a_restart(tmp_path):
    s = Selection(lambda m, t: 0.5, 2, tmp_path, None)

    class Trainer:
        def save_model(self, path):
            Path(path).mkdir(parents=True, exist_ok=True)

    class Model:
        training = True

        def eval(self):
            self.training = False

        def train(self, mode=True):
            self.training = mode

    s.trainer = Trainer()
    s.score(Model(), 2)
    again = Selection(lambda m, t: 0.1, 2, tmp_path, None)
    assert again.best == [2, 0.5] and again.history == [[2, 0.5]]


def test_training_that_cannot_hold_its_optimizer_state_stops_before_its_first_step(tmp_path, monkeypatch, cli):
    """12 bytes per trainable parameter (fp32 gradient, AdamW's two moments) beyond the model: when even that
    exceeds the free memory, the train stage stops at once, naming the knobs; the data stages are kept."""
    from harness_builtins.student_transformers import trainer

    from .conftest import TINY

    trainer.check_fits(10**9, cuda=False, deepspeed=True)  # DeepSpeed shards or offloads it: not checked
    monkeypatch.setattr(trainer, "free_memory", lambda cuda: 10**9)
    trainer.check_fits(10**7, cuda=False, deepspeed=False)  # 0.12 GB of 1 GB: fits
    with pytest.raises(RunError, match=r"training would not fit: 100,000,000 trainable parameters need 1\.1 GiB "
                                       r"for their gradients and optimizer state beyond the model itself, and this "
                                       r"machine has 0\.9 GiB free\. To fit: lower training\.micro_batch_size"):
        trainer.check_fits(10**8, cuda=False, deepspeed=False)

    monkeypatch.setattr(trainer, "free_memory", lambda cuda: 1000)
    recipe = tmp_path / "tiny.toml"
    recipe.write_text(TINY.replace("[run]\n", f'[run]\noutput_dir = "{tmp_path / "runs"}"\n', 1)
                      + f'\n[[sink]]\nkind = "local"\ndir = "{tmp_path / "results"}"\n')
    result = cli("run", recipe)
    assert result.code == 1 and "training would not fit: " in result.err and "Traceback" not in result.err
    run = tmp_path / "runs" / "tiny"
    assert (run / "task" / "done.json").is_file() and (run / "build-vanilla" / "done.json").is_file()
    assert not list(run.glob("train-*/done.json"))


def test_out_of_memory_is_recognised():
    assert is_out_of_memory(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 8 GB"))
    assert is_out_of_memory(RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert is_out_of_memory(MemoryError())
    assert not is_out_of_memory(RuntimeError("shape mismatch"))


@pytest.mark.skipif(sys.platform != "linux", reason="uses RLIMIT_AS")
def test_real_out_of_memory_becomes_a_message_with_the_knobs(tmp_path):
    """Training under a real address-space cap: the CPU allocator fails and the message names what to change."""
    script = textwrap.dedent("""
        import resource, sys
        from pathlib import Path
        import torch
        from harness.errors import RunError, is_out_of_memory
        from harness.types import TrainingExample, TrainingSettings
        from harness_builtins.student_transformers import Config, TransformersStudent
        import transformers, accelerate  # loaded before the cap
        from transformers import Trainer, TrainingArguments
        rows = [TrainingExample(str(i), "a " * 200, " b" * 50) for i in range(64)]
        student = TransformersStudent(Config(architecture={"model_type": "gpt2", "n_layer": 2, "n_embd": 1024,
                                                           "n_head": 8, "n_positions": 256}, tokenizer="word"))
        vm = next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmSize"))
        resource.setrlimit(resource.RLIMIT_AS, (vm + 600 * 2**20, vm + 600 * 2**20))
        try:
            student.train(rows, TrainingSettings(max_steps=2, batch_size=64, threads=1), Path(sys.argv[1]),
                          ["a b"], lambda n: None)
        except RunError as exc:
            print("RUNERROR", exc)
    """)
    out = subprocess.run([sys.executable, "-c", script, str(tmp_path / "m")], capture_output=True, text=True,
                         timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert "RUNERROR training ran out of memory" in out.stdout, out.stderr[-2000:]
    assert "training.micro_batch_size" in out.stdout and "training.max_length" in out.stdout


def test_deepspeed_json_auto_values_and_mismatches(tmp_path, cli):
    from harness.testing import tiny_recipe

    (tmp_path / "ds.json").write_text(json.dumps({
        "train_micro_batch_size_per_gpu": 8, "gradient_clipping": "auto", "zero_optimization": {"stage": 2},
        "optimizer": {"type": "AdamW", "params": {"lr": 0.1}}}))
    recipe = tmp_path / "r.toml"
    recipe.write_text(tiny_recipe(str(tmp_path)).replace("batch_size = 16\n",
                                                         'batch_size = 16\ndeepspeed_config = "ds.json"\n'))
    res = cli("validate", recipe)
    assert res.code == 2
    assert f"training.deepspeed_config: {tmp_path / 'ds.json'}: train_micro_batch_size_per_gpu = 8 but " \
           "training.micro_batch_size gives 16" in res.err
    assert "optimizer.params.lr = 0.1 but training.learning_rate gives 0.002" in res.err
    (tmp_path / "ds.json").write_text(json.dumps({"train_micro_batch_size_per_gpu": "auto",
                                                  "zero_optimization": {"stage": 2}}))
    assert cli("validate", recipe).code == 0
    (tmp_path / "ds.json").write_text("{not json")
    bad = cli("validate", recipe)
    assert bad.code == 2 and "ds.json: not valid JSON" in bad.err


def _recipe(tmp_path, name: str, **training) -> Path:
    from harness.testing import tiny_recipe

    extra = "".join(f"{k} = {json.dumps(v)}\n" for k, v in training.items())
    text = tiny_recipe(str(tmp_path), steps=240).replace('name = "tiny"', f'name = "{name}"')
    recipe = tmp_path / f"{name}.toml"
    recipe.write_text(text.replace("batch_size = 16\n", f"batch_size = 16\nlogging_steps = 20\n{extra}"))
    return recipe


def test_kill_9_mid_training_then_resume_ends_like_an_uninterrupted_run(tmp_path):
    """A run killed after a checkpoint resumes from it (not from step 0) and ends with the same model and the
    same test metrics as a run never interrupted."""
    import signal
    import time

    from safetensors.torch import load_file

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    run = [sys.executable, "-m", "harness.cli", "run"]
    killed = _recipe(tmp_path, "killed", checkpoint_steps=40, keep_checkpoints=2, threads=1)
    proc = subprocess.Popen([*run, str(killed)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoints = tmp_path / "runs" / "killed" / "checkpoints"
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None:
        if list(checkpoints.glob("train-*/checkpoint-80/harness-complete.json")):  # the checkpoint is whole
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "runs" / "killed" / "train-fine_tune_cot").exists()  # the stage did not finish

    resumed = subprocess.run([*run, str(killed)], env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    whole = _recipe(tmp_path, "whole", threads=1)
    assert subprocess.run([*run, str(whole)], env=env, capture_output=True, text=True, timeout=300).returncode == 0

    def outcome(name):
        root = tmp_path / "runs" / name
        info = json.loads((root / "train-fine_tune_cot" / "train.json").read_text())
        metrics = json.loads((root / "evaluate-fine_tune_cot" / "metrics.json").read_text())
        weights = load_file(str(root / "train-fine_tune_cot" / "model" / "model.safetensors"))
        return info, metrics, weights

    info, metrics, weights = outcome("killed")
    whole_info, whole_metrics, whole_weights = outcome("whole")
    assert info["resumed_from_step"] >= 80 and info["steps"] == whole_info["steps"] == 240
    assert info["final_loss"] == pytest.approx(whole_info["final_loss"], abs=1e-5)
    assert {k: metrics[k] for k in ("acc", "contains_answer", "correct_format")} == \
        {k: whole_metrics[k] for k in ("acc", "contains_answer", "correct_format")}
    assert all(float((weights[k] - whole_weights[k]).abs().max()) < 1e-5 for k in weights)
    assert not checkpoints.exists() or not any(checkpoints.iterdir())  # removed once the model is saved


def test_recipe_model_selection_scores_the_validation_split(tmp_path, cli):
    recipe = _recipe(tmp_path, "select", select_every=10, select_examples=6)
    recipe.write_text(recipe.read_text().replace("max_steps = 240", "max_steps = 20")
                      .replace("validation_size = 0", "validation_size = 10"))
    assert cli("run", recipe).code == 0
    info = json.loads((tmp_path / "runs" / "select" / "train-fine_tune_cot" / "train.json").read_text())
    assert [h[0] for h in info["selection"]["history"]] == [10, 20]
    assert all(0 <= h[1] <= 1 for h in info["selection"]["history"])
    socratic = _recipe(tmp_path, "sel_socratic", select_every=10)
    socratic.write_text(socratic.read_text().replace('kind = "fine_tune_cot"', 'kind = "socratic"')
                        .replace("validation_size = 0", "validation_size = 10"))
    res = cli("run", socratic)
    assert res.code == 2 and "training.select_every: this strategy answers through several generate calls" in res.err


DATA = Path(os.environ.get("HARNESS_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data"))


@pytest.mark.slow
@pytest.mark.skipif(not (DATA / "zero_shot_cot").exists(), reason=f"benchmark data not found under {DATA}")
def test_flan_t5_recipe_runs_with_two_processes_lora_and_zero2(tmp_path, cli, monkeypatch):
    """recipes/gsm8k_flan_t5.toml as shipped (encoder-decoder Fine-tune-CoT, LoRA, the deepspeed launcher,
    ZeRO-2), with a tiny from-scratch T5, 2 CPU processes and fp32 instead of 8 GPUs in bf16."""
    from .conftest import REPO

    monkeypatch.setenv("HARNESS_DATA_DIR", str(DATA))
    t5 = "{" + ", ".join(f"{k}={json.dumps(v)}" for k, v in T5.items()) + "}"
    result = cli("run", REPO / "recipes" / "gsm8k_flan_t5.toml", "--set", f'run.output_dir="{tmp_path / "runs"}"',
                 "--set", 'student.model=""', "--set", "student.tokenizer=word", "--set", f"student.architecture={t5}",
                 "--set", "training.processes=2", "--set", "training.batch_size=4", "--set",
                 "training.micro_batch_size=2", "--set", "training.max_steps=4", "--set", "training.bf16=false",
                 "--set", "evaluation.limit=4", "--set", "evaluation.max_gen_toks=8",
                 "--set", "sink.kind=local", "--set", f'sink.dir="{tmp_path / "results"}"')
    assert result.code == 0, result.err
    run = tmp_path / "runs" / "gsm8k_flan_t5"
    info = json.loads((run / "train-fine_tune_cot" / "train.json").read_text())
    assert info["processes"] == 2 and info["deepspeed_stage"] == 2 and info["encoder_decoder"] is True
    assert info["trainable_parameters"] < info["parameters"] and (run / "train-fine_tune_cot" / "model" / "adapter").is_dir()
    rows = RecordTable(run / "build-fine_tune_cot" / "train.arrow", TRAINING)
    assert len(rows) and not any(r.prompt.endswith("###") for r in rows)
    samples = list(read_jsonl(next((tmp_path / "results").rglob("samples_*.jsonl"))))
    assert len(samples) == 4


def test_shipped_deepspeed_json_fits_the_flan_t5_recipe(tmp_path, cli):
    from .conftest import REPO

    text = (REPO / "recipes" / "gsm8k_flan_t5.toml").read_text().replace(
        "deepspeed_stage = 2", f'deepspeed_config = "{REPO / "recipes" / "deepspeed" / "zero3_offload.json"}"')
    (tmp_path / "r.toml").write_text(text)
    assert cli("validate", tmp_path / "r.toml", "--no-load-checks").code == 0
    # without --no-load-checks, the hub model that is not cached offline is named before any teacher call
    result = cli("validate", tmp_path / "r.toml")
    assert result.code == 2 and "student[0].model: cannot load 'google/flan-t5-large' (HF_HUB_OFFLINE is set" in result.err


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="per-stage peaks need Linux")
def test_peak_memory_is_per_stage():
    from harness._run.memory import peak_memory, reset_peak_memory

    reset_peak_memory()
    before = peak_memory()["peak_rss_mb"]
    block = bytearray(300 * 2**20)  # touched: zero-filled
    block[::4096] = b"x" * len(block[::4096])
    high = peak_memory()["peak_rss_mb"]
    del block
    reset_peak_memory()
    after = peak_memory()["peak_rss_mb"]
    assert high >= before + 290 and after < high - 250


@pytest.mark.slow
def test_bf16_with_zero2_on_cpu(tmp_path, single_process):
    """bfloat16 mixed precision through DeepSpeed ZeRO-2 (CPU autocast here; the same knob on a GPU)."""
    info, _, student = train(tmp_path, bf16=True, deepspeed_stage=2)
    assert info["deepspeed_stage"] == 2 and info["steps"] == 6
    assert info["losses"] == pytest.approx(single_process["losses"], rel=0.05)  # bf16 rounding, same curve
    model, _ = student.load(tmp_path / "model")
    assert sum(p.numel() for p in model.parameters()) == single_process["parameters"]


@pytest.mark.skipif(sys.platform != "linux", reason="uses RLIMIT_AS")
def test_real_out_of_memory_in_evaluation_names_its_knobs(tmp_path):
    """A run whose evaluation (not training) hits a real address-space cap: the message names evaluation's knobs,
    and the trained model stays on disk."""
    from harness.testing import tiny_recipe

    recipe = tmp_path / "r.toml"
    text = tiny_recipe(str(tmp_path), strategy='kind = "vanilla"', steps=1)
    assert "n_embd = 32, n_head = 2" in text
    recipe.write_text(text.replace("n_embd = 32, n_head = 2", "n_embd = 1024, n_head = 8"))
    script = textwrap.dedent("""
        import resource, sys
        from pathlib import Path
        from harness import hookimpl
        from harness.cli import main

        class CapEvaluation:  # an observer plugin: caps the address space as the evaluation stage starts
            @hookimpl
            def on_stage_start(self, stage, key):
                if stage.startswith("evaluate"):
                    vm = next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmSize"))
                    resource.setrlimit(resource.RLIMIT_AS, (vm + 300 * 2**20, vm + 300 * 2**20))

        import harness._run.registry as plugins
        load = plugins.load_registry
        def with_cap(*a, **k):
            registry = load(*a, **k)
            registry.manager.register(CapEvaluation(), name="cap")
            return registry
        plugins.load_registry = with_cap
        sys.exit(main(["run", sys.argv[1], "--set", "task.test_size=400", "--set", "evaluation.batch_size=400",
                       "--set", "evaluation.max_gen_toks=200"]))
    """)
    out = subprocess.run([sys.executable, "-c", script, str(recipe)], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode != 0
    text = out.stdout + out.stderr
    assert "evaluation ran out of memory" in text, text[-3000:]
    assert "evaluation.batch_size (now 400)" in text and "evaluation.max_gen_toks (now 200)" in text
    assert list((tmp_path / "runs").rglob("train-vanilla/model/model.safetensors"))


@pytest.mark.slow
def test_two_nodes_match_the_single_process_loss_curve(tmp_path, single_process):
    """Two "nodes" on 127.0.0.1: two torchrun agents of one process each, meeting at node 0's address, train with
    the same global batch as one process and give its loss curve; node 0 writes the model and the summary."""
    from .conftest import free_port, on_two_nodes

    knobs = {"nodes": 2, "processes": 1, "launcher": "torchrun", "master_addr": "127.0.0.1",
             "master_port": free_port()}
    results = on_two_nodes(lambda rank: train(tmp_path / f"node{rank}", context=TrainingContext(node_rank=rank),
                                              **knobs)[0])
    info = results[0]
    assert not isinstance(info, Exception), info
    assert results[1] == {"node_rank": 1}
    assert info["processes"] == 2 and info["batch"] == {"per_device": 2, "accumulation": 1, "total": 4}
    assert info["losses"] == pytest.approx(single_process["losses"], rel=0.02)
    assert (tmp_path / "node0" / "model" / "model.safetensors").is_file()
    assert not (tmp_path / "node1" / "model" / "model.safetensors").exists()


def test_several_nodes_need_a_rendezvous_and_fitting_batches():
    assert ("nodes", '2 nodes need launcher = "torchrun" (a rendezvous), or the deepspeed launcher with a '
                     "hostfile") in TrainingSettings(nodes=2).check()
    assert ("batch_size", "6 is not a multiple of nodes x processes x micro_batch_size = 4; change batch_size or "
                          "micro_batch_size") in TrainingSettings(batch_size=6, micro_batch_size=2, nodes=2,
                                                             launcher="torchrun").check()
    assert TrainingSettings(batch_size=8, nodes=2, processes=2, launcher="torchrun").per_device_batch() == 2
    from harness_builtins.student_transformers.launch import launcher_command, slurm_first_host

    assert slurm_first_host("gpu[03-05,09],cpu1") == "gpu03" and slurm_first_host("node7") == "node7"
    cmd = launcher_command(TrainingSettings(nodes=2, processes=4, launcher="torchrun"), 1, "h0", 29500,
                           Path("/j/node-1/job.json"))
    assert cmd[3:] == ["--nproc_per_node", "4", "--nnodes", "2", "--node_rank", "1", "--master_addr", "h0",
                       "--master_port", "29500", "-m", "harness_builtins.student_transformers.worker",
                       "/j/node-1/job.json"]
    elastic = launcher_command(TrainingSettings(nodes=2, launcher="torchrun", rdzv_endpoint="h0:29400"), 1, "", 0,
                               Path("/j/node-1/job.json"))
    assert "--rdzv-endpoint" in elastic and "h0:29400" in elastic and "--node_rank" not in elastic
    ds = launcher_command(TrainingSettings(nodes=2, launcher="deepspeed", deepspeed_stage=2, hostfile="/h"), 0, "h0",
                          29500, Path("/j/job.json"))
    assert ds[ds.index("--hostfile") + 1] == "/h" and ds[ds.index("--num_nodes") + 1] == "2"
