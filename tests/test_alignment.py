"""Token-level distillation across tokenizers: the teacher's tokens and top-k alternatives carried onto the
student's tokens by text (harness.alignment), through the student's encoding into the KD loss."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import pytest
import torch

from harness import TrainingExample, alignment
from harness.testing import TOKENIZER_KINDS, tiny_tokenizer
from harness_builtins.strategy_distill import KDLoss
from harness_builtins.student_transformers.encoding import Collator, encode

TEXT = " 12 + 30 = 42. --> 42"


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory):
    from transformers import AutoTokenizer

    root = tmp_path_factory.mktemp("tokenizers")
    return {kind: AutoTokenizer.from_pretrained(str(tiny_tokenizer(root / kind, kind=kind))) for kind in TOKENIZER_KINDS}


class GreedyTokenizer:
    """A hand-made student tokenizer: longest match over a fixed vocabulary, offsets included."""

    eos_token_id, unk_token_id = 0, 1

    def __init__(self, vocabulary):
        self.vocabulary = {t: i for i, t in enumerate(["<eos>", "<unk>", *vocabulary])}

    def __call__(self, text, add_special_tokens=False, return_offsets_mapping=False):
        ids, offsets, at = [], [], 0
        while at < len(text):
            piece = next((text[at:b] for b in range(len(text), at, -1) if text[at:b] in self.vocabulary), None)
            piece = piece or text[at]
            ids.append(self.vocabulary.get(piece, self.unk_token_id))
            offsets.append((at, at + len(piece)))
            at += len(piece)
        return {"input_ids": ids, **({"offset_mapping": offsets} if return_offsets_mapping else {})}


def test_alignment_by_character_span_on_hand_made_cases():
    text = "a cat sat"
    teacher = alignment.spans(["a", " cat", " sat"])
    assert teacher == [(0, 1), (1, 5), (5, 9)]
    # a word tokenizer's offsets leave the spaces out: the same words, aligned
    assert alignment.align(text, teacher, [(0, 1), (2, 5), (6, 9)]) == [0, 1, 2]
    # SentencePiece-like: the space as a token of its own aligns with nothing, the word still aligns
    assert alignment.align(text, teacher, [(0, 1), (1, 2), (2, 5), (5, 9)]) == [0, None, 1, 2]
    # a split (" ca" + "t") and a merge (" cat sat" as one token) align with nothing
    assert alignment.align(text, teacher, [(0, 1), (1, 4), (4, 5), (5, 9)]) == [0, None, None, 2]
    assert alignment.align(text, teacher, [(0, 1), (1, 9)]) == [0, None]
    # the same whitespace-only token on both sides aligns; unicode spans are characters
    assert alignment.align("x  y", alignment.spans(["x", " ", " y"]), [(0, 1), (1, 2), (2, 4)]) == [0, 1, 2]
    assert alignment.align("café 😀", alignment.spans(["caf", "é", " 😀"]), [(0, 4), (4, 6)]) == [None, 2]


def test_alternatives_map_to_one_student_token_or_the_first_of_several_with_their_mass_merged():
    student = GreedyTokenizer([" cat", " dog", "s", " the", "."])
    vocab = alignment.StudentVocabulary(student)
    ids = student.vocabulary
    alternatives = [" cat", " cats", " dog", "\ufffd", "", " zebra"]
    logprobs = [math.log(0.4), math.log(0.2), math.log(0.1), math.log(0.05), math.log(0.05), math.log(0.1)]
    top, lps = alignment.map_position(ids[" cat"], alternatives, logprobs, " cat", vocab)
    # " cats" is " cat" + "s": its mass joins " cat"; a broken UTF-8 piece and an empty text go to the tail;
    # " zebra" starts with " ", an unknown character here: no student token of its own -> the tail too
    assert top == [ids[" cat"], ids[" dog"]]
    assert [math.exp(x) for x in lps] == pytest.approx([0.6, 0.1], abs=1e-6)
    assert alignment.map_position(ids[" dog"], [alignment.END], [0.0], alignment.END, vocab) == ([ids[" dog"]],
                                                                                                  [0.0])


@pytest.mark.parametrize("teacher_kind,student_kind", list(itertools.product(TOKENIZER_KINDS, repeat=2)))
def test_whitespace_conventions_of_bpe_sentencepiece_and_word_tokenizers_align(tokenizers, teacher_kind,
                                                                                student_kind):
    teacher, student = tokenizers[teacher_kind], tokenizers[student_kind]
    ids = teacher(TEXT, add_special_tokens=False)["input_ids"] + [teacher.eos_token_id]
    texts = alignment.teacher_text(teacher, ids)
    assert "".join(t for t in texts if t) .strip() == TEXT.strip()
    assert texts[-1] is alignment.END
    alternatives = alignment.alternative_texts(teacher, [[i] for i in ids])
    signals = {"target_text": texts, "topk_text": alternatives, "topk_logprobs": [[-0.25]] * len(ids)}
    out = alignment.to_student(signals, student)
    text = "".join(t for t in texts if t)
    encoded = student(text, add_special_tokens=False, return_offsets_mapping=True)
    assert out["target_ids"] == encoded["input_ids"] + [student.eos_token_id]
    # every student token whose word the teacher also kept whole carries the teacher's token, on its own id
    teacher_cores = {alignment.core(text, s) for s in alignment.spans(texts[:-1])}
    for sid, span, top, lps in zip(encoded["input_ids"], encoded["offset_mapping"], out["topk_ids"],
                                   out["topk_logprobs"]):
        if alignment.core(text, tuple(span)) in teacher_cores:
            assert top == [sid] and lps == [-0.25]
        elif alignment.core(text, tuple(span)) is not None:
            assert top == []  # no aligned teacher token: cross-entropy
    assert out["topk_ids"][-1] == [student.eos_token_id]  # the teacher's end is the student's
    words = {"12", "+", "30", "=", "-->"}  # kept whole by all three tokenizers
    assert out["aligned"] >= len(words) + 1
    if teacher_kind == student_kind:
        assert out["aligned"] == len(out["target_ids"])


def test_a_utf8_character_split_over_byte_tokens_reads_whole(tokenizers):
    bpe = tokenizers["byte_bpe"]
    ids = bpe(" café", add_special_tokens=False)["input_ids"]
    assert "\ufffd" in bpe.decode(ids[-1:])  # é is two byte tokens
    texts = alignment.teacher_text(bpe, ids)
    assert "".join(texts) == " café" and "" in texts  # the first byte adds nothing, the second the character
    assert "\ufffd" not in "".join(alignment.alternative_texts(bpe, [ids])[0])


def test_mapped_mass_is_the_teacher_mass_of_the_alternatives_that_map(tokenizers):
    teacher, student = tokenizers["word"], tokenizers["byte_bpe"]
    ids = teacher(TEXT, add_special_tokens=False)["input_ids"]
    gen = torch.Generator().manual_seed(0)
    top = [[i] + torch.randint(3, len(teacher), (7,), generator=gen).tolist() for i in ids]
    probs = torch.softmax(torch.randn(len(ids), 9, generator=gen), -1)[:, :8]  # 8 of 9: a tail is left
    lps = probs.log().tolist()
    texts = alignment.teacher_text(teacher, ids)
    alternatives = alignment.alternative_texts(teacher, top)
    out = alignment.to_student({"target_text": texts, "topk_text": alternatives, "topk_logprobs": lps}, student)
    vocab = alignment.StudentVocabulary(student)
    text = "".join(texts)
    spans = alignment.spans(texts)
    offsets = student(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    matched = alignment.align(text, spans, offsets)
    checked = 0
    for i, s_lps in zip(matched, out["topk_logprobs"]):
        if i is None:
            continue
        mappable = sum(math.exp(lp) for t, lp in zip(alternatives[i], lps[i])
                       if t == texts[i] or vocab.first(t) is not None)
        assert sum(math.exp(x) for x in s_lps) == pytest.approx(mappable, abs=1e-5)
        assert sum(math.exp(x) for x in s_lps) <= sum(math.exp(x) for x in lps[i]) + 1e-6
        checked += 1
    assert checked >= 5


def _batch(tokenizer, signals):
    example = TrainingExample("q1", "Q: 12 + 30 ?", TEXT, signals=signals)
    rows = encode(tokenizer, [example], max_length=64)
    batch = Collator(tokenizer.pad_token_id)(rows)
    batch["num_items"] = int((batch["labels"][:, 1:] != -100).sum())
    return batch


@pytest.mark.parametrize("kind", ["forward", "reverse", "jsd"])
def test_with_identical_tokenizers_the_cross_tokenizer_loss_is_the_direct_loss(tokenizers, kind):
    from transformers import AutoConfig, AutoModelForCausalLM

    tok = tokenizers["byte_bpe"]
    ids = tok(TEXT, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    size = len(tok)
    # alternatives that are text (a real teacher's top-k mostly are; byte pieces and special tokens other than EOS
    # have no text and would go to the tail on the text path only)
    words = list(dict.fromkeys(ids[:-1]))
    top = [[i] + [w for w in words if w != i][:3] for i in ids]
    lps = [[math.log(0.6), math.log(0.2), math.log(0.1), math.log(0.05)] for _ in ids]
    direct = _batch(tok, {"target_ids": ids, "topk_ids": top, "topk_logprobs": lps})
    across = _batch(tok, {"target_text": alignment.teacher_text(tok, ids),
                          "topk_text": alignment.alternative_texts(tok, top), "topk_logprobs": lps})
    assert torch.equal(direct["input_ids"], across["input_ids"])
    torch.manual_seed(0)
    config = AutoConfig.for_model("gpt2", vocab_size=size, n_layer=1, n_embd=16, n_head=2, n_positions=64)
    model = AutoModelForCausalLM.from_config(config).eval()  # no dropout: the same outputs twice
    losses = []
    for batch, cross in ((direct, False), (across, True)):
        objective = KDLoss(0.3, 2.0, kind, 0.5, cross_tokenizer=cross)
        outputs = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                        labels=batch["labels"])
        losses.append(float(objective.loss(outputs, batch["labels"], batch).detach()))
    assert losses[1] == pytest.approx(losses[0], rel=1e-6)  # float32 sums in another order


def test_student_tokens_without_a_teacher_token_learn_by_cross_entropy(tokenizers):
    from transformers import AutoConfig, AutoModelForCausalLM

    tok = tokenizers["byte_bpe"]
    size = len(tok)
    # no alternative maps anywhere: every position falls back to cross-entropy, so the loss is CE alone
    n = len(tok(TEXT, add_special_tokens=False)["input_ids"])
    texts = alignment.teacher_text(tok, tok(TEXT, add_special_tokens=False)["input_ids"])
    batch = _batch(tok, {"target_text": texts, "topk_text": [[""]] * n, "topk_logprobs": [[-0.1]] * n})
    assert (batch["topk_ids"] < 0).all()
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model("gpt2", vocab_size=size, n_layer=1, n_embd=16,
                                                                  n_head=2, n_positions=64))
    outputs = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"])
    objective = KDLoss(0.5, 2.0, "forward", 0.5, cross_tokenizer=True)
    assert float(objective.loss(outputs, batch["labels"], batch).detach()) == pytest.approx(float(outputs.loss.detach()),
                                                                                          rel=1e-5)
    assert objective.logged()["aligned"] == 0.0


def test_server_tokens_as_text_concatenate_to_the_completion():
    from harness_builtins.teacher_openai import _stream_text, _token_text

    e = "é".encode()
    tokens = [(" caf", None), ("\\xc3", [e[0]]), ("\\xa9", [e[1]]), ("!", None)]
    assert _stream_text(tokens) == [" caf", "", "é", "!"]
    assert _token_text(("bytes:\\xc3", None)) == "" and _token_text(("bytes:\\xc3\\xa9", None)) == "é"
    assert _token_text((" the", None)) == " the"


def test_unusable_text_signals_are_named():
    from harness.generation import signal_problem

    good = {"target_text": [" a", None], "topk_text": [[" a", " b"], [None]], "topk_logprobs": [[-0.1, -2], [0.0]]}
    assert signal_problem(good) is None
    assert "target_text[0]" in signal_problem({**good, "target_text": [None, None]})
    assert "differ in length" in signal_problem({**good, "topk_text": [[" a"], [None]]})
    assert "not a log-probability" in signal_problem({**good, "topk_logprobs": [[float("nan"), -2], [0.0]]})


@pytest.mark.parametrize("endpoint", ["completions", "chat"])
def test_a_hosted_api_s_top_logprobs_are_recorded_as_text(tmp_path, endpoint):
    """No tokenizer for the served model (a hosted API): the tokens and alternatives are recorded as the server
    named them, as text concatenating to the completion, the EOS it stopped on appended; no ids are asked for."""
    from harness_builtins.task_synthetic import Config as TaskConfig
    from harness_builtins.task_synthetic import SyntheticArithmetic
    from harness_builtins.teacher_openai import Config, OpenAITeacher

    from .fake_openai import FakeOpenAI

    task = SyntheticArithmetic(TaskConfig(train_size=4, validation_size=0, test_size=1))
    examples = task.load()["train"]
    with FakeOpenAI() as server:
        teacher = OpenAITeacher(Config(model="m", base_url=server.base_url, api_key_env="", cache_dir=str(tmp_path),
                                       prompt="fine_tune_cot", top_logprobs=5, endpoint=endpoint))
        assert teacher.signals() == ("topk_text",)
        out = teacher.generate(examples, task, lambda n: None)
    for gens in out:
        s = gens[0].meta["signals"]
        assert "target_ids" not in s and "topk_ids" not in s
        assert "".join(s["target_text"][:-1]).startswith(" Rationale 0 for ") and s["target_text"][-1] is None
        assert len(s["topk_text"]) == len(s["topk_logprobs"]) == len(s["target_text"])
        assert all(top[0] == t and len(top) == 5 for t, top in zip(s["target_text"][:-1], s["topk_text"]))


def _cross_recipe(tmp_path, teacher: str, student_tokenizer: str, cross: bool = True) -> Path:
    text = f"""[run]
