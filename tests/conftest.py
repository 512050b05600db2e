from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")

from harness._run.registry import load_registry  # noqa: E402
from harness.cli import main  # noqa: E402

REPO = Path(__file__).resolve().parent.parent

# A recipe small enough to run end to end in seconds: 300 problems, 40 steps, 12 test questions.
TINY = textwrap.dedent("""\
    [run]
    name = "tiny"
    seed = 0

    [task]
    kind = "synthetic_arithmetic"
    train_size = 300
    validation_size = 10
    test_size = 12

    [teacher]
    kind = "program"

    [[strategy]]
    kind = "vanilla"

    [[strategy]]
    kind = "fine_tune_cot"

    [[student]]
    kind = "transformers"
    tokenizer = "word"
    architecture = { model_type = "gpt2", n_layer = 1, n_embd = 32, n_head = 2, n_positions = 128 }

    [training]
    max_steps = 40
    batch_size = 16
    threads = 1
    logging_steps = 10

    [evaluation]
    batch_size = 12
    max_gen_toks = 32
    """)


@pytest.fixture(scope="session")
def registry():
    return load_registry()


@pytest.fixture
def tiny_recipe(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(TINY.replace("[run]\n", f'[run]\noutput_dir = "{tmp_path / "runs"}"\n', 1)
                    + f'\n[[sink]]\nkind = "local"\ndir = "{tmp_path / "results"}"\n')
    return path


class CLIResult:
    def __init__(self, code: int, out: str, err: str):
        self.code, self.out, self.err = code, out, err


@pytest.fixture
def cli(capsys):
    """Run the harness CLI in-process; return exit code, stdout and stderr."""

    def run(*args: str) -> CLIResult:
        code = main([str(a) for a in args])
        captured = capsys.readouterr()
        return CLIResult(code, captured.out, captured.err)

    return run


def tiny_causal_lm(path: Path, texts: list[str], positions: int = 512, width: int = 32) -> Path:
    """Save a 1-layer GPT-2 (2 heads of width/2) with random weights and a word-level tokenizer trained on
    ``texts`` into ``path``."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from harness_builtins.student_transformers import train_word_tokenizer

    tok = train_word_tokenizer(texts)
    tok.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    cfg = AutoConfig.for_model("gpt2", vocab_size=len(tok), n_layer=1, n_embd=width, n_head=2, n_positions=positions,
                               bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id,
                               pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def _untracked() -> set[str]:
    """Files and folders in the checkout that git does not track, ignored ones included (a folder git does not
    track at all counts once), with what lies two levels down in ``runs/`` and ``results/`` (where a recipe
    without ``output_dir`` or a sink writes)."""
    import subprocess

    listed = subprocess.run(["git", "ls-files", "--others", "--directory", "--no-empty-directory"], cwd=REPO,
                            capture_output=True, text=True, check=False).stdout.split("\n")
    # where runs write by default (relative to the working directory): every entry two levels down
    runs = {str(p.relative_to(REPO)) for top in ("runs", "results") if (REPO / top).is_dir()
            for p in (REPO / top).glob("*/*")}
    tools = ("__pycache__", ".pytest_cache", ".ruff_cache", ".egg-info", ".coverage")  # made by the tools
    return {p for p in listed if p and not any(t in p for t in tools)} | runs


def pytest_sessionstart(session):
    session.config._checkout_before = _untracked()


def pytest_sessionfinish(session, exitstatus):
    """Tests never write into the checkout: anything new in it, ignored or not, fails the session."""
    before = getattr(session.config, "_checkout_before", None)
    if before is None:
        return
    new = sorted(_untracked() - before)
    if new:
        session.config.get_terminal_writer().line()
        session.config.get_terminal_writer().line(
            "tests wrote into the checkout (write under tmp_path instead): " + ", ".join(new[:10]), red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def on_two_nodes(node, timeout: float = 300) -> dict[int, object]:
    """``node(rank)`` for ranks 0 and 1 at once (two "nodes" on this machine, each its own launcher agent): what
    each returned, or the exception it raised."""
    import threading

    results: dict[int, object] = {}

    def run(rank: int) -> None:
        try:
            results[rank] = node(rank)
        except Exception as exc:  # the caller looks at it
            results[rank] = exc

    threads = [threading.Thread(target=run, args=(rank,)) for rank in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=timeout)
    return results
