"""The attribution checked against planted truth (`s3.replay.planted`): on 200 seeded synthetic
tapes, the sign of the planted edge is recovered in >= 95 % of the seeds and the 95 % intervals
cover the planted contributions (the edge's, and the noise rule's 0) in 93-97 % of the seeds.
tests/bench/bench_outcomes.py runs the same check on 1,000 seeds."""

from __future__ import annotations

from pathlib import Path

from s3.config.bundle import load_dir
from s3.replay import planted
from s3.replay.attribution import attribute

SEEDS = 200


def test_planted_edges_are_recovered_with_calibrated_intervals(tmp_path: Path) -> None:
    snap = load_dir(planted.write_bundle(tmp_path / "planted")).snapshot
    assert snap is not None
    w, loss = planted.win_loss(snap)
    # a win at the TP, a loss through the stop: the values the planted truth is computed from
    assert w > 0 > loss
    p0 = planted.p_zero(w, loss)
    design = planted.Design()
    truth = planted.planted_values(design, w, loss)
    assert truth["R-EDGE"] > 0 and truth["R-NOISE"] == 0
    sign = cover_edge = cover_noise = 0
    for seed in range(SEEDS):
        tape, cycles = planted.tape(design, seed, p0)
        rows = {r.rule_id: r for r in attribute(tape, snap, blocks=100, seed=seed).rows}
        edge, noise = rows["R-EDGE"], rows["R-NOISE"]
        # the realised contribution is exactly what the planted cycles say it is
        realised = -sum(
            (w if won else loss) for fired, vetoed, won in cycles if fired and not vetoed
        )
        assert edge.contribution == realised
        sign += edge.contribution > 0
        cover_edge += edge.ci[0] <= truth["R-EDGE"] <= edge.ci[1]
        cover_noise += noise.ci[0] <= 0.0 <= noise.ci[1]
    assert sign / SEEDS >= 0.95
    assert 0.93 <= cover_edge / SEEDS <= 0.97, cover_edge / SEEDS
    assert 0.93 <= cover_noise / SEEDS <= 0.97, cover_noise / SEEDS
