"""The reasoning benchmarks of Fine-tune-CoT as tasks, one per definition file in ``tasks/`` (``harness_tasks``).

Local data is read in place from a data directory (the recipe's ``task.data_dir`` or ``$HARNESS_DATA_DIR``):
Fine-tune-CoT's unified files (whose order the official split indices refer to, and whose question text renders
answer choices as Fine-tune-CoT does), GSM8K's JSON Lines, AQuA's test file; and, for gold structure, the
original files (SVAMP and MAWPS equations, StrategyQA facts and decompositions, GSM8K Socratic sub-questions).
A definition with a ``hub`` table can load from the Hugging Face hub instead (``source = "hub"``).
"""

from __future__ import annotations

import random
import re
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from harness import AnswerSpec, DataError, Example, PluginError, SubStep, Task, hookimpl
from harness.answers import normalise_question
from harness.config import build
from harness.data import check_records, data_file, data_root, read_json, read_jsonl

AQUA_TEST_OFFSET = 97467  # Fine-tune-CoT's AQuA indices: 0..97466 are AQuA train, then the test set


@dataclass(frozen=True)
class Definition:
    """One ``tasks/*.toml`` file."""

    title: str
    answer: str
    trigger: str
    format: str
    files: dict[str, str]
    split: str = ""
    choices: str = ""
    enrich: str = ""
    enrich_files: tuple[str, ...] = ()
    hub: dict[str, str] = field(default_factory=dict)

    def check(self) -> list[tuple[str, str]]:
        if self.format not in LOADERS:
            return [("format", f"unknown format '{self.format}'; one of {', '.join(LOADERS)}")]
        if self.enrich and self.enrich not in ENRICHERS:
            return [("enrich", f"unknown enricher '{self.enrich}'; one of {', '.join(ENRICHERS)}")]
        return []


@dataclass(frozen=True)
class Config:
    data_dir: str = ""
    """Folder holding the benchmark files (default ``$HARNESS_DATA_DIR``)."""
    source: str = "local"
    """``local`` (files in data_dir) or ``hub`` (the definition's hub dataset, through ``datasets``)."""
    split: str = "fine_tune_cot"
    """``fine_tune_cot``: the official Fine-tune-CoT train/test indices; ``random``: a seeded random split."""
    test_fraction: float = 0.3
    """Test share of a ``random`` split."""
    validation_fraction: float = 0.1
    """Share of train carved out (seeded) as the validation split for model selection; test is never used."""
    seed: int = 0

    def check(self) -> list[tuple[str, str]]:
        problems = []
        if self.source not in ("local", "hub"):
            problems.append(("source", f"'{self.source}': use \"local\" or \"hub\""))
        if self.split not in ("fine_tune_cot", "random"):
            problems.append(("split", f"'{self.split}': use \"fine_tune_cot\" or \"random\""))
        if not 0 <= self.validation_fraction < 1:
            problems.append(("validation_fraction", "must be in [0, 1)"))
        if not 0 < self.test_fraction < 1:
            problems.append(("test_fraction", "must be in (0, 1)"))
        return problems


def _field(path: Path, index: int, record: Any, key: str) -> Any:
    if not isinstance(record, dict) or key not in record:
        raise DataError(f"{path}: record {index} has no '{key}' field")
    return record[key]


# Loaders: definition + data root -> (records in split-index order, {position: offset} notes) --------------------

def load_unified(d: Definition, root: Path) -> list[dict]:
    path = data_file(root, d.files["data"], "task.data_dir")
    data = read_json(path)
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of {{question, answer}} records")
    return [{"question": _field(path, i, r, "question"), "answer": str(_field(path, i, r, "answer")),
             "rationale": r.get("rationale")} for i, r in enumerate(data)]


def load_gsm8k(d: Definition, root: Path) -> list[dict]:
    out = []
    for part in ("train", "test"):
        path = data_file(root, d.files[part], "task.data_dir")
        rows = check_records(path, read_jsonl(path), {"question": str, "answer": str})
        socratic: list[dict] = []
        if f"{part}_socratic" in d.files and (root / d.files[f"{part}_socratic"]).is_file():
            socratic_path = root / d.files[f"{part}_socratic"]
            socratic = check_records(socratic_path, read_jsonl(socratic_path), {"question": str, "answer": str})
        for i, r in enumerate(rows):
            solution = r["answer"]
            if "####" not in solution:
                raise DataError(f"{path}: record {i} has no '#### <answer>' line in its answer")
            rationale, answer = solution.rsplit("####", 1)
            steps: tuple[SubStep, ...] = ()
            if i < len(socratic) and socratic[i].get("question") == r["question"]:
                lines = socratic[i]["answer"].rsplit("####", 1)[0].strip().splitlines()
                steps = tuple(SubStep(*(part.strip() for part in line.split(" ** ", 1))) for line in lines
                              if " ** " in line)
            out.append({"question": r["question"], "answer": answer.strip().replace(",", ""),
                        "rationale": rationale.strip(), "steps": steps})
    return out


