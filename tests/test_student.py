"""The transformers student: tokenizer, loss masking, training, DeepSpeed."""

import math
import os

import pytest

from harness.types import TrainingExample, TrainingSettings
from harness_builtins.student_transformers import (
    Collator,
    Config,
    TransformersStudent,
    deepspeed_config,
    encode,
    train_word_tokenizer,
)

ROWS = [TrainingExample("a", "Tom has 5 apples. He buys 3 more. How many? ###", " 5 + 3 = 8. --> 8"),
        TrainingExample("b", "Mia has 12 cards. She loses 2. How many? ###", " 12 - 2 = 10. --> 10")]
ARCH = {"model_type": "gpt2", "n_layer": 1, "n_embd": 32, "n_head": 2, "n_positions": 64}


@pytest.fixture(scope="module")
def tokenizer():
    return train_word_tokenizer([r.text() for r in [*ROWS, CONVERSATION]])


def test_word_tokenizer_round_trips_and_numbers_are_single_tokens(tokenizer):
    text = ROWS[0].prompt + ROWS[0].target
    assert tokenizer.decode(tokenizer(text)["input_ids"]) == text
    for n in (0, 7, 42, 99):
        assert len(tokenizer(f" {n}", add_special_tokens=False)["input_ids"]) == 1
        assert len(tokenizer(str(n), add_special_tokens=False)["input_ids"]) == 1
    assert tokenizer.convert_tokens_to_ids("▁-->") != tokenizer.unk_token_id


def test_encode_masks_the_prompt_exactly_and_appends_eos(tokenizer):
    (row,) = encode(tokenizer, ROWS[:1], max_length=256)
    prompt = tokenizer(ROWS[0].prompt, add_special_tokens=False)["input_ids"]
    target = tokenizer(ROWS[0].target, add_special_tokens=False)["input_ids"]
    assert row["input_ids"] == prompt + target + [tokenizer.eos_token_id]
    assert row["labels"] == [-100] * len(prompt) + target + [tokenizer.eos_token_id]
    (short,) = encode(tokenizer, ROWS[:1], max_length=5)
    assert short["input_ids"] == prompt[:5] and short["labels"] == [-100] * 5


CONVERSATION = TrainingExample("c", "Tom has 5 apples. He buys 3 more. How many? ### Q: How many after buying? A:",
                               " 5 + 3 = 8", turns=((" Q: How many? A:", " 8"),))


def test_encode_a_conversation_learns_every_target_and_no_context(tokenizer):
    (row,) = encode(tokenizer, [CONVERSATION], max_length=256)
    ids = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    prompt, first, context, last = (ids(CONVERSATION.prompt), ids(" 5 + 3 = 8"), ids(" Q: How many? A:"),
                                    ids(" 8"))
    eos = tokenizer.eos_token_id
    assert row["input_ids"] == prompt + first + context + last + [eos]
    assert row["labels"] == [-100] * len(prompt) + first + [-100] * len(context) + last + [eos]
    assert tokenizer.decode(row["input_ids"], skip_special_tokens=True) == CONVERSATION.text()


