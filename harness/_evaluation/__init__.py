"""Evaluation through lm-eval: the task files the harness writes (``lm_eval_task``), the run of lm-eval itself
(``lm_eval_run``), the backends a student is evaluated on (``backends``: one class each), model selection during
training (``selection``) and the evaluate step that ties them together (``evaluate``). Private."""
