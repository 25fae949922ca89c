"""The store's scheduling tables, used directly: published pipelines, schedules, firings and
scheduler heartbeats — and the rule that only store/ speaks SQL."""

from __future__ import annotations

import ast
import re
import sqlite3
import tokenize
from pathlib import Path

import pytest

from mlpipe_jupyter.errors import ConflictError, PublishedPipelineNotFoundError
from mlpipe_jupyter.store import Store
from mlpipe_jupyter.store.firings import CANCELED, PENDING, RUNNING, SUCCEEDED, insert_firing
from mlpipe_jupyter.store.schedules import EVERY, Advance, DueCheck, NewFiring, ScheduleRecord
from mlpipe_jupyter.store.workspace import Workspace

PACKAGE = Path(__file__).resolve().parents[2] / "mlpipe_jupyter"
T0 = 1767225600.0


def _schedule(store: Store, name: str = "s", dataset: str | None = None) -> ScheduleRecord:
    return store.schedules.create(
        name=name, pipeline="pipe", version=None, kind="dataset" if dataset else EVERY,
        cron=None, timezone="UTC", every_seconds=None if dataset else 60.0, dataset=dataset,
        params={"n": "5"}, missed="skip", overlap="queue", max_retries=0, retry_backoff=30.0,
        timeout=None, created_at=T0, dataset_seen=0 if dataset else None,
    )


def _add_firing(store: Store, schedule_id: int, key: str, at: float, status: str = PENDING) -> None:
    with store.workspace.transaction() as db:
        insert_firing(db, schedule_id, key, at, status, False, None, None, at)


def _staging(store: Store, text: str) -> Path:
    folder = store.workspace.staging_dir / f"publish-{text}"
    folder.mkdir(parents=True)
    (folder / "notebook.ipynb").write_text(text)
    return folder


def _publish(store: Store, text: str, make_default: bool = True) -> tuple[int, bool]:
    return store.published.add(
        "pipe", _staging(store, text), content_hash=f"hash-{text}", source=Path("/nb.ipynb"),
        steps=[{"name": "prep"}], parameters={"n": 1, "t": (1, 2)}, environments={},
        datasets=["nums"], files=[], git={}, description=None, make_default=make_default,
    )


# -- published pipelines -----------------------------------------------------------------
def test_published_versions_defaults_and_disabling(store: Store) -> None:
    assert store.published.names() == [] and store.published.latest("pipe") is None
    assert _publish(store, "one") == (1, True)
    staging = _staging(store, "again")
    version, created = store.published.add(
        "pipe", staging, content_hash="hash-one", source=Path("/nb.ipynb"), steps=[],
        parameters={}, environments={}, datasets=[], files=[], git={}, description=None,
        make_default=True)
    assert (version, created) == (1, False) and staging.is_dir()  # nothing moved or stored
    assert _publish(store, "two", make_default=False) == (2, True)
    first = store.published.get("pipe")  # the default stayed v1
    assert first.version == 1 and first.is_default and first.parameters == {"n": 1, "t": (1, 2)}
    assert first.notebook == store.published.folder("pipe") / "v1" / "notebook.ipynb"
    assert first.notebook.read_text() == "one"
    assert store.published.default_version("pipe") == 1
    store.published.set_default("pipe", 2)
    store.published.set_disabled("pipe", [1], disabled=True)
    assert [(p.version, p.is_default, p.disabled) for p in store.published.all()] == [
        (1, False, True), (2, True, False)]
    with pytest.raises(PublishedPipelineNotFoundError, match=r"has no version 7 \(versions: v1, v2\)"):
        store.published.get("pipe", 7)
    with pytest.raises(PublishedPipelineNotFoundError, match="published: pipe"):
        store.published.all("other")


def test_reading_an_empty_workspace_creates_no_database(tmp_path: Path) -> None:
    folder = tmp_path / ".mlpipe"
    folder.mkdir()
    store = Store(Workspace(folder))
    assert store.published.names() == [] and store.schedules.all() == []
    assert not store.workspace.db_path.exists()


