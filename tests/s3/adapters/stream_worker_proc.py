"""A `StreamWorker` in its own process, for the kill -9 test (test_redis_streams.py).

It consumes `feat:events:{SYMBOL}` and appends one line per event to ``--record`` (line-buffered, so
what is written survives a SIGKILL): ``H <id>`` when the handler returned, ``A <id>`` once the
XACK for it returned, ``S <id>`` when the handler starts sleeping on the ``--sleep-at``-th entry
(then it sleeps far longer than the test waits, so the test kills it mid-batch).

    python tests/s3/adapters/stream_worker_proc.py --address 127.0.0.1:6379 --prefix t1: \
        --group g --consumer c1 --symbol BTCUSDT --record /tmp/rec --sleep-at 15
"""

from __future__ import annotations

import argparse
import time

from s3.adapters.redis_client import connect
from s3.adapters.redis_keys import Keys
from s3.adapters.redis_streams import StreamWorker, WorkerConfig


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--address", required=True)
    ap.add_argument("--prefix", default="")
    ap.add_argument("--group", required=True)
    ap.add_argument("--consumer", required=True)
    ap.add_argument("--symbol", required=True)
    ap.add_argument("--record", required=True)
    ap.add_argument("--count", type=int, default=10)
    ap.add_argument("--ack-batch", type=int, default=0)
    ap.add_argument("--sleep-at", type=int, default=0, help="1-based; 0 never sleeps")
    ap.add_argument("--min-idle-ms", type=int, default=600_000)
    args = ap.parse_args(argv)

    client, keys = connect(args.address)
    keys = Keys(prefix=args.prefix, risk_tag=keys.risk_tag)
    record = open(args.record, "a", buffering=1)  # noqa: SIM115 - lives as long as the process
    seen = 0

    def handler(symbol: str, entry_id: str, fields: dict[str, str]) -> None:
        nonlocal seen
        seen += 1
        if seen == args.sleep_at:
            record.write(f"S {entry_id}\n")
            time.sleep(3600)
        record.write(f"H {entry_id}\n")

    def on_acked(symbol: str, ids: list[str]) -> None:
        record.writelines(f"A {i}\n" for i in ids)

    config = WorkerConfig(
        group=args.group,
        consumer=args.consumer,
        symbols=(args.symbol,),
        count=args.count,
        ack_batch=args.ack_batch,
        min_idle_ms=args.min_idle_ms,
        start_id="0",
    )
    StreamWorker(client, keys, handler, config, on_acked=on_acked).run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
