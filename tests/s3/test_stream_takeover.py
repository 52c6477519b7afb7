"""Issue 16: an entry is decided once even when several consumers and bundle revisions meet it.

Two interleavings, each forced step by step on a real redis-server, the SQLite store and the S4
stand-in (no sleeps that the outcome depends on):

* a consumer waits out another attempt's idempotency claim (3.1 s in the chaos suite, longer than
  its 1.5 s idle bound) while a second consumer, already on a newer revision, takes the entry over
  and starts deciding it. The two decisions would be under two revisions, hence two intent ids:
  two reservations and two orders for one event. The waiting consumer must find the entry gone
  and leave it to the other.
* an instance whose startup read the active pointer just before a publish must apply that
  publish from `cfg:events` at once, not at its next poll.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from s3.adapters.redis_server import RedisServer
from s3.config.settings import Settings
from s3.core.decide import intent_id
from s3.s4_standin import S4Server
from s3.service import Service, publish
from s3.worker import Runner
from tests.s3.test_worker import DEFAULT, push, settings, wait_for

SYMBOL = "BTCUSDT"


@pytest.fixture
def s4() -> Iterator[S4Server]:
    with S4Server() as server:
        yield server


def _rev(tmp_path: Path, rev: int) -> Path:
    """The default bundle as rev ``rev``, with room for two entries per symbol (with one, the
    second decision of an event is refused for concurrency: two decisions, but one order)."""
    root = tmp_path / f"rev{rev}"
    shutil.copytree(DEFAULT, root)
    manifest = root / "bundle.toml"
    text = manifest.read_text().replace("rev = 1\n", f"rev = {rev}\n", 1)
    text = text.replace("concurrent_entries_per_symbol = 1 ", "concurrent_entries_per_symbol = 2 ")
    manifest.write_text(text)
    return root


def _service(cfg: Settings) -> Service:
    svc = Service.from_settings(cfg)
    svc.engine.redis.set(svc.engine.keys.kill_switch, "OFF")
    svc.engine.redis.set(svc.engine.keys.health, "GREEN")
    return svc


def test_an_entry_taken_over_while_its_consumer_waits_for_a_claim_is_decided_once(
    tmp_path: Path, redis_server: RedisServer, s4: S4Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = settings(tmp_path, redis_server, s4.url)
    cfg = cfg.model_copy(update={"bundle_dir": str(_rev(tmp_path, 1))})
    b_svc = _service(cfg)  # consumer b: started on rev 1, has not reloaded yet
    publish(b_svc.store, b_svc.engine.redis, b_svc.engine.keys, _rev(tmp_path, 2), reason="rev 2")
    c_svc = _service(cfg)  # consumer c: started after rev 2 was published
    try:
        e = b_svc.engine
        assert (e.registry.current.rev, c_svc.engine.registry.current.rev) == (1, 2)
        group, key = cfg.stream_group, e.keys.feat_events(SYMBOL)
        b = Runner(b_svc, consumer="b", min_idle_ms=1500, jobs=False)
        c = Runner(c_svc, consumer="c", min_idle_ms=1500, jobs=False)
        b.worker.ensure_groups()
        entry = push(b_svc, SYMBOL, "BUY")
        t0 = int(e.redis.xrange(key)[0][1]["ts"])

        # Consumer a took the entry and the intent's claim under rev 1, then was killed: the
        # claim holds (its TTL runs), and the entry has been idle past the bound.
        assert e.redis.xreadgroup(group, "a", {key: ">"}, count=1)
        iid_1, iid_2 = intent_id(SYMBOL, "BUY", t0, 1), intent_id(SYMBOL, "BUY", t0, 2)
        assert e.idem.begin(iid_1, 60_000).status == "first"
        e.redis.xclaim(key, group, "a", 0, [entry], idle=60_000, justid=True)

        # c's decision stops after its claim and reservation, before persisting anything.
        c_deciding, c_go = threading.Event(), threading.Event()
        c_put = c_svc.engine.store.put_decision

        def c_put_decision(*args: Any, **kwargs: Any) -> Any:
            c_deciding.set()
            assert c_go.wait(20)
            return c_put(*args, **kwargs)

        monkeypatch.setattr(c_svc.engine.store, "put_decision", c_put_decision)
        c_thread = threading.Thread(target=lambda: c.worker.poll(reclaim=True))

        # b takes the entry over and finds a's claim held: it waits. During that wait, the entry
        # idles past the bound again (1.5 s of a 3.1 s wait; here b's process stalls), c takes it
        # over and starts deciding it under rev 2; then a's claim lapses.
        real_sleep = time.sleep
        waits: list[float] = []

        def b_waits(seconds: float) -> None:
            if threading.current_thread() is not threading.main_thread() or waits:
                return real_sleep(seconds)
            waits.append(seconds)
            e.redis.xclaim(key, group, "b", 0, [entry], idle=60_000, justid=True)
            c_thread.start()
            assert c_deciding.wait(20), "c did not take the entry over"
            e.redis.delete(e.keys.idem(iid_1))  # a's claim lapses
            return None

        monkeypatch.setattr(time, "sleep", b_waits)
        b.worker.poll(reclaim=True)
        monkeypatch.setattr(time, "sleep", real_sleep)
        assert waits, "b never waited for a's claim: the interleaving did not happen"
        c_go.set()
        c_thread.join(20)
        assert not c_thread.is_alive()

        # One decision, one intent, one reservation, one order: c's, under rev 2. (Before the
        # fix: b decided it too, under rev 1: two opens, two reservations, two orders at S4.)
        signals = b_svc.store.signals_by_symbol(SYMBOL, t0, t0 + 1, limit=10)
        assert [(s.config_rev, s.decision["action"]) for s in signals] == [(2, "open")]
        assert list(s4.orders) == [iid_2]
        assert set(e.ledger.snapshot().entries) == {iid_2}
        assert b.handled == 0 and b.worker.stats.lost == 1 and b.worker.stats.failed == 0
        assert c.handled == 1
        assert e.redis.xpending(key, group)["pending"] == 0
    finally:
        b_svc.close()
        c_svc.close()


def test_a_publish_during_startup_is_applied_from_cfg_events_not_at_the_next_poll(
    tmp_path: Path, redis_server: RedisServer, s4: S4Server
) -> None:
    cfg = settings(tmp_path, redis_server, s4.url).model_copy(update={"config_poll_sec": 120.0})
    svc = _service(cfg)  # read the active pointer: rev 1
    try:
        # rev 2 is published after that read and before the reload watch starts (under load, a
        # start can take seconds between the two)
        publish(svc.store, svc.engine.redis, svc.engine.keys, _rev(tmp_path, 2), reason="rev 2")
        svc.start_reload_watch()

        def applied() -> list[tuple[int, str]]:
            events = svc.store.events_by_kind("CONFIG_APPLIED", limit=10)
            return sorted((a.detail["rev"], a.detail["reason"]) for a in events)

        wait_for(lambda: len(applied()) == 2, timeout=10)  # the next poll: in 120 s
        assert applied() == [(1, "startup"), (2, "cfg:events")]
        assert svc.engine.registry.current.rev == 2
    finally:
        svc.close()
