"""Results: reading lm-eval files, leaderboard formats, compare (CI regression), plots, sinks."""

import csv
import html as html_module
import io
import json
import os
import shutil
from pathlib import Path

import pytest

from harness._results.rows import load, read_file, reference_rows


def results_file(folder: Path, run: str, acc: float, stderr: float, n: int = 100, strategy: str = "fine_tune_cot",
                 date: str = "1", samples: int | None = None, params: int = 850000, teacher_acc: float | None = 0.9):
    """An lm-eval results file as the local sink writes it (lm-eval schema plus the harness key)."""
    task = f"harness_r_{run}"
    data = {"results": {task: {"alias": task, "acc,none": acc, "acc_stderr,none": stderr,
                               "contains_answer,none": acc, "correct_format,none": 1.0}},
            "n-samples": {task: {"original": n, "effective": n}}, "configs": {}, "versions": {}, "config": {},
            "date": date, "model_name": f"r__{run}",
            "harness": {"run_name": run, "recipe": "r", "task": {"name": "synthetic_arithmetic"},
                        "teacher": {"name": "program"},
                        "strategy": {"name": run, "kind": strategy,
                                     "config": {"samples": samples} if samples else {}},
                        "student": {"name": "gpt2-tiny"}, "student_parameters": params,
                        "teacher_accuracy": teacher_acc}}
    path = folder / f"r__{run}" / f"results_{date}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


@pytest.fixture
def board(tmp_path):
    base = tmp_path / "base"
    results_file(base, "vanilla", 0.15, 0.02, strategy="vanilla")
    results_file(base, "fine_tune_cot", 0.77, 0.024)
    return base


def test_rows_from_files_and_latest_only(board):
    results_file(board, "vanilla", 0.20, 0.02, strategy="vanilla", date="2")  # a newer run of the same
    rows = load(board)
    assert sorted((r.run, r.acc) for r in rows) == [("fine_tune_cot", 0.77), ("vanilla", 0.20)]
    assert len(load(board, latest=False)) == 3
    r = rows[0]
    assert (r.task, r.student, r.teacher, r.n) == ("synthetic_arithmetic", "gpt2-tiny", "program", 100)


def test_foreign_lm_eval_file_and_bad_files(tmp_path):
    path = tmp_path / "results_x.json"
    path.write_text(json.dumps({"results": {"gsm8k": {"exact_match,strict-match": 0.5, "acc,none": 0.4}},
                                "model_name": "someone/model"}))
    (row,) = read_file(path)
    assert (row.task, row.strategy, row.student, row.acc) == ("gsm8k", "-", "someone/model", 0.4)
    (tmp_path / "results_bad.json").write_text("{")
    from harness.errors import BadInputError

    with pytest.raises(BadInputError, match="results_bad.json: not a readable lm-eval results file"):
        read_file(tmp_path / "results_bad.json")


def test_leaderboard_flat_view_formats(board, cli):
    md = cli("leaderboard", board, "--format", "markdown", "--sort", "accuracy", "--view", "flat")
    assert md.code == 0
    assert md.out.splitlines()[2] == ("| synthetic_arithmetic | fine_tune_cot | gpt2-tiny | program | 77.00 | 2.40 |  "
                                      "| 100 | greedy · hf · float32 |  | r/fine_tune_cot |")
    rows = list(csv.reader(io.StringIO(cli("leaderboard", board, "--format", "csv", "--view", "flat").out)))
    assert rows[0] == ["task", "strategy", "student", "teacher", "accuracy", "stderr", "maj@n", "n", "evaluation",
                       "teacher cost", "run", "reference"]
    assert len(rows) == 3
    data = json.loads(cli("leaderboard", board, "--format", "json", "--strategy", "vanilla").out)
    assert [d["acc"] for d in data] == [0.15]
    ref = cli("leaderboard", board, "--format", "csv", "--reference", "--task", "multiarith", "--view", "flat").out
    assert "paper: GPT-2 124M Fine-tune-CoT" in ref and ",8.33," in ref
    table = cli("leaderboard", board, "--view", "flat")
    assert "fine_tune_cot" in table.out and "77.00" in table.out


