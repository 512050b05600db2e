"""A transformers student: decoder-only (``AutoModelForCausalLM``) or encoder-decoder (``AutoModelForSeq2SeqLM``,
e.g. T5), from a hub id, a local directory, or an architecture built from scratch.

From scratch, the student trains a word-level tokenizer on the run's own text (every number 0-99 one token, spaces
kept with a ``▁`` marker so decoding restores the text exactly). Training uses the transformers ``Trainer``: the
prompt masked out of the loss (labels -100) or fed to the encoder, EOS closing every target, length-grouped
batches padded only to their own longest row, gradient accumulation below ``micro_batch_size``, DeepSpeed ZeRO
(``deepspeed_stage`` or a DeepSpeed JSON), a LoRA adapter (``lora``), several processes through torchrun or the
deepspeed launcher, checkpoints a killed run resumes from, and validation-based model selection.

One concern per module: ``config`` (the recipe table), ``encoding`` (text to rows, the training order),
``trainer`` (the Trainer as the harness uses it, DeepSpeed, checkpoints), ``student`` (the component),
``selection`` (validation-based model selection), ``launch`` (several processes).
"""

from harness import hookimpl

from .config import Config
from .encoding import SPECIALS, Collator, LengthGroupedSampler, encode, prompt_ids, train_word_tokenizer, useful_tokens
from .selection import Selection
from .student import TransformersStudent
from .trainer import deepspeed_config, training_env, weighted_loss

__all__ = ["SPECIALS", "Collator", "Config", "LengthGroupedSampler", "Selection", "TransformersStudent",
           "deepspeed_config", "encode", "prompt_ids", "train_word_tokenizer", "training_env", "useful_tokens",
           "weighted_loss"]


@hookimpl
def register_students(register):
    register("transformers", TransformersStudent)