name = "cross"
output_dir = "{tmp_path / 'runs'}"

[task]
kind = "synthetic_arithmetic"
train_size = 24
validation_size = 0
test_size = 4
min_ops = 1
max_ops = 1

[teacher]
{teacher}
prompt = "fine_tune_cot"
top_logprobs = 5
cache_dir = "{tmp_path / 'cache'}"

[[strategy]]
kind = "logit_kd"
filter = false
alpha = 0.5
cross_tokenizer = {str(cross).lower()}

[[student]]
kind = "transformers"
tokenizer = "{student_tokenizer}"
architecture = {{ model_type = "gpt2", n_layer = 1, n_embd = 32, n_head = 2, n_positions = 256 }}

[training]
max_steps = 2
batch_size = 4
threads = 1
logging_steps = 1

[evaluation]
max_gen_toks = 8

[[sink]]
kind = "local"
dir = "{tmp_path / 'results'}"
"""
    path = tmp_path / "cross.toml"
    path.write_text(text)
    return path


def _trained(tmp_path) -> dict:
    import json

    return json.loads((tmp_path / "runs" / "cross" / "train-logit_kd" / "train.json").read_text())


def test_logit_kd_across_tokenizers_from_a_hosted_api_end_to_end(tmp_path, cli):
    from .fake_openai import FakeOpenAI

    student = tiny_tokenizer(tmp_path / "student_tok", kind="sentencepiece", texts=["Rationale for"])
    with FakeOpenAI() as server:
        teacher = f'kind = "openai"\nmodel = "m"\nbase_url = "{server.base_url}"\napi_key_env = ""\nendpoint = "chat"'
        direct = cli("validate", _cross_recipe(tmp_path, teacher, str(student), cross=False))
        assert direct.code == 2 and "trains on the teacher's topk signals, which this teacher does not record" in \
            direct.err
        recipe = _cross_recipe(tmp_path, teacher, str(student))
        assert cli("validate", recipe).code == 0
        result = cli("run", recipe)
    assert result.code == 0, result.err
    record = _trained(tmp_path)
    assert all(0 < x["aligned"] <= 1 and math.isfinite(x["kd"]) for x in record["objective_log"])


def test_logit_kd_across_tokenizers_from_a_local_model_end_to_end(tmp_path, cli):
    """A word-level teacher (the hf teacher, its own tokenizer) and a byte-level BPE student."""
    from .conftest import tiny_causal_lm
    from .test_distillation import TEXTS

    model = tiny_causal_lm(tmp_path / "teacher", TEXTS, positions=128)
    student = tiny_tokenizer(tmp_path / "student_tok", kind="byte_bpe", texts=TEXTS)
    teacher = f'kind = "hf"\nmodel = "{model}"\nmax_tokens = 24\ntemperature = 1.0'
    refused = cli("validate", _cross_recipe(tmp_path, teacher, str(student), cross=False))
    assert refused.code == 2 and "or set cross_tokenizer = true on the strategy" in refused.err
    result = cli("run", _cross_recipe(tmp_path, teacher, str(student)))
    assert result.code == 0, result.err
    record = _trained(tmp_path)
    assert all(0 < x["aligned"] <= 1 and math.isfinite(x["kd"]) for x in record["objective_log"])


def test_on_policy_across_tokenizers_scores_the_student_s_samples_as_text(tmp_path):
    """With the teacher's own tokenizer on both sides, scoring the student's samples as text and carrying the
    top-k back gives exactly the teacher's top-k in ids, less special tokens other than EOS (no text: the tail)."""
    from transformers import AutoTokenizer

    from harness_builtins.strategy_distill import OnPolicyConfig, OnPolicyLoss
    from harness_builtins.teacher_hf import Scorer

    from .conftest import tiny_causal_lm
    from .test_distillation import TEXTS

    model = tiny_causal_lm(tmp_path / "teacher", TEXTS, positions=128)
    tok = AutoTokenizer.from_pretrained(str(model))
    loss = OnPolicyLoss(OnPolicyConfig(top_k=4, cross_tokenizer=True))
    loss.tokenizer, loss.scorer = tok, Scorer(str(model), "cpu")
    assert loss.signals == ("topk_text", "scores_text")
    prompts = [torch.tensor(tok(t.split(" ###")[0] + " ###", add_special_tokens=False)["input_ids"]) for t in TEXTS[:3]]
    continuations = [torch.tensor(tok(" " + t.split("### ")[1], add_special_tokens=False)["input_ids"]
                                  + [tok.eos_token_id]) for t in TEXTS[:3]]
    width = max(len(p) + len(c) for p, c in zip(prompts, continuations))
    across_ids, across_lps = loss._score_text(prompts, continuations, width, torch.device("cpu"))
    ids = torch.full((3, width), tok.pad_token_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for j, (p, c) in enumerate(zip(prompts, continuations)):
        ids[j, :len(p) + len(c)], mask[j, :len(p) + len(c)] = torch.cat([p, c]), 1
    direct_ids, direct_lps = loss.scorer.score(ids, mask, 4)
    for j, (p, c) in enumerate(zip(prompts, continuations)):
        special = set(tok.all_special_ids) - {tok.eos_token_id}
        for t in range(len(p), len(p) + len(c)):
            want = [(i, lp) for i, lp in zip(direct_ids[j, t].tolist(), direct_lps[j, t].tolist()) if i not in special]
            got = [(i, lp) for i, lp in zip(across_ids[j, t].tolist(), across_lps[j, t].tolist()) if i >= 0]
            assert [i for i, _ in got] == [i for i, _ in want]
            assert [lp for _, lp in got] == pytest.approx([lp for _, lp in want], abs=1e-4)
        assert (across_ids[j, :len(p)] == -1).all()  # the prompt is not scored


def test_on_policy_across_tokenizers_end_to_end(tmp_path, cli):
    from .conftest import tiny_causal_lm
    from .test_distillation import TEXTS

    model = tiny_causal_lm(tmp_path / "teacher", TEXTS, positions=256)
    student = tiny_tokenizer(tmp_path / "student_tok", kind="byte_bpe", texts=TEXTS)
    teacher = f'kind = "hf"\nmodel = "{model}"\nmax_tokens = 24\ntemperature = 1.0'
    recipe = _cross_recipe(tmp_path, teacher, str(student))
    recipe.write_text(recipe.read_text().replace('kind = "logit_kd"', 'kind = "on_policy"\nfraction = 1.0\n'
                                                 'max_new_tokens = 12\ntop_k = 4').replace(
        "alpha = 0.5\n", "").replace("train-logit_kd", "train-on_policy"))
    result = cli("run", recipe)
    assert result.code == 0, result.err
    import json

    record = json.loads((tmp_path / "runs" / "cross" / "train-on_policy" / "train.json").read_text())
    assert record["objective"]["sampled_rows"] > 0
    assert all(0 <= x["aligned"] <= 1 and math.isfinite(x["kd"]) for x in record["objective_log"])
