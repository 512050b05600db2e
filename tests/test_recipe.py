import re
from pathlib import Path

import pytest

from harness._run.recipe import load_recipe
from harness.errors import RecipeError

from .conftest import REPO, TINY


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "r.toml"
    path.write_text(text)
    return path


def problems(tmp_path, text, registry, overrides=()):
    with pytest.raises(RecipeError) as info:
        load_recipe(write(tmp_path, text), registry, overrides)
    return info.value.problems


def test_tiny_recipe_loads_into_frozen_objects(tmp_path, registry):
    recipe = load_recipe(write(tmp_path, TINY), registry)
    assert recipe.name == "tiny"
    assert [s.name for s in recipe.strategies] == ["vanilla", "fine_tune_cot"]
    assert recipe.task.config.train_size == 300
    assert recipe.training.max_steps == 40
    assert recipe.training.seed == 0  # from [run]
    assert [s.kind for s in recipe.sinks] == ["local"]  # default sink
    with pytest.raises(AttributeError):
        recipe.training.max_steps = 3  # frozen


def test_unknown_component_gets_a_suggestion_and_the_list(tmp_path, registry):
    found = problems(tmp_path, TINY.replace('kind = "program"', 'kind = "progam"'), registry)
    assert found == [f"{tmp_path / 'r.toml'}: teacher.kind: unknown teacher 'progam'. Did you mean 'program'? "
                     f"Available: gold, hf, openai, program, zero_shot_cot_log"]


def test_all_problems_reported_at_once(tmp_path, registry):
    text = (TINY.replace("max_steps = 40", "max_stepz = 40")
            .replace('kind = "vanilla"', 'kind = "vanila"')
            .replace("train_size = 300", 'train_size = "many"')
            .replace("[evaluation]", "[evaluation]\nlimit = 0"))
    f = tmp_path / "r.toml"
    assert problems(tmp_path, text, registry) == [
        f"{f}: training.max_stepz: unknown key. Did you mean 'max_steps'? Allowed: " + ", ".join([
            "max_steps", "max_tokens", "batch_size", "learning_rate", "weight_decay", "warmup_ratio", "lr_scheduler",
            "min_lr_ratio", "adam_beta2", "max_grad_norm", "max_length", "seed", "threads", "deepspeed_stage",
            "deepspeed_offload", "bf16", "logging_steps", "micro_batch_size", "processes", "launcher", "nodes",
            "master_addr", "master_port", "rdzv_endpoint", "hostfile", "deepspeed_config", "checkpoint_steps", "keep_checkpoints", "select_every", "select_examples"]),
        f"{f}: evaluation.limit: must be at least 1",
        f"{f}: task.train_size: expected an integer, got string 'many'",
        f"{f}: strategy[0].kind: unknown strategy 'vanila'. Did you mean 'vanilla'? Available: diverse_reasoning, "
        "fine_tune_cot, logit_kd, on_policy, socratic, step_by_step, vanilla",
    ]


def test_unknown_section_and_missing_sections(tmp_path, registry):
    f = tmp_path / "r.toml"
    assert problems(tmp_path, '[runn]\nname = "x"\n', registry) == [
        f"{f}: runn: unknown section. Did you mean 'run'? Allowed: run, task, teacher, strategy, student, "
        "training, evaluation, sink",
        f"{f}: task: required section is missing ([task] with kind = ...)",
        f"{f}: teacher: required section is missing ([teacher] with kind = ...)",
        f"{f}: strategy: required section is missing ([[strategy]] with kind = ...)",
        f"{f}: student: required section is missing ([[student]] with kind = ...)",
    ]


def test_component_value_rules(tmp_path, registry):
    f = tmp_path / "r.toml"
    text = TINY.replace('tokenizer = "word"\n', "").replace('kind = "program"', 'kind = "program"\nsamples = 0')
    assert problems(tmp_path, text, registry) == [
        f"{f}: teacher.samples: must be at least 1",
        f"{f}: student[0].tokenizer: a from-scratch architecture needs tokenizer = \"word\" (built from the run's "
        "text) or a tokenizer's folder or hub id",
    ]


