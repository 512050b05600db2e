"""The transformers student: the model (from a hub id, a local folder or an architecture built from scratch, with
an optional LoRA adapter), training in this process with the transformers ``Trainer``, and loading for
evaluation. Several processes go through ``launch``."""

from __future__ import annotations

import math
import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from harness import BadInputError, RunError, Student, TrainingContext, TrainingExample, TrainingSettings
from harness.deepspeed import zero_stage
from harness.errors import is_out_of_memory
from harness.models import architecture_problems, is_encoder_decoder, model_problems, tokenizer_vocabulary

from .chat import chat_format
from .config import LORA_KEYS, Config, lora_settings, peft_lora_options
from .encoding import Collator, train_word_tokenizer, useful_tokens
from .launch import launch
from .selection import Selection
from .tokens import TokenStore, encoded
from .trainer import (
    OOM_HINT,
    CheckpointMarker,
    auto_class,
    check_fits,
    deepspeed_config,
    latest_complete_checkpoint,
    release_training_state,
    training_env,
    weighted_trainer,
)


class TransformersStudent(Student):
    """A transformers model (decoder-only or encoder-decoder) trained with the transformers Trainer; DeepSpeed,
    LoRA, several processes, checkpoints and validation-based model selection as the recipe asks."""

    Config = Config

    def __init__(self, config: Config):
        self.config = config

    def preflight(self) -> list[tuple[str, str]]:
        """The model (folder or hub id) and its tokenizer load, or the architecture builds; the LoRA table makes a
        peft config. Nothing is trained and no weights are read."""
        c = self.config
        problems = model_problems(c.model, "model") if c.model else architecture_problems(c.architecture)
        if c.tokenizer not in ("", "word"):
            problems += model_problems(c.tokenizer, "tokenizer", config=False)
        if c.lora:  # the table's own problems, whether or not the model loads
            problems += lora_problems(c.lora)
        if not problems and self._chat_mode() != "off":
            problems += self._chat_problems()
        return problems

    def _chat_problems(self) -> list[tuple[str, str]]:
        """The chat template renders a conversation as training and evaluation will (``on`` needs one)."""
        try:
            tokenizer = self._tokenizer()
            chat = chat_format(tokenizer, self._chat_mode())
            if chat is not None:
                chat.split("What is 2 + 3?", "2 + 3 = 5. --> 5")
        except BadInputError as exc:
            return [("chat_template", exc.message.split(": ", 1)[-1])]
        except Exception as exc:  # a template that raises (jinja): the same error training would meet
            return [("chat_template", f"the tokenizer's chat template fails to render a conversation "
                                      f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); fix the template or "
                                      f"set chat_template = \"off\"")]
        return []

    def _tokenizer(self):
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(self.config.tokenizer or self.config.model)

    def check_training(self, settings: TrainingSettings, strategies: Sequence[Any]) -> list[tuple[str, str]]:
        """What training would refuse, known from the recipe before any teacher call: a chat student with model
        selection, or with a strategy whose pairs are conversations (packed Socratic CoT) or the teacher's own
        tokens (token-level distillation)."""
        if self._chat_mode() == "off" or self.preflight():
            return []
        try:
            chats = chat_format(self._tokenizer(), self._chat_mode()) is not None
        except Exception:  # reported by preflight
            return []
        if not chats:
            return []
        problems = []
        if settings.select_every:
            problems.append(("chat_template", "model selection (training.select_every) generates from plain prompts, "
                                              "not through the student's chat template; set training.select_every = "
                                              "0 or chat_template = \"off\""))
        for strategy in strategies:
            packed = getattr(getattr(strategy, "config", None), "packed", False) is True
            objective = strategy.objective() if callable(getattr(strategy, "objective", None)) else None
            token_level = objective is not None and "topk" in getattr(objective, "signals", ())
            if packed or token_level:
                what = "conversations" if packed else "the teacher's own tokens"
                problems.append(("chat_template", f"strategy '{type(strategy).__name__}' trains on {what}, which "
                                                  f"the harness does not render through a chat template; set "
                                                  f"chat_template = \"off\" for this student"))
        return problems

    def supports(self, objective) -> list[tuple[str, str]]:
        """Decoder-only models train with a strategy's objective; encoder-decoder ones do not (yet)."""
        c = self.config
        model_type = c.architecture.get("model_type") if c.architecture else _model_type(c.model)
        if model_type and _is_seq2seq(model_type):
            return [("model" if c.model else "architecture",
                     f"'{model_type}' is an encoder-decoder model; a strategy with its own objective (token-level "
                     f"distillation) needs a decoder-only student")]
        return []

    def vocabulary(self) -> str | None:
        """The tokenizer's vocabulary hash when it is fixed before training (a folder, a hub id, the model's)."""
        c = self.config
        if c.tokenizer == "word":
            return None
        return tokenizer_vocabulary(c.tokenizer or c.model)

    # Model --------------------------------------------------------------------------------------------------

    def _initial(self, corpus: Sequence[str], seed: int, init_dir: Path | None = None):
        import torch
        from transformers import AutoConfig, AutoTokenizer

        c = self.config
        if init_dir is not None:  # another strategy's trained student, with its tokenizer
            if not (Path(init_dir) / "config.json").is_file():
                raise BadInputError(f"strategy.init_from: no trained model in {init_dir}")
            tokenizer = AutoTokenizer.from_pretrained(str(init_dir))
            model = auto_class(AutoConfig.from_pretrained(str(init_dir))).from_pretrained(str(init_dir))
            if tokenizer.pad_token is None:
                tokenizer.pad_token = tokenizer.eos_token
            return _with_loss_type(model), tokenizer
        if c.model:
            try:
                tokenizer = AutoTokenizer.from_pretrained(c.model)
                model_config = AutoConfig.from_pretrained(c.model)
                model = auto_class(model_config).from_pretrained(c.model)
            except (OSError, ValueError) as exc:
                offline = " (HF_HUB_OFFLINE is set: only local directories and cached models load)" if \
                    os.environ.get("HF_HUB_OFFLINE") else ""
                raise BadInputError(f"student.model: cannot load '{c.model}'{offline}: "
                                    f"{str(exc).splitlines()[0]}") from None
            if tokenizer.pad_token is None:
                tokenizer.pad_token = tokenizer.eos_token
            return _with_loss_type(model), tokenizer
        tokenizer = train_word_tokenizer(corpus) if c.tokenizer == "word" else _load_tokenizer(c.tokenizer)
        arch = dict(c.architecture)
        model_type = arch.pop("model_type")
        ids = {"bos_token_id": tokenizer.eos_token_id, "eos_token_id": tokenizer.eos_token_id,
               "pad_token_id": tokenizer.pad_token_id, "decoder_start_token_id": tokenizer.pad_token_id}
        try:
            config = AutoConfig.for_model(model_type, vocab_size=len(tokenizer), **ids, **arch)
        except (ValueError, TypeError) as exc:
            raise BadInputError(f"student.architecture: {exc}") from None
        torch.manual_seed(seed)
        return _with_loss_type(auto_class(config).from_config(config)), tokenizer

    def _with_lora(self, model):
        if not self.config.lora:
            return model
        from peft import LoraConfig, TaskType, get_peft_model

        task_type = TaskType.SEQ_2_SEQ_LM if is_encoder_decoder(model) else TaskType.CAUSAL_LM
        try:
            return get_peft_model(model, LoraConfig(
                task_type=task_type, **peft_lora_options(self.config.lora),
                fan_in_fan_out=model.config.model_type == "gpt2"))  # GPT-2 stores its projections transposed
        except ValueError as exc:
            raise BadInputError(f"student.lora: {str(exc).splitlines()[0]} (set lora.target_modules to the "
                                f"model's attention projections, e.g. [\"c_attn\"] for GPT-2)") from None

    # Training -----------------------------------------------------------------------------------------------

    def train(self, train: Sequence[TrainingExample], settings: TrainingSettings, out_dir: Path,
              corpus: Sequence[str], progress, context: TrainingContext | None = None) -> dict[str, Any]:
        context = context or TrainingContext()
        if settings.world_size() > 1 and "WORLD_SIZE" not in os.environ:
            return launch(self.config, train, settings, out_dir, corpus, progress, context)
        try:
            return self._train_here(train, settings, out_dir, corpus, progress, context)
        except Exception as exc:
            if is_out_of_memory(exc):
                raise RunError(f"training ran out of memory ({str(exc).splitlines()[0][:200]}). To fit: "
                               f"{OOM_HINT}.") from None
            raise

    def _train_here(self, train, settings: TrainingSettings, out_dir: Path, corpus, progress,
                    context: TrainingContext) -> dict[str, Any]:
        import torch
        from transformers import PrinterCallback, TrainerCallback, TrainingArguments
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        if settings.threads:
            torch.set_num_threads(settings.threads)
        if not torch.cuda.is_available():
            os.environ.setdefault("DS_ACCELERATOR", "cpu")  # else DeepSpeed prints a warning to stdout
        model, tokenizer = self._initial(corpus, settings.seed, context.init_dir)
        parameters = sum(p.numel() for p in model.parameters())
        encoder_decoder = is_encoder_decoder(model)
        model = self._with_lora(model)
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        check_fits(trainable, torch.cuda.is_available(), deepspeed_config(settings) is not None)
        chat = None if encoder_decoder else chat_format(tokenizer, self._chat_mode())
        if chat is not None and context.validate and settings.select_every:
            raise BadInputError("training.select_every: model selection generates from plain prompts, not through "
                                "the student's chat template; set training.select_every = 0 for a chat student "
                                "(or student.chat_template = \"off\")")
        if chat is not None:
            _stop_at(model, tokenizer, chat.end_of_turn)
        rows = encoded(train, tokenizer, settings.max_length, encoder_decoder, chat, context.cache_dir,
                       processes=settings.threads or os.cpu_count() or 1)
        collator = Collator(tokenizer.pad_token_id)
        max_steps = settings.max_steps
        if settings.max_tokens:  # a token budget: as many steps as it buys on this data
            lengths = rows.lengths if isinstance(rows, TokenStore) else [useful_tokens(r) for r in rows]
            mean_length = float(np.sum(lengths)) / max(len(rows), 1)
            max_steps = max(1, math.ceil(settings.max_tokens / (settings.batch_size * mean_length)))

        checkpoints = context.checkpoint_dir if settings.checkpoint_steps and context.checkpoint_dir else None
        resume, incomplete = latest_complete_checkpoint(checkpoints) if checkpoints else (None, [])
        selection = Selection(context.validate, settings.select_every, checkpoints or out_dir.parent / "selection",
                              tokenizer) if context.validate and settings.select_every else None

        objective = context.objective
        objective_log: list[dict[str, float]] = []
        if objective is not None:
            objective.tokenizer, objective.max_steps = tokenizer, max_steps

        class Report(TrainerCallback):
            def on_train_begin(self, args, state, control, **kwargs):
                if state.global_step:
                    progress(state.global_step)  # resumed: the steps already done

            def on_step_begin(self, args, state, control, **kwargs):
                if objective is not None:
                    objective.step = state.global_step

            def on_step_end(self, args, state, control, **kwargs):
                progress(1)
                if selection and state.global_step % settings.select_every == 0:
                    selection.score(kwargs["model"], state.global_step)

            def on_log(self, args, state, control, logs=None, **kwargs):
                if logs and isinstance(logs.get("loss"), (int, float)):
                    try:
                        progress(0, note=f"loss {logs['loss']:.3f}")
                    except TypeError:  # a progress callable that takes the step count only
                        pass
                if objective is not None and logs and "loss" in logs:
                    scalars = objective.logged()
                    if scalars:
                        objective_log.append({"step": state.global_step, **scalars})

        ds = deepspeed_config(settings)
        args = dict(
            output_dir=str(checkpoints or out_dir / "trainer"),
            max_steps=max_steps,
            per_device_train_batch_size=settings.per_device_batch(),
            gradient_accumulation_steps=settings.accumulation(),
            learning_rate=settings.learning_rate,
            weight_decay=settings.weight_decay,
            adam_beta2=settings.adam_beta2,
            max_grad_norm=settings.max_grad_norm,
            warmup_steps=math.ceil(settings.warmup_ratio * max_steps),  # steps: a float means a ratio only in 5.x
            lr_scheduler_type=settings.lr_scheduler,
            lr_scheduler_kwargs={"min_lr_rate": settings.min_lr_ratio}
            if settings.lr_scheduler == "cosine_with_min_lr" else {},
            logging_steps=settings.logging_steps,
            save_strategy="steps" if checkpoints else "no",
            save_steps=settings.checkpoint_steps or 500,
            save_total_limit=settings.keep_checkpoints,
            report_to=[],
            disable_tqdm=True,
            seed=settings.seed,
            data_seed=settings.seed,
            use_cpu=not torch.cuda.is_available(),
            bf16=settings.bf16,
            deepspeed=ds,
            remove_unused_columns=False,
            dataloader_num_workers=0,
        )
        marker = CheckpointMarker(resume)
        with training_env(deepspeed=ds is not None):
            trainer = weighted_trainer()(model=model, args=TrainingArguments(**args), train_dataset=rows,
                                         data_collator=collator, callbacks=[Report(), marker])
            marker.trainer = trainer
            trainer.remove_callback(PrinterCallback)  # the harness shows its own progress
            trainer.objective = context.objective
            if selection:
                selection.trainer = trainer
            started = time.perf_counter()
            result = trainer.train(resume_from_checkpoint=resume)
            seconds = time.perf_counter() - started
            chosen = selection.finish(trainer.model, int(result.global_step)) if selection else None
            out_dir.mkdir(parents=True, exist_ok=True)
            self._save(trainer, out_dir, chosen)
        if trainer.is_world_process_zero():
            tokenizer.save_pretrained(str(out_dir))
        losses = [float(h["loss"]) for h in trainer.state.log_history if "loss" in h]
        release_training_state()
        return {
            "steps": int(result.global_step),
            "resumed_from_step": marker.resumed_step,
            "skipped_incomplete_checkpoints": [p.name for p in incomplete],
            "train_loss": round(marker.whole_run_loss(float(result.training_loss), int(result.global_step)), 4),
            "final_loss": losses[-1] if losses else None,
            "losses": losses,
            "examples": len(rows),
            "parameters": parameters,
            "trainable_parameters": trainable,
            "encoder_decoder": encoder_decoder,
            "tokens": collator.tokens,
            "computed_tokens": collator.computed,
            "tokens_per_second": round(collator.tokens / seconds, 1) if seconds else None,
            "seconds": round(seconds, 2),
            "deepspeed_stage": zero_stage(ds),
            "processes": int(os.environ.get("WORLD_SIZE", "1")),
            "batch": {"per_device": settings.per_device_batch(), "accumulation": settings.accumulation(),
                      "total": settings.batch_size},
            **({"selection": selection.summary()} if selection else {}),
            **({"objective": dict(context.objective.stats())} if context.objective is not None else {}),
            **({"objective_log": objective_log} if objective_log else {}),
            **({"initialized_from": str(context.init_dir)} if context.init_dir is not None else {}),
        }

    def _save(self, trainer, out_dir: Path, chosen: Path | None) -> None:
        """The trained (or selected) model in its native format; a LoRA adapter merged in, and kept alone under
        ``adapter/``."""
        model = trainer.model
        if not trainer.is_world_process_zero() and (self.config.lora or chosen is not None):
            return
        if self.config.lora:
            if chosen is not None:
                from peft import set_peft_model_state_dict
                from safetensors.torch import load_file

                set_peft_model_state_dict(model, load_file(str(chosen / "adapter_model.safetensors")))
            model.save_pretrained(str(out_dir / "adapter"))
            model.merge_and_unload().save_pretrained(str(out_dir))
        elif chosen is not None:
            for f in chosen.iterdir():
                if f.is_file() and f.name != "selection.json":
                    shutil.copy2(f, out_dir / f.name)
        else:  # every process takes part (ZeRO-3 gathers the partitioned weights); the first one writes
            trainer.save_model(str(out_dir))

    def chat(self, model_dir: Path) -> dict[str, str] | None:
        """``{"end_of_turn": ...}`` when the model in ``model_dir`` was trained through its chat template."""
        from transformers import AutoTokenizer

        if self._chat_mode() == "off" or is_encoder_decoder(model_dir):
            return None
        found = chat_format(AutoTokenizer.from_pretrained(str(model_dir)), self._chat_mode())
        return {"end_of_turn": found.end_of_turn} if found else None

    def _chat_mode(self) -> str:
        """``auto`` means a pretrained (instruct) model's template: a model built from scratch borrowing a
        tokenizer does not chat."""
        mode = self.config.chat_template
        return "off" if mode == "auto" and not self.config.model else mode

    def load(self, model_dir: Path):
        from transformers import AutoConfig, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        model = auto_class(AutoConfig.from_pretrained(str(model_dir))).from_pretrained(str(model_dir))
        model.eval()
        return _with_loss_type(model), tokenizer


