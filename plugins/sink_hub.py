"""Hugging Face Hub sinks.

- ``hub``: pushes lm-eval's results and per-sample files, as lm-eval wrote them, to a dataset repo in the
  layout lm-eval's own push uses (``{model_name}/results_*.json``, ``{model_name_sanitized}/samples_*.jsonl``),
  as one commit, credentials from an environment variable. The harness pushes them itself: lm-eval's
  ``EvaluationTracker`` logs a failed push as a warning and carries on, which would report a publish that did
  not happen. Offline, unauthorised or refused, it fails with a clear message; the local copy (run directory, local
  sink) stays.
- ``eval_results``: writes ``.eval_results/<task>.yaml`` files into a model repository folder, the format model
  pages read (``huggingface_hub.EvalResultEntry``).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from harness import BadInputError, RunError, Sink, hookimpl
from harness.io import atomic_write_text


@dataclass(frozen=True)
class HubConfig:
    org: str
    repo_name: str = "harness-results"
    public: bool = False
    token_env: str = "HF_TOKEN"
    endpoint: str = ""
    """The Hub's address, for a self-hosted or mirrored Hub; empty: ``HF_ENDPOINT`` or huggingface.co."""


class HubSink(Sink):
    Config = HubConfig

    def __init__(self, config: HubConfig):
        self.config = config

    def publish(self, results_file: Path, samples_files, provenance) -> list[str]:
        c = self.config
        token = os.environ.get(c.token_env)
        if not token:
            raise BadInputError(f"sink hub: the environment variable {c.token_env} is not set (a Hugging Face token "
                                f"with write access); the results stay in {results_file.parent}")
        from huggingface_hub import CommitOperationAdd, HfApi

        api = HfApi(endpoint=c.endpoint or None, token=token)
        try:
            api.whoami()
        except Exception as exc:
            raise BadInputError(f"sink hub: cannot reach the Hugging Face Hub ({type(exc).__name__}: "
                                f"{str(exc).splitlines()[0]}); the results stay in {results_file.parent}") from None
        data = json.loads(results_file.read_text())
        # one folder per run (lm-eval's model_name is the model's folder path, which says nothing on the Hub)
        model_name = (f"{provenance['recipe']}__{provenance['run_name']}" if provenance.get("run_name")
                      else str(data.get("model_name") or "harness"))
        sanitized = re.sub(r"[^\w.-]", "__", model_name)
        repo_id = f"{c.org}/{c.repo_name}"
        # The files as lm-eval wrote them (its samples are already sanitised for `datasets`; passing them through
        # its tracker again would mangle their arguments).
        name = results_file.name if results_file.name.startswith("results") else f"results_{results_file.name}"
        operations = [CommitOperationAdd(path_in_repo=f"{model_name}/{name}", path_or_fileobj=str(results_file)),
                      *(CommitOperationAdd(path_in_repo=f"{sanitized}/{f.name}", path_or_fileobj=str(f))
                        for f in samples_files)]
        try:
            api.create_repo(repo_id, repo_type="dataset", private=not c.public, exist_ok=True)
            commit = api.create_commit(repo_id, operations, repo_type="dataset",
                                       commit_message=f"harness: lm-eval results of {model_name}")
        except Exception as exc:
            raise RunError(f"sink hub: pushing to the dataset {repo_id} failed ({type(exc).__name__}: "
                           f"{str(exc).splitlines()[0]}); the results stay in {results_file.parent}") from None
        return [commit.commit_url]


@dataclass(frozen=True)
class EvalResultsConfig:
    dir: str
    """The model repository folder to write ``.eval_results/`` into."""
    dataset_ids: dict[str, str] = field(default_factory=dict)
    """Hub dataset id per task (``{ svamp = "ChilleD/SVAMP" }``); tasks with a hub source default to it."""


class EvalResultsSink(Sink):
    Config = EvalResultsConfig

    def __init__(self, config: EvalResultsConfig):
        self.config = config

    def publish(self, results_file: Path, samples_files, provenance) -> list[str]:
        import yaml
        from huggingface_hub._eval_results import EvalResultEntry, eval_result_entries_to_yaml

        data = json.loads(results_file.read_text())
        task = (provenance.get("task") or {}).get("name", "")
        dataset_id = self.config.dataset_ids.get(task) or (provenance.get("task") or {}).get("hub_dataset")
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


@hookimpl
def register_sinks(register):
    register("hub", HubSink)
    register("eval_results", EvalResultsSink)