def test_duplicate_strategy_names(tmp_path, registry):
    text = TINY.replace('kind = "vanilla"', 'kind = "fine_tune_cot"')
    assert problems(tmp_path, text, registry) == [
        f"{tmp_path / 'r.toml'}: strategy[1].name: 'fine_tune_cot' is used by strategy[0] too; "
        "give each a distinct name = \"...\""]
    # distinct names make it valid: two Fine-tune-CoT variants side by side
    ok = TINY.replace('kind = "vanilla"', 'kind = "fine_tune_cot"\nname = "ftc-natural"\nformat = "natural"')
    recipe = load_recipe(write(tmp_path, ok), registry)
    assert [s.name for s in recipe.strategies] == ["ftc-natural", "fine_tune_cot"]


def test_invalid_toml_and_missing_file(tmp_path, registry):
    with pytest.raises(RecipeError, match=r"r.toml: not valid TOML: "):
        load_recipe(write(tmp_path, "[run\n"), registry)
    with pytest.raises(RecipeError, match=r"nope.toml: no such recipe file"):
        load_recipe(tmp_path / "nope.toml", registry)


def test_overrides(tmp_path, registry):
    path = write(tmp_path, TINY)
    recipe = load_recipe(path, registry, ["training.max_steps=7", "strategy.1.format=natural",
                                          "student.architecture.n_layer=2", 'run.name="other"'])
    assert recipe.training.max_steps == 7
    assert recipe.strategies[1].config.format == "natural"
    assert recipe.students[0].config.architecture["n_layer"] == 2
    assert recipe.name == "other"
    with pytest.raises(RecipeError, match=re.escape("strategy has 2 entries; name one by its 0-based index, e.g. --set strategy[0].format=...")):
        load_recipe(path, registry, ["strategy.format=natural"])
    with pytest.raises(RecipeError, match="expected key.path=value"):
        load_recipe(path, registry, ["training.max_steps"])


def test_deepspeed_settings_are_checked(tmp_path, registry):
    f = tmp_path / "r.toml"
    text = TINY.replace("[training]", "[training]\ndeepspeed_stage = 4\ndeepspeed_offload = true")
    assert problems(tmp_path, text, registry) == [
        f"{f}: training.deepspeed_stage: ZeRO stage must be 0, 1, 2 or 3, got 4"]


@pytest.mark.parametrize("recipe", sorted((REPO / "recipes").glob("*.toml")), ids=lambda p: p.name)
def test_every_shipped_recipe_validates(recipe, registry):
    loaded = load_recipe(recipe, registry)
    assert loaded.strategies and loaded.students
    assert recipe.read_text().startswith("#"), "a recipe's first comment says how to run it"


@pytest.mark.parametrize("key", ["training.learning_rate", "training.max_grad_norm", "training.weight_decay",
                                 "training.min_lr_ratio", "training.adam_beta2", "teacher.temperature",
                                 "evaluation.temperature"])
@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_non_finite_numbers_are_refused_by_validate(tiny_recipe, cli, key, value):
    result = cli("validate", tiny_recipe, "--set", f"{key}={value}")
    assert result.code == 2
    assert f"{key}: expected a finite number, got {float(value)} (nan and inf are not settings)" in result.err


@pytest.mark.parametrize("value", ["5", "{ zz = 1 }"])
def test_a_required_key_of_the_wrong_type_is_a_message_not_a_crash(tmp_path, cli, value):
    recipe = tmp_path / "r.toml"
    recipe.write_text(f'[task]\nkind = "synthetic_arithmetic"\n[teacher]\nkind = "openai"\nmodel = {value}\n'
                      '[[strategy]]\nkind = "vanilla"\n[[student]]\nkind = "transformers"\ntokenizer = "word"\n'
                      'architecture = { model_type = "gpt2", n_layer = 1, n_embd = 16, n_head = 2 }\n')
    result = cli("validate", recipe)
    assert result.code == 2 and "Traceback" not in result.err
    assert "teacher.model: expected a string" in result.err
