"""The run directory contract: atomic files, append-only records, a reader that follows a writer."""

import json
import math
import os
import threading
import time

from engine.record import RunReader, RunWriter, effective_state, find_runs, read_run


def test_reader_follows_a_writer_and_ignores_a_partial_last_line(tmp_path):
    writer = RunWriter(tmp_path / "run")
    writer.write_config({"measures": []})
    writer.start(total_epochs=3)
    reader = RunReader(tmp_path / "run")
    assert reader.poll() == []
    writer.append_record({"kind": "epoch", "epoch": 0})
    assert [r["epoch"] for r in reader.poll()] == [0]
    with open(tmp_path / "run" / "records.jsonl", "ab") as f:  # a writer caught mid-line
        f.write(b'{"kind": "epoch", "ep')
    assert reader.poll() == []
    with open(tmp_path / "run" / "records.jsonl", "ab") as f:
        f.write(b'och": 1}\n')
    assert [r["epoch"] for r in reader.poll()] == [1]
    assert [r["epoch"] for r in reader.records] == [0, 1]
    writer.finish("finished")
    assert read_run(tmp_path / "run").state == "finished"


def test_reader_in_another_thread_sees_every_record_once(tmp_path):
    writer = RunWriter(tmp_path / "run")
    writer.write_config({})
    seen = []
    done = threading.Event()

    def follow():
        reader = RunReader(tmp_path / "run")
        while not done.is_set():
            seen.extend(r["epoch"] for r in reader.poll())
        seen.extend(r["epoch"] for r in reader.poll())

    thread = threading.Thread(target=follow)
    thread.start()
    for epoch in range(200):
        writer.append_record({"kind": "epoch", "epoch": epoch, "payload": "x" * 5000})
    done.set()
    thread.join()
    assert seen == list(range(200))


def test_a_rewritten_record_file_is_read_again(tmp_path):
    writer = RunWriter(tmp_path)
    for epoch in range(3):
        writer.append_record({"kind": "epoch", "epoch": epoch})
    reader = RunReader(tmp_path)
    assert len(reader.poll()) == 3
    writer.truncate_records([{"kind": "epoch", "epoch": 0}])  # what a resume does
    reader.poll()
    assert [r["epoch"] for r in reader.records] == [0]


def test_nan_never_reaches_the_record(tmp_path):
    writer = RunWriter(tmp_path)
    writer.append_record({"kind": "epoch", "epoch": 0, "values": [1.0, math.nan, math.inf]})
    line = (tmp_path / "records.jsonl").read_text()
    assert json.loads(line)["values"] == [1.0, None, None]


def test_status_is_atomic_and_heartbeat_marks_stalls(tmp_path):
    writer = RunWriter(tmp_path)
    writer.start(total_epochs=2)
    status = json.loads((tmp_path / "status.json").read_text())
    assert status["state"] == "running" and status["pid"] == os.getpid()
    assert effective_state(status) == "running"
    assert effective_state(status, at=status["updated_at"] + 3600) == "stalled"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    writer.finish("interrupted", "stopped")
    assert effective_state(json.loads((tmp_path / "status.json").read_text()), at=time.time() + 3600) == "interrupted"


def test_foreign_and_corrupt_directories_are_reported_not_raised(tmp_path):
    (tmp_path / "foreign").mkdir()
    assert "not an ftdyn run" in read_run(tmp_path / "foreign").problem
    (tmp_path / "corrupt").mkdir()
    (tmp_path / "corrupt" / "config.json").write_text("{not json")
    assert "not a readable ftdyn run" in read_run(tmp_path / "corrupt").problem


def test_find_runs(tmp_path):
    for name in ("a", "b/c"):
        RunWriter(tmp_path / name).write_config({})
    (tmp_path / "empty").mkdir()
    assert [p.relative_to(tmp_path).as_posix() for p in find_runs(tmp_path)] == ["a", "b/c"]