def load_aqua(d: Definition, root: Path) -> list[dict]:
    path = data_file(root, d.files["test"], "task.data_dir")
    out = []
    for i, r in enumerate(read_jsonl(path)):
        options = [re.sub(r"^([A-E])\)", r"(\1) ", o).replace(")  ", ") ") for o in _field(path, i, r, "options")]
        question = f"{_field(path, i, r, 'question')} Answer choices: {', '.join(options)}."
        out.append({"question": question, "answer": _field(path, i, r, "correct"), "rationale": r.get("rationale"),
                    "index": AQUA_TEST_OFFSET + i})
    return out


LOADERS = {"unified": load_unified, "gsm8k": load_gsm8k, "aqua": load_aqua}


def hub_choices(kind: str, row: dict) -> list[str]:
    """A hub row's answer choices as ``(A) text`` strings."""
    if kind == "options":  # AQuA: ["A)21", "B)22", ...]
        return [re.sub(r"^\(?([A-Z])\)\s*", r"(\1) ", o) for o in row["options"]]
    if kind == "labelled":  # CommonsenseQA: {"label": ["A", ...], "text": ["ignore", ...]}
        return [f"({label}) {text}" for label, text in zip(row["choices"]["label"], row["choices"]["text"])]
    raise DataError(f"hub choices '{kind}': use \"options\" or \"labelled\"")


# Enrichers: add the original files' gold structure, joined on the normalised question -----------------------

def enrich_svamp(records: list[dict], paths: list[Path]) -> None:
    rows = check_records(paths[0], read_json(paths[0]), {"Body": str, "Question": str, "Equation": str})
    index = {normalise_question(f"{r['Body']} {r['Question']}"): r for r in rows}
    for rec in records:
        src = index.get(normalise_question(rec["question"]))
        if src:
            rec["meta"] = {"equation": src["Equation"].strip(), "type": src.get("Type"), "svamp_id": src.get("ID")}


def enrich_mawps(records: list[dict], paths: list[Path]) -> None:
    rows = check_records(paths[0], read_json(paths[0]), {"sQuestion": str, "lEquations": list})
    index = {normalise_question(r["sQuestion"]): r for r in rows}
    for rec in records:
        src = index.get(normalise_question(rec["question"]))
        if src:
            rec["meta"] = {"equations": list(src["lEquations"]), "source_index": src.get("iIndex")}


def enrich_strategyqa(records: list[dict], paths: list[Path]) -> None:
    index = {}
    for p in paths:
        for i, r in enumerate(check_records(p, read_json(p), {"question": str, "facts": list, "decomposition": list,
                                                         "qid": str})):
            for key in ("facts", "decomposition"):
                if not all(isinstance(x, str) for x in r[key]):
                    raise DataError(f"{p}: record {i}: '{key}' must be a list of strings")
            index[normalise_question(r["question"])] = r
    for rec in records:
        src = index.get(normalise_question(rec["question"]))
        if src:
            rec["rationale"] = " ".join(src["facts"])
            rec["steps"] = tuple(SubStep(q, "") for q in src["decomposition"])
            rec["meta"] = {"qid": src["qid"], "term": src.get("term")}


ENRICHERS = {"svamp": enrich_svamp, "mawps": enrich_mawps, "strategyqa": enrich_strategyqa}


