"""Validation-based model selection during training."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness.io import atomic_write_json


class Selection:
    """Validation-based model selection: scores the model every N steps and keeps the best one on disk (with
    its score history, so a resumed run remembers it)."""

    def __init__(self, validate, every: int, folder: Path, tokenizer):
        self.validate, self.every, self.tokenizer = validate, every, tokenizer
        self.best_dir = folder / "best"
        self.state_file = folder / "selection.json"
        self.trainer = None
        state = json.loads(self.state_file.read_text()) if self.state_file.exists() else {}
        self.history: list[list[float]] = state.get("history", [])
        self.best: list[float] | None = state.get("best")

    def score(self, model, step: int) -> None:
        if any(h[0] == step for h in self.history):
            return
        was_training = model.training
        model.eval()
        try:
            acc = float(self.validate(model, self.tokenizer))
        finally:
            model.train(was_training)
        self.history.append([step, acc])
        if self.best is None or acc > self.best[1]:
            self.best = [step, acc]
            self.trainer.save_model(str(self.best_dir))
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.state_file, {"history": self.history, "best": self.best})

    def finish(self, model, final_step: int) -> Path | None:
        """Score the final model too; the best model's folder if it is not the final one, else None."""
        self.score(model, final_step)
        return self.best_dir if self.best and self.best[0] != final_step else None

    def summary(self) -> dict[str, Any]:
        return {"history": self.history, "best_step": self.best[0] if self.best else None,
                "best_accuracy": self.best[1] if self.best else None}