def test_leaderboard_pivot_is_the_papers_table_shape(board, cli):
    """One column per task, one row per (strategy, student, teacher), seeds averaged, the best of yours marked,
    your baselines and the paper's rows grouped apart."""
    for seed, acc in ((1, 0.80), (2, 0.83)):  # two more seeds of fine_tune_cot: mean ± sd over three
        path = results_file(board / f"s{seed}", "fine_tune_cot", acc, 0.02, date=str(seed + 1))
        data = json.loads(path.read_text())
        data["harness"]["training"] = {"seed": seed}
        path.write_text(json.dumps(data))
    md = cli("leaderboard", board, "--format", "markdown", "--reference").out.splitlines()
    header = md[0].split(" | ")
    # your own task first (it stays in view), then the paper's in the paper's order
    assert header[0] == "| strategy · student · teacher" and header[1] == "synthetic_arithmetic" and header[2:8] == [
        "multiarith", "svamp", "date_understanding", "tracking_shuffled_objects", "last_letter_concatenation",
        "coin_flip"] and header[8] == "strategy_qa |"
    assert md[2] == "| **your runs** |" + " |" * 8
    assert md[3].startswith("| fine_tune_cot · gpt2-tiny · program | **80.0 ± 3.0 (3)** | – |")
    # 77, 80, 83: mean 80, sd 3, three seeds; the best of yours
    assert md[4] == "| **your baselines** |" + " |" * 8
    assert md[5].startswith("| vanilla · gpt2-tiny · program | 15.0 ± 2.0 | – |")
    assert md[6].startswith("| teacher (train questions) · program | 90.0 | – |")
    assert md[7] == "| **Fine-tune-CoT paper (teacher text-davinci-002)** |" + " |" * 8
    assert md[8] == "| zero_shot_cot · text-davinci-002 | – | 78.8 | 64.2 | 67.6 | 53.2 | 57.7 | 90.0 | 53.4 |"
    assert "| fine_tune_cot · GPT-3 6.7B | – | 33.3 | 12.7 | 60.4 | 64.4 | 52.7 | 98.7 | 55.0 |" in md
    rows = list(csv.reader(io.StringIO(cli("leaderboard", board, "--format", "csv").out)))
    assert rows[0][:7] == ["group", "strategy", "student", "teacher", "synthetic_arithmetic",
                           "synthetic_arithmetic_spread", "synthetic_arithmetic_seeds"]
    assert rows[1][:7] == ["your runs", "fine_tune_cot", "gpt2-tiny", "program", "80.00", "3.00", "3"]
    table = cli("leaderboard", board).out
    assert "your baselines" in table and "★ 80.0 ± 3.0 (3)" in table


def test_reference_rows_are_the_papers_numbers():
    rows = {(r.task, r.run): r.acc for r in reference_rows()}
    assert rows[("svamp", "teacher (175B)")] == pytest.approx(0.642)
    assert rows[("coin_flip", "GPT-3 6.7B diverse reasoning")] == pytest.approx(1.0)
    assert len(rows) == 8 * 7


def test_compare_flags_real_drops_not_noise(board, tmp_path, cli):
    same = cli("compare", board, board)
    assert same.code == 0 and same.out.endswith("no regression in 2 results\n")
    worse = tmp_path / "worse"
    results_file(worse, "vanilla", 0.14, 0.02, strategy="vanilla")  # within noise
    results_file(worse, "fine_tune_cot", 0.40, 0.03)  # a real drop
    bad = cli("compare", board, worse, "--max-drop", "0.02")
    assert bad.code == 1
    assert bad.err.endswith("1 regression: fine_tune_cot/synthetic_arithmetic\n")
    assert "REGRESSION" in bad.out
    # with noise ignored, the small vanilla drop counts too; --tasks narrows what is compared
    assert "2 regressions" in cli("compare", board, worse, "--z", "0", "--max-drop", "0.005").err
    missing = tmp_path / "missing"
    results_file(missing, "vanilla", 0.15, 0.02, strategy="vanilla")
    assert cli("compare", board, missing).code == 1