# -- schedules ------------------------------------------------------------------------------
def test_schedule_rows(store: Store) -> None:
    created = _schedule(store)
    assert created == store.schedules.find("s") == store.schedules.by_id(created.id)
    assert created.params == {"n": "5"} and created.cursor == created.anchor == T0
    assert created.target == "pipe (default)"
    with pytest.raises(ConflictError, match="'s' exists already"):
        _schedule(store)
    _schedule(store, "s-2")
    assert store.schedules.names_starting("s") == {"s", "s-2"}
    store.schedules.pause(created.id)
    assert [s.name for s in store.schedules.unpaused()] == ["s-2"]
    assert [s.name for s in store.schedules.all("pipe")] == ["s", "s-2"]
    store.schedules.resume(created, T0 + 500)
    resumed = store.schedules.find("s")
    assert resumed is not None and not resumed.paused and resumed.cursor == T0 + 500


def test_resuming_a_dataset_schedule_skips_the_versions_registered_meanwhile(
    store: Store, tmp_path: Path
) -> None:
    schedule = _schedule(store, dataset="nums")
    for text in ("1", "2"):
        (tmp_path / text).mkdir()
        (tmp_path / text / "n.txt").write_text(text)
        store.datasets.register("nums", tmp_path / text)
    store.schedules.pause(schedule.id)
    store.schedules.resume(schedule, T0)
    found = store.schedules.find("s")
    assert found is not None and found.dataset_seen == 2


def test_deleting_a_schedule_cancels_only_its_unstarted_firings(store: Store) -> None:
    schedule = _schedule(store)
    _add_firing(store, schedule.id, "a", T0, RUNNING)
    _add_firing(store, schedule.id, "b", T0 + 60)
    store.schedules.delete(schedule.id, T0 + 100)
    assert store.schedules.by_id(schedule.id) is None
    left = {f.fire_key: (f.status, f.error) for f in store.firings.of_schedule(schedule.id)}
    assert left == {"a": (RUNNING, None), "b": (CANCELED, "schedule deleted")}


def test_fire_due_records_a_decision_atomically(store: Store) -> None:
    schedule = _schedule(store)
    seen: list[ScheduleRecord] = []

    def nothing(check: DueCheck) -> Advance | None:
        seen.append(check.schedule)
        return None

    assert store.schedules.fire_due(schedule.id, T0, nothing) is None
    assert seen == [schedule] and store.firings.of_schedule(schedule.id) == []

    def fire(check: DueCheck) -> Advance:
        assert check.active_firing() is None
        return Advance(T0 + 60, None, 2, NewFiring("k1", T0 + 60, PENDING, late=True))

    fired = store.schedules.fire_due(schedule.id, T0 + 61, fire)
    assert fired is not None and fired.firing is not None and fired.firing.fire_key == "k1"
    after = store.schedules.find("s")
    assert after is not None and after.cursor == T0 + 60 and after.missed_total == 2
    [firing] = store.firings.of_schedule(schedule.id)
    assert (firing.fire_key, firing.status, firing.late, firing.created_at) == (
        "k1", PENDING, True, T0 + 61)
    # the same key again inserts nothing; the decision sees the active firing
    again = store.schedules.fire_due(
        schedule.id, T0 + 62,
        lambda check: Advance(T0 + 60, None, 0, NewFiring(
            "k1", T0 + 60, PENDING, error=check.active_firing())))
    assert again is None and len(store.firings.of_schedule(schedule.id)) == 1

    def broken(check: DueCheck) -> Advance:
        raise ValueError("bad cron")

    with pytest.raises(ValueError, match="bad cron"):
        store.schedules.fire_due(schedule.id, T0 + 200, broken)
    unchanged = store.schedules.find("s")
    assert unchanged is not None and unchanged.cursor == T0 + 60  # rolled back
    store.schedules.pause(schedule.id)
    assert store.schedules.fire_due(schedule.id, T0 + 300, broken) is None  # not asked


