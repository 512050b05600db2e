"""Stage records on disk (harness.records): every kind round-trips, files appear whole or not at all, and a table
reads one batch at a time."""

import pytest

from harness.data import GeneratedSplit
from harness.records import (
    EXAMPLES,
    GENERATIONS,
    GRADES,
    TRAINING,
    Grade,
    RecordTable,
    RecordWriter,
    TextView,
    write_records,
)
from harness.types import Example, Generation, SubStep, TrainingExample

EXAMPLE = Example("e-1", "Tom has 2 apples. He gets 3 more. How many?", "5", "2 + 3 = 5.",
                  (SubStep("How many after 3 more?", "2 + 3 = 5"),), {"ops": [{"op": "add", "x": 3}], "ü": "ß"})
GENERATION = Generation("e-1", 2, "2 + 3 = 5.", "5", (SubStep("q", "a"),),
                        {"signals": {"target_ids": [1, 2], "topk_logprobs": [[-0.1, -2.5]]}, "error": ""})
PAIR = TrainingExample("e-1", "Q ###", " 2 + 3 = 5. --> 5", "solver", 0.25, (("Q2", " A2"),), {"target_ids": [4]})


@pytest.mark.parametrize("kind, record", [(EXAMPLES, EXAMPLE), (GENERATIONS, GENERATION), (GRADES, Grade("5", True)),
                                          (GRADES, Grade(None, False)), (TRAINING, PAIR),
                                          (TRAINING, TrainingExample("e", "p", "t"))])
def test_every_kind_round_trips(tmp_path, kind, record):
    assert write_records(tmp_path / "r.arrow", kind, [record, record]) == 2
    table = RecordTable(tmp_path / "r.arrow", kind)
    assert len(table) == 2 and table[0] == record and list(table) == [record, record]


def test_a_table_reads_batch_by_batch_with_random_access(tmp_path):
    pairs = [TrainingExample(f"e-{i}", f"question {i} ###", f" answer {i}") for i in range(1000)]
    with RecordWriter(tmp_path / "t.arrow", TRAINING, batch_rows=64) as out:
        out.write(pairs[:500])
        out.write(iter(pairs[500:]))
    table = RecordTable(tmp_path / "t.arrow", TRAINING)
    assert len(table) == 1000 and table[999] == pairs[999] and table[-1] == pairs[-1] and table[64] == pairs[64]
    assert table[10:13] == pairs[10:13]
    assert [len(b) for b in table.batches()] == [64] * 15 + [40]
    assert [len(c) for c in table.chunks(300)] == [300, 300, 300, 100]
    assert [x for batch in table.column("example_id") for x in batch] == [p.example_id for p in pairs]
    with pytest.raises(IndexError):
        table[1000]
    texts = TextView(table)
    assert len(texts) == 1000 and texts[3] == "question 3 ### answer 3" and list(texts)[-1] == pairs[-1].text()


def test_a_file_appears_whole_or_not_at_all(tmp_path):
    path = tmp_path / "g.arrow"
    with pytest.raises(RuntimeError):
        with RecordWriter(path, GENERATIONS, batch_rows=2) as out:
            out.write([GENERATION] * 5)
            raise RuntimeError("killed mid-stage")
    assert not path.exists() and list(tmp_path.iterdir()) == []
    write_records(path, GENERATIONS, [])
    assert len(RecordTable(path, GENERATIONS)) == 0


def test_a_generated_split_streams_and_replays():
    made = []

    def make():
        made.append(1)
        return (Example(f"t-{i}", f"q{i}", str(i)) for i in range(5))

    split = GeneratedSplit(5, make)
    assert len(split) == 5 and len(made) == 0  # nothing made until read
    assert [e.id for e in split] == [f"t-{i}" for i in range(5)] and [e.id for e in split][0] == "t-0"
    assert split[4].answer == "4" and split[1:3][0].id == "t-1"


def test_chunks_are_bounded_by_bytes_as_well_as_by_count():
    """Short rationales come in chunks of ``most`` questions; long ones in as many as fit the byte budget."""
    from harness.records import ChunkSizer

    short = ChunkSizer(most=100, budget=10_000, first=10)
    sizes = []
    for start, stop in short.spans(1000):
        sizes.append(stop - start)
        short.saw(stop - start, 4 * (stop - start))  # 4 bytes a question
    assert sizes[0] == 10 and set(sizes[1:-1]) == {100}
    long = ChunkSizer(most=100, budget=10_000, first=10)
    sizes = []
    for start, stop in long.spans(300):
        sizes.append(stop - start)
        long.saw(stop - start, 2_000 * (stop - start))  # 2 kB a question: 5 fit the budget
    assert sizes[0] == 10 and set(sizes[1:-1]) == {5} and sum(sizes) == 300


def test_a_large_batch_is_stored_in_batches_a_reader_can_hold(tmp_path):
    from harness.records import GRADES, Grade, RecordTable, RecordWriter

    grades = [Grade(str(i), i % 3 == 0) for i in range(25)]
    with RecordWriter(tmp_path / "g.arrow", GRADES, batch_rows=10) as writer:
        writer.write(grades[:3])
        assert writer.write_batch(GRADES.batch(grades[3:])) == 22
    table = RecordTable(tmp_path / "g.arrow", GRADES)
    assert [len(b) for b in table.batches()] == [3, 10, 10, 2]
    assert list(table) == grades and table.rows(2, 14) == grades[2:14] and table.rows(20, 99) == grades[20:]