def test_plots_are_written(tmp_path, board, cli):
    for d, acc in ((1, 0.3), (2, 0.4), (4, 0.5)):
        results_file(board, f"diverse_D{d}", acc, 0.02, strategy="diverse_reasoning", samples=d)
    result = cli("plot", board, "--out", tmp_path / "plots")
    assert result.code == 0
    written = sorted(Path(p).name for p in result.out.split())
    assert written == ["accuracy_vs_diverse_samples.png", "accuracy_vs_student_size.png",
                       "teacher_vs_student_accuracy.png"]
    for name in written:
        assert (tmp_path / "plots" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _chromium():
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        pytest.skip("chromium not installed (apt-get install chromium); .ci/run installs it")
    return chromium


def _browser(chromium, tmp_path, *args, timeout=120):
    import subprocess

    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}"]
    return subprocess.run([chromium, *flags, *args], capture_output=True, text=True, timeout=timeout)


def test_flat_html_table_sorts_in_a_real_browser(board, tmp_path, cli):
    chromium = _chromium()
    page = tmp_path / "board.html"
    page.write_text(cli("leaderboard", board, "--format", "html", "--view", "flat", "--reference", "--task",
                        "synthetic").out)
    # sort by accuracy (click the header twice: descending), then dump the DOM
    script = tmp_path / "click.html"
    script.write_text(page.read_text().replace(
        "</body>", "<script>var th=document.querySelectorAll('th')[4]; th.click(); th.click();"
                   "document.title=Array.from(document.querySelectorAll('tbody tr')).map("
                   "function(r){return r.cells[1].textContent}).join(',');</script></body>"))
    dom = _browser(chromium, tmp_path, "--dump-dom", script.as_uri()).stdout
    assert "<title>fine_tune_cot,vanilla</title>" in dom


def many_tasks(folder: Path) -> Path:
    """Results for eight tasks: three strategies, two student sizes, D = 1/2/4/8, several teachers and costs,
    two runs at the same teacher accuracy (their labels used to print on top of each other)."""
    tasks = ["multiarith", "svamp", "gsm8k", "addsub", "single_eq", "coin_flip", "date_understanding", "strategy_qa"]
    for t, task in enumerate(tasks):
        for strategy, base in (("vanilla", 0.2), ("fine_tune_cot", 0.45), ("diverse_reasoning", 0.5)):
            for size, bonus in ((850_000, 0.0), (124_000_000, 0.1)):
                for d in ((1, 2, 4, 8) if strategy == "diverse_reasoning" else (None,)):
                    run = f"{strategy}_D{d}" if d else strategy
                    path = results_file(folder / task / str(size), run, min(0.99, base + bonus + 0.02 * t
                                        + 0.01 * (d or 0)), 0.02, strategy=strategy, samples=d, params=size,
                                        teacher_acc=0.7, date=f"{t}{size}{d}")
                    data = json.loads(path.read_text())
                    data["harness"]["task"] = {"name": task}
                    data["harness"]["recipe"] = f"{task}-{size}"
                    data["harness"]["teacher_cost"] = 0.5 * (d or 1)
                    path.write_text(json.dumps(data))
    return folder


