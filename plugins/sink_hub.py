"""Hugging Face Hub sinks.

- ``hub``: pushes lm-eval's results and per-sample details to a dataset repo through lm-eval's own
  ``EvaluationTracker`` (``hub_results_org``/``hub_repo_name``), credentials from an environment variable.
  Offline or unauthorised it fails with a clear message; the local copy (run directory, local sink) stays.
- ``eval_results``: writes ``.eval_results/<task>.yaml`` files into a model repository folder, the format model
  pages read (``huggingface_hub.EvalResultEntry``).
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from harness import BadInputError, hookimpl
from harness.rundir import atomic_write_text


@dataclass(frozen=True)
class HubConfig:
    org: str
    repo_name: str = "harness-results"
    public: bool = False
    token_env: str = "HF_TOKEN"


class HubSink:
    Config = HubConfig

    def __init__(self, config: HubConfig):
        self.config = config

    def publish(self, results_file: Path, samples_files, provenance) -> list[str]:
        c = self.config
        token = os.environ.get(c.token_env)
        if not token:
            raise BadInputError(f"sink hub: the environment variable {c.token_env} is not set (a Hugging Face token "
                                f"with write access); the results stay in {results_file.parent}")
        from huggingface_hub import HfApi

        try:
            HfApi(token=token).whoami()
        except Exception as exc:
            raise BadInputError(f"sink hub: cannot reach the Hugging Face Hub ({type(exc).__name__}: "
                                f"{str(exc).splitlines()[0]}); the results stay in {results_file.parent}") from None
        from lm_eval.loggers import EvaluationTracker

        data = json.loads(results_file.read_text())
        with tempfile.TemporaryDirectory() as tmp:
            tracker = EvaluationTracker(output_path=tmp, push_results_to_hub=True, push_samples_to_hub=True,
                                        hub_results_org=c.org, hub_repo_name=c.repo_name, public_repo=c.public,
                                        token=token)
            tracker.general_config_tracker.model_name = data.get("model_name", provenance.get("run_name"))
            tracker.general_config_tracker.model_name_sanitized = data.get("model_name_sanitized", "harness")
            tracker.save_results_aggregated(results=data, samples=None)
            for samples in samples_files:
                task = next((t for t in data.get("results", {}) if t in samples.name), None)
                if task:
                    rows = [json.loads(line) for line in samples.read_text().split("\n") if line.strip()]
                    tracker.save_results_samples(task_name=task, samples=rows)
        return [f"https://huggingface.co/datasets/{c.org}/{c.repo_name}"]


@dataclass(frozen=True)
class EvalResultsConfig:
    dir: str
    """The model repository folder to write ``.eval_results/`` into."""
    dataset_ids: dict[str, str] = field(default_factory=dict)
    """Hub dataset id per task (``{ svamp = "ChilleD/SVAMP" }``); tasks with a hub source default to it."""


class EvalResultsSink:
    Config = EvalResultsConfig

    def __init__(self, config: EvalResultsConfig):
        self.config = config

    def publish(self, results_file: Path, samples_files, provenance) -> list[str]:
        import yaml
        from huggingface_hub._eval_results import EvalResultEntry, eval_result_entries_to_yaml

        data = json.loads(results_file.read_text())
        task = (provenance.get("task") or {}).get("name", "")
        dataset_id = self.config.dataset_ids.get(task) or _hub_id(task)
        if not dataset_id:
            raise BadInputError(f"sink eval_results: no hub dataset id for task '{task}'; set "
                                f"dataset_ids = {{ {task} = \"org/name\" }} in the recipe's [[sink]]")
        strategy = (provenance.get("strategy") or {}).get("name", "")
        entries = [EvalResultEntry(dataset_id=dataset_id, task_id=name, value=round(100 * values["acc,none"], 2),
                                   date=str(data.get("date")) if data.get("date") else None,
                                   notes=f"harness {strategy}, teacher {(provenance.get('teacher') or {}).get('name')}")
                   for name, values in data.get("results", {}).items() if "acc,none" in values]
        out = Path(self.config.dir) / ".eval_results" / f"{task}_{strategy}.yaml"
        atomic_write_text(out, yaml.safe_dump(eval_result_entries_to_yaml(entries), sort_keys=False))
        return [str(out)]


def _hub_id(task: str) -> str | None:
    from harness_builtins.task_benchmarks import definitions

    definition = definitions().get(task)
    return definition.hub.get("path") if definition else None


@hookimpl
def register_sinks(register):
    register("hub", HubSink)
    register("eval_results", EvalResultsSink)
