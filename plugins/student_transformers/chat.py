"""Chat-template (instruct) students: the prompt rendered as the user turn, the target as the assistant turn, the
loss on the assistant's tokens only (its end-of-turn marker included), as lm-eval renders the same prompt with
``apply_chat_template`` at evaluation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from harness import BadInputError

_PROBE = "HARNESSPROBE"
MODES = ("auto", "on", "off")


@dataclass(frozen=True)
class ChatFormat:
    tokenizer: Any
    end_of_turn: str
    """The text that closes the assistant's turn (``<|im_end|>``, ``<|eot_id|>``): generation stops there."""

    def prefix(self, prompt: str) -> str:
        """What the model sees before it answers: the user turn and the assistant's opening (the template's
        generation prompt), exactly as lm-eval's ``apply_chat_template`` renders it."""
        return self.tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                                  add_generation_prompt=True)

    def split(self, prompt: str, target: str) -> tuple[str, str]:
        """``(prefix, assistant part)``: the assistant part is the target and what the template closes it with."""
        prefix = self.prefix(prompt)
        full = self.tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}, {"role": "assistant", "content": target}], tokenize=False)
        if not full.startswith(prefix):
            raise BadInputError("student.chat_template: the tokenizer's chat template renders the user turn "
                                "differently once an assistant turn follows, so the prompt the model learns from "
                                "would not be the one it is asked at evaluation; set chat_template = \"off\"")
        return prefix, full[len(prefix):]


def chat_format(tokenizer: Any, mode: str) -> ChatFormat | None:
    """The tokenizer's chat format when ``mode`` asks for it (``auto``: when the tokenizer has a chat template)."""
    if mode == "off":
        return None
    if not getattr(tokenizer, "chat_template", None):
        if mode == "on":
            raise BadInputError("student.chat_template = \"on\": the student's tokenizer has no chat template; use "
                                "an instruct model's tokenizer or chat_template = \"auto\"")
        return None
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": "q"}, {"role": "assistant", "content": _PROBE}], tokenize=False)
    closing = rendered.split(_PROBE, 1)[1].strip() if _PROBE in rendered else ""
    return ChatFormat(tokenizer, closing.split()[0] if closing else tokenizer.eos_token)