LAYOUT = """<script>
function box(e) { var r = e.getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom]; }
function overlap(a, b) { return a[0] < b[2] - 1 && b[0] < a[2] - 1 && a[1] < b[3] - 1 && b[1] < a[3] - 1; }
var first = document.querySelector('#pivot thead th.task');
var report = {plots: [], tasks: document.querySelectorAll('#pivot thead th.task').length,
              firstTask: first.textContent, firstTaskRight: box(first)[2], viewport: window.innerWidth,
              pageWidth: document.documentElement.scrollWidth,
              fontPx: parseFloat(getComputedStyle(document.querySelector('#pivot td')).fontSize),
              groups: Array.from(document.querySelectorAll('#pivot tr.group th')).map(function (t) { return t.textContent; })};
document.querySelectorAll('figure.plot').forEach(function (fig) {
  var areas = Array.from(fig.querySelectorAll('[id*="plotarea"]')).map(box);
  var legends = Array.from(fig.querySelectorAll('[id$="legend"]')).map(box);
  var texts = Array.from(fig.querySelectorAll('text')).map(box).filter(function (b) { return b[2] > b[0]; });
  var legendHits = 0, textHits = 0;
  legends.forEach(function (l) { areas.forEach(function (a) { if (overlap(l, a)) legendHits++; }); });
  for (var i = 0; i < texts.length; i++) for (var j = i + 1; j < texts.length; j++) if (overlap(texts[i], texts[j])) textHits++;
  report.plots.push({name: fig.dataset.name, panels: areas.length, legends: legends.length, texts: texts.length,
                     legendHits: legendHits, textHits: textHits});
});
document.title = JSON.stringify(report);
</script></body>"""


@pytest.mark.parametrize("window", [1400, 390])
def test_leaderboard_page_layout_in_a_real_browser(tmp_path, cli, window):
    """What a person sees, on a desktop and on a phone: a pivot table with one column per task, your first task in
    view, the reference rows grouped apart, the page itself no wider than the window (the table scrolls in its
    box), readable text; faceted plots whose legend covers no panel and whose text labels never overlap."""
    chromium = _chromium()
    folder = many_tasks(tmp_path / "results")
    page = tmp_path / "board.html"
    page.write_text(cli("leaderboard", folder, "--format", "html", "--reference").out)
    probe = tmp_path / "probe.html"
    probe.write_text(page.read_text().replace("</body>", LAYOUT))
    dom = _browser(chromium, tmp_path, f"--window-size={window},1000", "--dump-dom", probe.as_uri()).stdout
    title = html_module.unescape(dom.split("<title>", 1)[1].split("</title>", 1)[0])
    report = json.loads(title)
    assert report["tasks"] == 10  # our eight, and the paper's tracking_shuffled_objects and last_letter_concatenation
    assert report["firstTask"] == "multiarith" and report["firstTaskRight"] <= report["viewport"]
    assert report["pageWidth"] <= report["viewport"] + 1 and report["fontPx"] >= 12
    assert report["groups"] == ["your runs", "your baselines", "Fine-tune-CoT paper (teacher text-davinci-002)"]
    plots = {p["name"]: p for p in report["plots"]}
    assert set(plots) == {"accuracy vs student size", "accuracy vs diverse samples", "accuracy vs teacher cost",
                          "teacher vs student accuracy"}
    for name, p in plots.items():
        assert p["panels"] >= 8 and p["legends"] == 1 and p["texts"] > 20, (name, p)
        assert p["legendHits"] == 0, f"{name}: the legend covers a panel"
        assert p["textHits"] == 0, f"{name}: {p['textHits']} overlapping text labels"
    shot = tmp_path / "leaderboard.png"  # HARNESS_SCREENSHOT=path keeps a copy to look at
    _browser(chromium, tmp_path, f"--screenshot={shot}", f"--window-size={window},2400", page.as_uri())
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get("HARNESS_SCREENSHOT"):
        shutil.copyfile(shot, Path(os.environ["HARNESS_SCREENSHOT"]).with_suffix(f".{window}.png"))


