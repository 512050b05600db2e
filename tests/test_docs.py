"""The user-facing documents: every file or folder of the repository they name exists, they speak to users (not
about how the project is developed), and the README's example recipe validates."""

from __future__ import annotations

import re

import pytest

from .conftest import REPO

DOCS = ["README.md", "benchmarks/README.md", "results/README.md", *(
    str(p.relative_to(REPO)) for p in sorted((REPO / "docs").rglob("*.md")))]
ROOTS = ("docs", "benchmarks", "results", "recipes", "tests", "tasks", "harness", "plugins", "examples", ".ci")
PATH = re.compile(r"(?<![\w./-])((?:" + "|".join(re.escape(r) for r in ROOTS) + r")/[\w./*<>{}-]*[\w/*>}])")


def _mentions(text: str) -> set[str]:
    """Repository paths named in a document: markdown link targets and paths under the top-level folders, less
    patterns (``*``, ``<name>``, ``{x}``, ``N``-style placeholders) and the folders runs write into."""
    found = set(re.findall(r"\]\(((?!https?://|#|mailto:)[^)\s]+)\)", text))
    found |= {m for m in PATH.findall(text)}
    out = set()
    for path in found:
        path = path.split("#")[0].rstrip(".,:;")
        if not path or any(c in path for c in "*<>{}") or re.search(r"(seed-N|-N/|_N\b|\bN\.)", path):
            continue
        if path.startswith("results/") and not path.startswith(("results/baselines", "results/README",
                                                                  "results/science_check", "results/kd_science",
                                                                  "results/cross_tokenizer")):
            continue  # a run's own results folder, written when it runs
        out.add(path)
    return out


@pytest.mark.parametrize("doc", DOCS)
def test_every_path_a_document_names_exists(doc):
    text = (REPO / doc).read_text()
    base = (REPO / doc).parent
    missing = sorted(p for p in _mentions(text) if not (REPO / p).exists() and not (base / p).exists())
    assert not missing, f"{doc} names files that are not in the repository: {missing}"


@pytest.mark.parametrize("doc", DOCS)
def test_documents_speak_to_users_not_about_the_project_s_development(doc):
    text = (REPO / doc).read_text()
    for phrase in (r"\bissue \d+", r"\bthis round\b", r"\bhostile\b", r"\blent\b", r"\bnot drawn\b",
                   r"\bthis session\b", r"REFERENCE\.md", r"\.\./shared/"):
        assert not re.search(phrase, text, re.IGNORECASE), f"{doc}: {phrase!r}"


def test_the_readme_s_example_recipe_validates(tmp_path, cli, monkeypatch):
    text = (REPO / "README.md").read_text()
    block = re.search(r"## Your own recipe.*?```toml\n(.*?)```", text, re.DOTALL)
    assert block, "the README shows a recipe"
    recipe = tmp_path / "svamp_gpt2.toml"
    recipe.write_text(block.group(1))
    data = REPO.parent / "shared" / "data"
    if not (data / "svamp").is_dir():
        pytest.skip(f"the benchmark files are not at {data}")
    monkeypatch.setenv("HARNESS_DATA_DIR", str(data))
    result = cli("validate", recipe, "--no-load-checks")
    assert result.code == 0, result.err
