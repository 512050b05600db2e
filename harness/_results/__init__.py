"""Results after the run: lm-eval results files read into rows (``rows``), the leaderboard's views (``views``)
and plots (``plots``), and the regression gate behind ``harness compare`` (``gate``) with its report
(``gate_report``). Private."""