def test_sinks(tmp_path, monkeypatch):
    from harness.errors import BadInputError
    from harness_builtins.sink_hub import EvalResultsConfig, EvalResultsSink, HubConfig, HubSink
    from harness_builtins.sink_jsonl import Config as JsonlConfig
    from harness_builtins.sink_jsonl import JsonlSink

    path = results_file(tmp_path / "r", "fine_tune_cot", 0.77, 0.024)
    provenance = json.loads(path.read_text())["harness"]
    jsonl = JsonlSink(JsonlConfig(path=str(tmp_path / "all.jsonl")))
    jsonl.publish(path, [], provenance)
    jsonl.publish(path, [], provenance)
    lines = [json.loads(line) for line in (tmp_path / "all.jsonl").read_text().splitlines()]
    assert len(lines) == 2 and lines[0]["results"]["harness_r_fine_tune_cot"]["acc,none"] == 0.77

    sink = EvalResultsSink(EvalResultsConfig(dir=str(tmp_path / "model"),
                                             dataset_ids={"synthetic_arithmetic": "me/synthetic"}))
    (written,) = sink.publish(path, [], provenance)
    import yaml

    entries = yaml.safe_load(Path(written).read_text())
    assert written.endswith(".eval_results/synthetic_arithmetic_fine_tune_cot.yaml")
    assert entries == [{"dataset": {"id": "me/synthetic", "task_id": "harness_r_fine_tune_cot"}, "value": 77.0,
                        "date": "1", "notes": "harness fine_tune_cot, teacher program"}]
    with pytest.raises(BadInputError, match="no hub dataset id for task 'synthetic_arithmetic'"):
        EvalResultsSink(EvalResultsConfig(dir=str(tmp_path / "m2"))).publish(path, [], provenance)

    monkeypatch.delenv("HF_TOKEN", raising=False)
    with pytest.raises(BadInputError, match="sink hub: the environment variable HF_TOKEN is not set"):
        HubSink(HubConfig(org="me")).publish(path, [], provenance)
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(BadInputError, match=r"sink hub: cannot reach the Hugging Face Hub .*the results stay in"):
        HubSink(HubConfig(org="me")).publish(path, [], provenance)


class FakeHub:
    """A Hugging Face Hub on 127.0.0.1 with the four calls a push makes (whoami, create repo, preupload, commit);
    it keeps what was committed. ``refuse_commits``: answer commits with 403, as the Hub does for a read token."""

    def __init__(self, refuse_commits: bool = False):
        import base64
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        hub = self
        self.files: dict[str, bytes] = {}
        self.repos: list[dict] = []
        self.unknown: list[str] = []
        self.validated: list[str] = []

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _reply(self, code: int, body: dict):
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                if self.path.startswith("/api/whoami-v2"):
                    return self._reply(200, {"type": "user", "name": "me", "auth": {"type": "access_token"}})
                hub.unknown.append(f"GET {self.path}")
                self._reply(404, {"error": "not here"})

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path == "/api/repos/create":
                    hub.repos.append(json.loads(body))
                    repo = json.loads(body)
                    return self._reply(200, {"url": f"{hub.url}/datasets/{repo['organization']}/{repo['name']}"})
                if self.path == "/api/validate-yaml":  # the Hub checks a dataset card's metadata before a commit
                    hub.validated.append(json.loads(body).get("content", ""))
                    return self._reply(200, {"errors": [], "warnings": []})
                if self.path.endswith("/preupload/main"):
                    files = json.loads(body)["files"]
                    return self._reply(200, {"files": [{"path": f["path"], "uploadMode": "regular",
                                                        "shouldIgnore": False} for f in files]})
                if "/commit/main" in self.path:
                    if refuse_commits:
                        return self._reply(403, {"error": "You have read access only"})
                    for line in body.decode().split("\n"):
                        if line.strip() and json.loads(line)["key"] == "file":
                            value = json.loads(line)["value"]
                            hub.files[value["path"]] = base64.b64decode(value["content"])
                    return self._reply(200, {"commitUrl": f"{hub.url}/datasets/me/harness-results/commit/abc",
                                             "commitOid": "a" * 40})
                hub.unknown.append(f"POST {self.path}")
                self._reply(404, {"error": "not here"})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