def test_a_conversation_scores_each_target_as_its_own_turn_would(tokenizer):
    """One packed sequence gives every target token the same log-probability as the per-turn example that ends
    there: the same loss terms for one forward pass instead of one per turn."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), **{k: v for k, v in ARCH.items()
                                                                       if k != "model_type"})).eval()
    second_turn = TrainingExample("c", CONVERSATION.prompt + CONVERSATION.target + CONVERSATION.turns[0][0], " 8")
    (packed,), (single,) = encode(tokenizer, [CONVERSATION], 256), encode(tokenizer, [second_turn], 256)

    def target_logprobs(row):
        with torch.no_grad():
            logits = model(torch.tensor([row["input_ids"]])).logits[0, :-1].log_softmax(-1)
        labels = torch.tensor(row["labels"][1:])
        keep = labels != -100
        return logits[keep].gather(1, labels[keep, None])[:, 0]

    # the single turn's target " 8" + EOS are the packed row's last two learned tokens
    torch.testing.assert_close(target_logprobs(packed)[-2:], target_logprobs(single), rtol=0, atol=1e-5)


def test_an_encoder_decoder_student_refuses_conversations(tokenizer):
    from harness import BadInputError

    with pytest.raises(BadInputError, match="encoder-decoder student"):
        encode(tokenizer, [CONVERSATION], 256, encoder_decoder=True)


def test_collator_pads_right_and_counts_real_tokens(tokenizer):
    rows = encode(tokenizer, ROWS, 256)
    collate = Collator(tokenizer.pad_token_id)
    batch = collate(rows)
    lengths = [len(r["input_ids"]) for r in rows]
    assert batch["input_ids"].shape == (2, max(lengths))
    assert batch["attention_mask"].sum().item() == sum(lengths) == collate.tokens
    short = lengths.index(min(lengths))
    assert (batch["labels"][short, min(lengths):] == -100).all()


def test_config_rules():
    assert Config(model="gpt2").check() == []
    assert Config().check() == [("model", "give exactly one of model (hub id or directory) or architecture "
                                          "(from scratch)")]
    assert Config(architecture={"n_layer": 1}, tokenizer="word").check() == [
        ("architecture", 'needs model_type, e.g. model_type = "gpt2"')]


def test_deepspeed_config_fills_from_the_training_knobs():
    ds = deepspeed_config(TrainingSettings(deepspeed_stage=3, deepspeed_offload=True))
    assert ds["zero_optimization"] == {"stage": 3, "offload_optimizer": {"device": "cpu"},
                                       "stage3_gather_16bit_weights_on_model_save": True}
    assert ds["train_micro_batch_size_per_gpu"] == "auto" and ds["optimizer"]["params"]["lr"] == "auto"


def _train(tmp_path, **settings):
    student = TransformersStudent(Config(architecture=ARCH, tokenizer="word"))
    ticks = []
    info = student.train(ROWS * 8, TrainingSettings(max_steps=6, batch_size=4, logging_steps=2, threads=1,
                                                    **settings),
                         tmp_path / "model", [r.prompt + r.target for r in ROWS], ticks.append)
    model, tok = student.load(tmp_path / "model")
    return info, ticks, model, tok


def test_training_saves_a_loadable_model(tmp_path):
    info, ticks, model, tok = _train(tmp_path)
    assert info["steps"] == 6 and len(ticks) == 6 and math.isfinite(info["train_loss"])
    assert len(info["losses"]) == 3
    assert info["tokens"] > 0 and info["parameters"] == sum(p.numel() for p in model.parameters())
    assert (tmp_path / "model" / "config.json").exists() and tok.eos_token == "<eos>"


@pytest.fixture(scope="module")
def plain_run(tmp_path_factory):
    return _train(tmp_path_factory.mktemp("plain"))[0]


@pytest.mark.slow
@pytest.mark.parametrize("stage", [0, 2, 3])
def test_deepspeed_zero_on_cpu(tmp_path, stage, plain_run):
    """Real DeepSpeed ZeRO through the transformers Trainer, single process on CPU; several in one process."""
    plain = plain_run
    info, ticks, model, _ = _train(tmp_path / "ds", deepspeed_stage=stage)
    assert info["deepspeed_stage"] == stage and info["steps"] == 6 and len(ticks) == 6
    # the environment is restored after training: nothing started later inherits a process group or
    # accelerate's DeepSpeed switches
    assert not [k for k in os.environ if k.startswith("ACCELERATE_") or k in ("WORLD_SIZE", "MASTER_PORT")]
    # same data, seed and optimizer: the loss curve matches the plain run closely
    assert info["losses"] == pytest.approx(plain["losses"], rel=0.05)
    assert sum(p.numel() for p in model.parameters()) == plain["parameters"]


def test_unloadable_model_is_a_clear_error(tmp_path):
    from harness.errors import BadInputError

    student = TransformersStudent(Config(model=str(tmp_path / "no-such-model")))
    with pytest.raises(BadInputError, match=r"^student.model: cannot load '.*no-such-model'"):
        student.train(ROWS, TrainingSettings(max_steps=1), tmp_path / "out", [], lambda n: None)


def test_weighted_loss_is_the_weighted_mean_of_per_example_losses():
    import torch

    from harness_builtins.student_transformers import weighted_loss

    torch.manual_seed(0)
    logits = torch.randn(2, 4, 7)
    labels = torch.tensor([[-100, 1, 2, 3], [-100, -100, 5, -100]])
    per = []
    for i in range(2):
        keep = labels[i, 1:] != -100
        per.append(torch.nn.functional.cross_entropy(logits[i, :-1][keep], labels[i, 1:][keep]))
    w = torch.tensor([1.5, 0.5])
    assert weighted_loss(logits, labels, w).item() == pytest.approx(((per[0] * 1.5 + per[1] * 0.5) / 2).item())


def test_weights_reach_the_batch_only_when_used(tokenizer):
    rows = encode(tokenizer, ROWS, 256)
    assert "weight" not in rows[0] and "weights" not in Collator(0)(rows)
    weighted = [TrainingExample("a", ROWS[0].prompt, ROWS[0].target, weight=0.5), ROWS[1]]
    batch = Collator(0)(encode(tokenizer, weighted, 256))
    assert batch["weights"].tolist() == [0.5, 1.0]


def test_training_with_weights(tmp_path):
    student = TransformersStudent(Config(architecture=ARCH, tokenizer="word"))
    rows = [TrainingExample("a", r.prompt, r.target, weight=w) for r in ROWS for w in (0.2, 1.8)] * 4
    info = student.train(rows, TrainingSettings(max_steps=4, batch_size=4, logging_steps=2, threads=1),
                         tmp_path / "m", [r.prompt + r.target for r in ROWS], lambda n: None)
    assert info["steps"] == 4 and math.isfinite(info["train_loss"])


def test_a_checkpoint_marked_complete_but_missing_its_trainer_state_is_not_resumed(tmp_path):
    from harness_builtins.student_transformers.trainer import CHECKPOINT_MARKER, latest_complete_checkpoint

    for step in (10, 20):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        (folder / CHECKPOINT_MARKER).write_text("{}")
        (folder / "trainer_state.json").write_text("{}")
    (tmp_path / "checkpoint-20" / "trainer_state.json").unlink()
    found, skipped = latest_complete_checkpoint(tmp_path)
    assert found == tmp_path / "checkpoint-10" and [p.name for p in skipped] == ["checkpoint-20"]
    assert not (tmp_path / "checkpoint-20").exists()
