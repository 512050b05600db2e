"""Instruct (chat-template) students: a tiny random-initialised Llama with a locally built tokenizer that carries a
ChatML template. The loss covers the assistant's tokens only; evaluation renders prompts through the template
(lm-eval's apply_chat_template) and stops at its end-of-turn; the stock CLI reproduces the score."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import TINY

CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def tiny_instruct_model(path: Path, texts: list[str]) -> Path:
    """A 1-layer Llama (SmolLM-style; random weights) whose word-level tokenizer has ChatML's markers as special tokens and its
    template; EOS is a different token, so stopping at the end of the turn is the template's doing."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from harness_builtins.student_transformers import train_word_tokenizer

    # the template's words and markers as they occur after a special token or newline (no leading space)
    # (and numbers at the start of a line: the rationale and the answer begin there)
    tok = train_word_tokenizer([*texts, "user", "assistant", "\n", "<", "think", ">", "/", *map(str, range(100))])
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tok.chat_template = CHATML
    cfg = AutoConfig.for_model("llama", vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                               num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                               max_position_embeddings=256, tie_word_embeddings=True,
                               bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id,
                               pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def _task_texts() -> list[str]:
    from harness.components import create

    task = create("task", "synthetic_arithmetic", train_size=300, validation_size=10, test_size=12)
    splits = task.load()
    return [e.question for split in splits.values() for e in split] + ["1 + 2 = 3. 3 - 1 = 2. 2 * 2 = 4. --> 4"]


@pytest.fixture(scope="module")
def instruct_dir(tmp_path_factory) -> Path:
    # (a Llama config: transformers 5 loads a Qwen2 folder's tokenizer as Qwen2's byte-level BPE, whatever the
    # folder's tokenizer.json says, so a word-level tokenizer cannot ride on a Qwen2 config)
    return tiny_instruct_model(tmp_path_factory.mktemp("instruct") / "model", _task_texts())


def test_the_loss_covers_the_assistant_turn_only(instruct_dir):
    from transformers import AutoTokenizer

    from harness import TrainingExample
    from harness_builtins.student_transformers import encode
    from harness_builtins.student_transformers.chat import chat_format

    tok = AutoTokenizer.from_pretrained(str(instruct_dir))
    chat = chat_format(tok, "auto")
    assert chat.end_of_turn == "<|im_end|>"
    example = TrainingExample("e0", "Tom has 3 apples. How many?", "<think>\n3 + 2 = 5.\n</think>\n\n5")
    (row,) = encode(tok, [example], 256, chat=chat)
    masked = [i for i, label in zip(row["input_ids"], row["labels"]) if label == -100]
    learned = [label for label in row["labels"] if label != -100]
    assert row["input_ids"] == masked + learned  # the prompt first, then every learned token
    # what the model sees is exactly what lm-eval renders at evaluation (user turn + the assistant's opening)
    assert tok.decode(masked, skip_special_tokens=False) == chat.prefix(example.prompt)
    assert tok.decode(masked, skip_special_tokens=False).startswith("<|im_start|>user\n") and tok.decode(masked, skip_special_tokens=False).endswith("<|im_start|>assistant\n")
    # the loss: the assistant's content and its end-of-turn, nothing of the user's turn, no EOS
    assert tok.decode(learned, skip_special_tokens=False).startswith("<think>")
    assert tok.decode(learned, skip_special_tokens=False).rstrip("\n").endswith("<|im_end|>")
    assert tok.eos_token_id not in learned and tok.unk_token_id not in learned


def test_chat_on_without_a_template_is_a_clear_error(tmp_path):
    from harness.errors import BadInputError
    from harness_builtins.student_transformers import train_word_tokenizer
    from harness_builtins.student_transformers.chat import chat_format

    tok = train_word_tokenizer(["a b c"])
    assert chat_format(tok, "auto") is None
    with pytest.raises(BadInputError, match="no chat template"):
        chat_format(tok, "on")


@pytest.mark.slow
def test_a_chat_student_trains_and_evaluates_and_the_stock_cli_reproduces_it(tmp_path, instruct_dir):
    from harness.cli import main

    recipe = tmp_path / "tiny.toml"
    recipe.write_text(
        TINY.replace("[run]\n", f'[run]\noutput_dir = "{tmp_path / "runs"}"\n', 1)
        .replace('tokenizer = "word"\narchitecture = { model_type = "gpt2", n_layer = 1, n_embd = 32, n_head = 2, '
                 'n_positions = 128 }', f'model = "{instruct_dir}"\nname = "llama-tiny-instruct"')
        .replace("max_steps = 40", "max_steps = 150").replace("max_gen_toks = 32", "max_gen_toks = 48")
        .replace('[[strategy]]\nkind = "vanilla"\n\n', "")
        + f'\n[[sink]]\nkind = "local"\ndir = "{tmp_path / "results"}"\n')
    assert main(["run", str(recipe), "--set", 'strategy.0.format="think"', "--set", "training.learning_rate=3e-3"]) == 0
    run = tmp_path / "runs" / "tiny"
    metrics = json.loads((run / "evaluate-fine_tune_cot" / "metrics.json").read_text())
    assert metrics["evaluation"]["chat_template"] is True
    (samples_file,) = (run / "evaluate-fine_tune_cot" / "lm_eval").rglob("samples_*.jsonl")
    samples = [json.loads(line) for line in samples_file.read_text().splitlines()]
    context = samples[0]["arguments"]["gen_args_0"]["arg_0"]
    assert context.startswith("<|im_start|>user\n") and context.endswith("<|im_start|>assistant\n")
    assert "<|im_end|>" in samples[0]["arguments"]["gen_args_0"]["arg_1"]["until"]
    outputs = [s["resps"][0][0] for s in samples]
    assert any("</think>" in o for o in outputs), outputs  # it learned the think form in 150 steps

    # the stock CLI with --apply_chat_template on the written task, from another directory
    out = tmp_path / "cli"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    model = run / "train-fine_tune_cot" / "model"
    subprocess.run(
        [str(Path(sys.executable).with_name("lm_eval")), "--model", "hf", "--model_args",
         f"pretrained={model},dtype=float32", "--tasks", metrics["task"], "--include_path", metrics["task_dir"],
         "--device", "cpu", "--batch_size", "12", "--apply_chat_template", "--output_path", str(out),
         "--log_samples"], check=True, env=env, capture_output=True, text=True, timeout=600, cwd="/")
    cli = json.loads(next(out.rglob("results_*.json")).read_text())["results"][metrics["task"]]
    assert cli["acc,none"] == metrics["acc"]
    cli_samples = [json.loads(line) for line in next(out.rglob("samples_*.jsonl")).read_text().splitlines()]
    assert [s["resps"] for s in cli_samples] == [s["resps"] for s in samples]


def _recipe(tmp_path: Path, student: str, strategy: str = 'kind = "fine_tune_cot"', training: str = "") -> Path:
    from harness.testing import tiny_recipe

    text = tiny_recipe(tmp_path, strategy)
    head, _, rest = text.partition("[[student]]")
    rest = rest.split("\n[", 1)[1] if "\n[" in rest else ""
    path = tmp_path / "r.toml"
    path.write_text(head + f"[[student]]\nkind = \"transformers\"\n{student}\n\n[" + rest + training)
    return path


@pytest.mark.parametrize("case,message", [
    ("select_every", "model selection (training.select_every) generates from plain prompts"),
    ("packed", "trains on conversations, which the harness does not render through a chat template"),
    ("template_raises", "the tokenizer's chat template fails to render a conversation"),
    ("on_without_template", "student[0].chat_template: the student's tokenizer has no chat template"),
    ("no_weights", "has a config but no weights"),
])
def test_validate_refuses_what_a_chat_student_would_refuse_after_training(tmp_path, instruct_dir, cli, case,
                                                                          message):
    import shutil

    model = instruct_dir
    student = f'model = "{model}"'
    strategy = 'kind = "fine_tune_cot"'
    if case == "packed":
        strategy = 'kind = "socratic"\npacked = true'
    if case in ("template_raises", "on_without_template", "no_weights"):
        model = tmp_path / "copy"
        shutil.copytree(instruct_dir, model)
        student = f'model = "{model}"'
        config = json.loads((model / "tokenizer_config.json").read_text())
        if case == "template_raises":
            (model / "chat_template.jinja").write_text("{{ raise_exception('no assistant turns here') }}")
            config["chat_template"] = "{{ raise_exception('no assistant turns here') }}"
        elif case == "on_without_template":
            (model / "chat_template.jinja").unlink(missing_ok=True)
            config.pop("chat_template", None)
            student += '\nchat_template = "on"'
        else:
            (model / "model.safetensors").unlink()
        (model / "tokenizer_config.json").write_text(json.dumps(config))
    recipe = _recipe(tmp_path, student, strategy)
    args = ["--set", "training.select_every=5"] if case == "select_every" else []
    result = cli("validate", recipe, *args)
    assert result.code == 2, result.err
    assert message in result.err and "Traceback" not in result.err