def test_hub_sink_pushes_lm_eval_files_in_one_commit(tmp_path, monkeypatch):
    import huggingface_hub.constants

    from harness.errors import RunError
    from harness_builtins.sink_hub import HubConfig, HubSink

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    path = results_file(tmp_path / "r", "fine_tune_cot", 0.77, 0.024)
    provenance = json.loads(path.read_text())["harness"]
    task = next(iter(json.loads(path.read_text())["results"]))
    samples = tmp_path / "r" / f"samples_{task}_2026.jsonl"
    samples.write_text(json.dumps({"doc_id": 0, "acc": 1.0, "resps": [["--> 8"]]}) + "\n")
    hub = FakeHub()
    try:
        (url,) = HubSink(HubConfig(org="me", endpoint=hub.url)).publish(path, [samples], provenance)
    finally:
        hub.close()
    assert hub.unknown == []
    assert hub.repos == [{"name": "harness-results", "organization": "me", "type": "dataset",
                          "visibility": "private"}]
    assert url == f"{hub.url}/datasets/me/harness-results/commit/abc"
    (results,) = [p for p in hub.files if "/results" in p]
    assert json.loads(hub.files[results])["results"][task]["acc,none"] == 0.77
    assert hub.files[f"{results.split('/')[0]}/{samples.name}"] == samples.read_bytes()  # as lm-eval wrote it
    assert "hf_test_token" not in "".join(v.decode() for v in hub.files.values())

    refusing = FakeHub(refuse_commits=True)
    try:
        with pytest.raises(RunError, match=r"sink hub: pushing to the dataset me/harness-results failed .*"
                                           r"the results stay in"):
            HubSink(HubConfig(org="me", endpoint=refusing.url)).publish(path, [samples], provenance)
    finally:
        refusing.close()


def test_a_new_leaderboard_view_is_one_class(board, cli, monkeypatch):
    """A view declares itself: registering one class adds it to --view, with its help, in every format."""
    from harness._results import views

    class Best(views.FlatView):
        name = "best"
        help = "only the best result per task"

        def _best(self, rows):
            top = {}
            for r in rows:
                if r.task not in top or r.acc > top[r.task].acc:
                    top[r.task] = r
            return list(top.values())

        def markdown(self, rows):
            return super().markdown(self._best(rows))

    monkeypatch.setitem(views.VIEWS, "best", Best())
    shown = cli("leaderboard", board, "--view", "best", "--format", "markdown")
    assert shown.code == 0
    lines = [line for line in shown.out.splitlines() if line.startswith("| ") and "task" not in line]
    assert len(lines) == 1  # one task in the board, one row
    assert "only the best result per task" in cli("leaderboard", "--help").out


def test_leaderboard_rows_are_configurations_and_baselines_are_not_yours(board, cli, tmp_path):
    """Two recipes running the same strategy on the same student and teacher are two rows, each naming its
    recipe (seeds of one recipe still average); CI's baselines under the folder are not listed as your runs
    unless that folder is named; a benchmark's summary file gets a message that says what it is."""
    other = results_file(board / "other", "fine_tune_cot", 0.40, 0.02)
    data = json.loads(other.read_text())
    data["harness"]["recipe"] = "r_long"
    other.write_text(json.dumps(data))
    md = cli("leaderboard", board, "--format", "markdown").out
    assert "| fine_tune_cot · gpt2-tiny · program (r) | **77.0 ± 2.4** |" in md
    assert "| fine_tune_cot · gpt2-tiny · program (r_long) | 40.0 ± 2.0 |" in md
    results_file(board / "baselines" / "ci", "fine_tune_cot", 0.11, 0.02)
    assert "11.0" not in cli("leaderboard", board, "--format", "markdown").out
    assert "11.0" in cli("leaderboard", board / "baselines", "--format", "markdown").out
    summary = tmp_path / "science.json"
    summary.write_text(json.dumps({"summary": {"ftc": {"mean": 60.0}}}))
    result = cli("leaderboard", summary)
    assert result.code == 2 and "not an lm-eval results file (a benchmark's summary" in result.err