class BenchmarkTask(Task):
    """A benchmark from a definition file; registered once per file under the file's name."""

    Config = Config
    definition: Definition
    name: str

    def __init__(self, config: Config):
        self.config = config
        d = self.definition
        self.answer = AnswerSpec(kind=d.answer, choices=d.choices, trigger=d.trigger)
        self.hub_dataset = d.hub.get("path") or None
        self._source = ""

    def source(self) -> str:
        return self._source

    def load(self) -> dict[str, list[Example]]:
        records, indexed = self._records()
        examples = [self._example(i, r) for i, r in enumerate(records)]
        train, test = self._split(examples, indexed)
        rng = random.Random(self.config.seed)
        shuffled = train[:]
        rng.shuffle(shuffled)
        n_val = int(len(train) * self.config.validation_fraction)
        validation_ids = {e.id for e in shuffled[:n_val]}
        return {"train": [e for e in train if e.id not in validation_ids],
                "validation": [e for e in train if e.id in validation_ids], "test": test}

    def _records(self) -> tuple[list[dict], bool]:
        d, c = self.definition, self.config
        if c.source == "hub":
            return self._hub_records(), False
        root = data_root(c.data_dir, "task.data_dir")
        records = LOADERS[d.format](d, root)
        if d.enrich:
            paths = [p for p in (root / f for f in d.enrich_files) if p.is_file()]
            if paths:
                ENRICHERS[d.enrich](records, paths)
        self._source = f"{', '.join(Path(f).name for f in d.files.values())} in {root}"
        return records, True

    def _hub_records(self) -> list[dict]:
        """Records from the hub dataset; the hub's own train/test splits are kept (``hub_split`` field).

        The definition's ``hub`` table names the dataset (``path``, optional ``name``), its split names
        (``train``, ``test``), the question as a template over its fields (``question = "{Body} {Question}"``),
        the ``answer`` field, ``answer_format`` (``gsm8k``: a solution ending ``#### N``; ``bool``: true/false
        becomes Yes/No), and ``choices`` when answer choices live in their own field (``options``: a list like
        AQuA's ``["A)21", ...]``; ``labelled``: ``{label: [...], text: [...]}`` like CommonsenseQA's), rendered
        as in Fine-tune-CoT: ``{question} Answer choices: (A) 21, (B) 22.``
        """
        d = self.definition
        if not d.hub:
            raise DataError(f"task '{self.name}' has no hub source defined; use source = \"local\" with data_dir")
        hub = d.hub
        try:
            import datasets

            parts = {s: datasets.load_dataset(hub["path"], hub.get("name"), split=hub[s]) for s in ("train", "test")}
        except Exception as exc:  # offline, missing repo, changed schema: say which and how to go local
            raise DataError(f"task '{self.name}': cannot load hub dataset {hub['path']}: "
                            f"{str(exc).splitlines()[0]}. Use source = \"local\" with data_dir") from None
        self._source = f"hub {hub['path']}"
        records = []
        for split, rows in parts.items():
            for i, r in enumerate(rows):
                try:
                    question = hub.get("question", "{question}").format(**r)
                    raw_answer, rationale = r[hub.get("answer", "answer")], None
                    if hub.get("choices"):
                        question = f"{question} Answer choices: {', '.join(hub_choices(hub['choices'], r))}."
                except KeyError as exc:
                    raise DataError(f"hub dataset {hub['path']} ({split} row {i}) has no field {exc}; its fields: "
                                    f"{', '.join(r)}") from None
                answer = str(raw_answer)
                if hub.get("answer_format") == "gsm8k":
                    rationale, _, answer = answer.rpartition("####")
                    answer, rationale = answer.strip().replace(",", ""), rationale.strip()
                elif hub.get("answer_format") == "bool":
                    answer = "Yes" if raw_answer in (True, "true", "True", 1) else "No"
                records.append({"question": question, "answer": answer, "rationale": rationale,
                                "hub_split": split, "index": f"{split}-{i}"})
        return records

    def _example(self, position: int, r: dict) -> Example:
        index = r.get("index", position)
        meta = {"index": index, **r.get("meta", {})}
        if "hub_split" in r:
            meta["hub_split"] = r["hub_split"]
        return Example(id=f"{self.name}-{index}", question=r["question"], answer=r["answer"],
                       rationale=r.get("rationale"), steps=tuple(r.get("steps", ())), meta=meta)

    def _split(self, examples: list[Example], indexed: bool) -> tuple[list[Example], list[Example]]:
        c, d = self.config, self.definition
        if c.split == "fine_tune_cot" and indexed:
            path = data_file(data_root(c.data_dir, "task.data_dir"), d.split, "task.split")
            split = read_json(path)
            if not isinstance(split, dict) or not all(isinstance(split.get(k), list) for k in ("train", "test")):
                raise DataError(f"{path}: expected an object with \"train\" and \"test\" lists of record indices "
                                f"(has {', '.join(split) if isinstance(split, dict) else type(split).__name__})")
            by_index = {e.meta["index"]: e for e in examples}
            missing = [i for i in split["train"] + split["test"] if i not in by_index]
            if len(missing) == len(split["train"]) + len(split["test"]):
                raise DataError(f"{path}: none of its indices match the {len(examples)} records loaded")
            return [by_index[i] for i in split["train"] if i in by_index], \
                   [by_index[i] for i in split["test"] if i in by_index]
        if not indexed and c.split == "fine_tune_cot":  # hub data: the hub's own train/test split
            return [e for e in examples if e.meta.get("hub_split") == "train"], \
                   [e for e in examples if e.meta.get("hub_split") == "test"]
        rng = random.Random(c.seed)
        order = examples[:]
        rng.shuffle(order)
        n_test = round(len(order) * c.test_fraction)
        return order[n_test:], order[:n_test]


def definitions() -> dict[str, Definition]:
    """Every ``tasks/*.toml`` definition by name; a broken file is a plugin error naming it and its problems."""
    out = {}
    folder = resources.files("harness_tasks")
    for entry in sorted(folder.iterdir(), key=lambda p: p.name):
        if not entry.name.endswith(".toml"):
            continue
        problems: list[str] = []
        definition = build(Definition, tomllib.loads(entry.read_text()), "", problems)
        if problems:
            raise PluginError(f"tasks/{entry.name}: " + "; ".join(problems))
        out[entry.name[: -len(".toml")]] = definition
    return out


@hookimpl
def register_tasks(register):
    for name, definition in definitions().items():
        register(name, type(f"Task_{name}", (BenchmarkTask,), {"definition": definition, "name": name,
                                                               "__doc__": definition.title}))
