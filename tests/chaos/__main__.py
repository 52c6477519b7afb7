"""Run the chaos suite: ``python -m tests.chaos`` (short, as in CI) or ``--soak`` (long).

    python -m tests.chaos                     # every scenario and bad-input test, short
    python -m tests.chaos --soak              # scenarios x10, "everything at once", more fuzzing
    python -m tests.chaos --soak --scale 30   # longer still (scale stretches each feed)
    python -m tests.chaos -k kill9 --seed 3   # one scenario, another seed
    python -m tests.chaos --keep              # keep every run's files (logs, store, dump)

It runs pytest on tests/chaos with the matching environment (``S3_CHAOS_SOAK``,
``S3_CHAOS_SCALE``, ``S3_CHAOS_SEED``, ``S3_CHAOS_KEEP``); the report of every scenario (events
pushed, decided, dead-lettered, faults injected, each invariant) is printed at the end. The
exit code is pytest's: 0 when every invariant held.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import pytest


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.chaos", description=__doc__.split("\n")[0])
    ap.add_argument("--soak", action="store_true", help="the long variant")
    ap.add_argument("--scale", type=float, default=None, help="stretch each feed (soak: 10)")
    ap.add_argument("--seed", type=int, default=None, help="vary the scenarios")
    ap.add_argument("--keep", action="store_true", help="keep the files of passing runs too")
    ap.add_argument("-k", dest="select", default=None, help="pytest -k expression")
    args = ap.parse_args(argv)
    if args.soak:
        os.environ["S3_CHAOS_SOAK"] = "1"
    if args.scale is not None:
        os.environ["S3_CHAOS_SCALE"] = str(args.scale)
    if args.seed is not None:
        os.environ["S3_CHAOS_SEED"] = str(args.seed)
    if args.keep:
        os.environ["S3_CHAOS_KEEP"] = "1"
    here = Path(__file__).resolve().parent
    pytest_args = [str(here), "-q", "-rA" if args.soak else "-rf", "--durations=0"]
    if args.select:
        pytest_args += ["-k", args.select]
    os.chdir(here.parents[1])
    return int(pytest.main(pytest_args))


if __name__ == "__main__":
    sys.exit(main())