def test_the_html_page_fits_a_phone_and_its_flat_table_has_a_cell_per_column(board, cli):
    page = cli("leaderboard", board, "--format", "html", "--view", "flat").out
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in page
    head = page[page.index("<thead>"):page.index("</thead>")]
    for row in page[page.index("<tbody>"):page.index("</tbody>")].split("</tr>")[:-1]:
        assert row.count("<td") == head.count("<th>")
    assert '<div class="scroll">' in cli("leaderboard", board, "--format", "html").out


def test_plots_keep_colours_per_series_join_one_configuration_and_spread_near_equal_sizes(tmp_path):
    from harness._results import plots
    from harness._results.rows import Row

    def row(recipe, strategy, params, acc):
        return Row("svamp", strategy, "gpt2", "program", acc, 0.02, 100, "t", recipe=recipe, run=strategy,
                   parameters=params)

    rows = [row("a", "ftc", 452_000, 0.9), row("b", "ftc", 453_000, 0.49), row("a", "vanilla", 452_000, 0.2)]
    fig = plots.size(rows)
    ax = fig.axes[0]
    drawn = [(line.get_label(), len(line.get_xdata()), line.get_color()) for line in ax.get_lines()]
    # two recipes' ftc results are two points of one colour, not a line from one to the other
    assert sorted((label, n) for label, n, _ in drawn) == [("ftc", 1), ("ftc", 1), ("vanilla", 1)]
    assert len({c for label, _, c in drawn if label == "ftc"}) == 1
    low, high = ax.get_xlim()
    assert high / low >= 4  # not a panel from 452k to 453k
    colours = {label: c for label, _, c in drawn}
    assert len(set(colours.values())) == len(colours)  # one colour per series in a figure
    again = plots.size(list(reversed(rows))).axes[0]  # the same results again, in another order: the same colours
    assert {line.get_label(): line.get_color() for line in again.get_lines()} == colours
    one_recipe = plots.size([row("a", "ftc", 452_000, 0.5), row("a", "ftc", 4_000_000, 0.7)]).axes[0]
    assert [len(line.get_xdata()) for line in one_recipe.get_lines()] == [2]  # a size sweep in one recipe: a line
    paper = plots.size(rows + reference_rows()).axes
    markers = {line.get_marker() for a in paper for line in a.get_lines() if "(paper)" in line.get_label()}
    assert len(markers) > 1  # the reference series are told apart by their markers


@pytest.mark.parametrize("width", [160, 80, 60])
def test_the_pivot_table_fits_the_terminal_and_keeps_labels_and_numbers_whole(board, width):
    from rich.console import Console

    from harness._results.rows import select
    from harness._results.views import VIEWS

    console = Console(width=width, record=True, file=io.StringIO())
    console.print(VIEWS["pivot"].render(select(board, reference=True), "table", width=width))
    lines = console.export_text().splitlines()
    table = [line for line in lines if line[:1] in "┏┃┡│├└"]
    assert all(len(line) <= width and line.rstrip()[-1] in "┓┃┩│┤┘" for line in table)  # nothing cut off
    assert any("fine_tune_cot · gpt2-tiny · program" in line for line in lines)  # the label on one line
    assert any("★ 77.0 ± 2.4" in line for line in lines)  # the number on one line
    if width < 160:
        assert any("more of the paper's tasks in a wider terminal" in line for line in lines)