# -- firings and heartbeats --------------------------------------------------------------------
def test_claims_and_takeovers_are_conditional(store: Store) -> None:
    schedule = _schedule(store)
    _add_firing(store, schedule.id, "a", T0)
    _add_firing(store, schedule.id, "b", T0 + 60)
    first, second = store.firings.startable(T0)
    assert (first.fire_key, second.fire_key) == ("a", "b")
    assert store.firings.blocked(second) and not store.firings.blocked(first)
    assert not store.firings.claim(second, "s1", 1, "run-b", None, T0)  # a goes first
    assert store.firings.claim(first, "s1", 1, "run-a", T0 + 30, T0)
    assert not store.firings.claim(first, "s2", 1, "run-x", None, T0)  # read before the claim
    store.firings.set_pid(schedule.id, "a", 4242)
    claimed = store.firings.get(schedule.id, "a")
    assert (claimed.status, claimed.owner, claimed.attempt, claimed.run_ids, claimed.pid,
            claimed.deadline) == (RUNNING, "s1", 1, ["run-a"], 4242, T0 + 30)
    store.schedulers.heartbeat("s1", "elsewhere", 1, T0)
    [(orphan, lease)] = store.firings.running_elsewhere("s2")
    assert orphan == claimed and lease is not None and lease.host == "elsewhere"
    assert store.firings.running_elsewhere("s1") == []
    assert store.firings.take_over(orphan, "s2", T0 + 100)
    assert not store.firings.take_over(orphan, "s3", T0 + 100)  # its owner changed
    [(_, lease)] = store.firings.running_elsewhere("s3")
    assert lease is None  # s2 never heartbeat
    store.firings.finish(claimed, SUCCEEDED, None, T0 + 200)
    done = store.firings.get(schedule.id, "a")
    assert (done.status, done.pid) == (SUCCEEDED, 4242)
    store.firings.finish(done, PENDING, "late", T0 + 300)  # expects running: no change
    assert store.firings.get(schedule.id, "a").status == SUCCEEDED


def test_heartbeats(store: Store) -> None:
    assert store.schedulers.get("x") is None
    store.schedulers.heartbeat("x", "host", 12, T0)
    store.schedulers.heartbeat("x", "host", 12, T0 + 5)
    store.schedulers.mark_stopped("x", T0 + 9)
    lease = store.schedulers.get("x")
    assert lease is not None and (lease.heartbeat_at, lease.stopped_at) == (T0 + 5, T0 + 9)
    [row] = store.workspace.query("SELECT started_at FROM schedulers WHERE id='x'")
    assert row["started_at"] == T0


def test_change_marker_sees_other_connections(store: Store) -> None:
    before = store.workspace.change_marker()
    other = sqlite3.connect(store.workspace.db_path)
    other.execute("INSERT INTO experiments (name, created_at) VALUES ('e', 0)")
    other.commit()
    other.close()
    assert store.workspace.change_marker() != before


# -- layering ------------------------------------------------------------------------------
_SQL = re.compile(r"\b(SELECT\s.+\sFROM|INSERT\s+(OR\s+\w+\s+)?INTO|UPDATE\s+\w+\s+SET|"
                  r"DELETE\s+FROM|PRAGMA)\b", re.S)
_CONNECTION = re.compile(r"workspace\.(query|transaction)\(|workspace\.db\b")


def test_only_the_store_speaks_sql() -> None:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.relative_to(PACKAGE).parts[0] == "store":
            continue
        with path.open("rb") as handle:
            for token in tokenize.tokenize(handle.readline):
                if token.type == tokenize.STRING and _SQL.search(token.string):
                    found.append(f"{path.relative_to(PACKAGE)}:{token.start[0]}")
        found += [f"{path.relative_to(PACKAGE)}: {m.group()}"
                  for m in _CONNECTION.finditer(path.read_text())]
    assert found == []


def test_the_store_imports_no_layer_above_it() -> None:
    above = ("mlpipe_jupyter.scheduling", "mlpipe_jupyter.server", "mlpipe_jupyter.runner",
             "mlpipe_jupyter.jupyter", "mlpipe_jupyter.cli", "mlpipe_jupyter.executors")
    found = []
    for path in sorted((PACKAGE / "store").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            found += [f"{path.name}: {n}" for n in names if n.startswith(above)]
    assert found == []