def lora_problems(lora: dict[str, Any]) -> list[tuple[str, str]]:
    """Build the peft ``LoraConfig`` the table describes (no model needed)."""
    if any(k not in LORA_KEYS for k in lora):
        return []  # reported by Config.check
    try:
        from peft import LoraConfig

        LoraConfig(**peft_lora_options(lora))
    except (TypeError, ValueError) as exc:
        return [("lora", f"not a valid LoRA configuration: {str(exc).splitlines()[0]}")]
    problems = []
    settings = lora_settings(lora)
    if not isinstance(settings["alpha"], (int, float)) or isinstance(settings["alpha"], bool):
        problems.append(("lora.alpha", "must be a number"))
    if not isinstance(settings["dropout"], (int, float)) or not 0 <= settings["dropout"] < 1:
        problems.append(("lora.dropout", "must be a number in [0, 1)"))
    targets = settings["target_modules"]
    if targets is not None and not (isinstance(targets, list) and all(isinstance(t, str) for t in targets)):
        problems.append(("lora.target_modules", "must be a list of module names, e.g. [\"c_attn\"]"))
    return problems


def _with_loss_type(model):
    """Name the loss transformers falls back to anyway (GPT-2's class name maps to none, and transformers then
    warns on every run that it uses the causal-LM loss): the same loss, without the warning."""
    if not is_encoder_decoder(model) and getattr(model, "loss_type", "") is None:
        model.loss_type = "ForCausalLM"
    return model


def _stop_at(model, tokenizer, end_of_turn: str) -> None:
    """Generation ends at the chat template's end-of-turn token as well as at EOS (saved with the model)."""
    ids = tokenizer.convert_tokens_to_ids([end_of_turn])
    if ids and ids[0] is not None and ids[0] != tokenizer.unk_token_id:
        eos = model.generation_config.eos_token_id
        eos = [] if eos is None else [eos] if isinstance(eos, int) else list(eos)
        model.generation_config.eos_token_id = sorted(set(eos + [ids[0]]))


def _load_tokenizer(name: str):
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(name)
    except (OSError, ValueError) as exc:
        raise BadInputError(f"student.tokenizer: cannot load '{name}': {str(exc).splitlines()[0]}") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _model_type(name: str) -> str | None:
    try:
        from transformers import AutoConfig

        return AutoConfig.from_pretrained(name).model_type
    except Exception:  # reported by preflight's model_problems
        return None


def _is_seq2seq(model_type: str) -> bool:
    from transformers import AutoConfig

    try:
        return is_encoder_decoder(AutoConfig.for_model(model_type))
    except Exception:
        return False
