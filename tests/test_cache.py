import json

from harness.cache import JsonlCache, content_key


def test_put_get_and_reload(tmp_path):
    path = tmp_path / "c.jsonl"
    with JsonlCache(path) as cache:
        cache.put("a", {"text": "x"})
        cache.put("a", {"text": "ignored"})  # first write wins, no duplicate line
        cache.put("b", {"text": "y"})
    assert len(path.read_text().splitlines()) == 2
    with JsonlCache(path) as again:
        assert again.get("a") == {"text": "x"} and "b" in again and len(again) == 2 and again.dropped == 0


def test_torn_last_line_is_dropped_and_cut(tmp_path):
    path = tmp_path / "c.jsonl"
    with JsonlCache(path) as cache:
        cache.put("a", {"text": "x"})
    with path.open("a") as f:
        f.write('{"key": "b", "value": {"te')  # a write cut short by kill -9
    with JsonlCache(path) as cache:
        assert cache.dropped == 1 and len(cache) == 1
        cache.put("c", {"text": "z"})
    lines = path.read_text().splitlines()
    assert [json.loads(line)["key"] for line in lines] == ["a", "c"]


def test_complete_json_without_newline_is_not_trusted(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text('{"key": "a", "value": {}}\n{"key": "b", "value": {}}')
    with JsonlCache(path) as cache:
        assert "a" in cache and "b" not in cache and cache.dropped == 1
    assert path.read_text() == '{"key": "a", "value": {}}\n'


def test_damaged_middle_line_is_skipped(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text('{"key": "a", "value": {}}\nGARBAGE\n{"key": "b", "value": {}}\n')
    with JsonlCache(path) as cache:
        assert len(cache) == 2 and cache.dropped == 1


def test_content_key_is_stable_and_order_free():
    assert content_key(a=1, b=[1, 2]) == content_key(b=[1, 2], a=1) != content_key(a=2, b=[1, 2])


def test_atomic_writes_are_ordinary_readable_files(tmp_path):
    import os
    import stat

    from harness.io import atomic_write_text

    atomic_write_text(tmp_path / "a.json", "{}")
    mode = stat.S_IMODE((tmp_path / "a.json").stat().st_mode)
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask and not list(tmp_path.glob(".a.json.*"))
