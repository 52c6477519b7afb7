"""Record, replay and compare: test a rule change on real history before it trades.

Modules: `tape` (the file format), `record` (from Redis), `synth` (derived and synthetic tapes),
`replay` (the pure pipeline with simulated budgets), `diff` (summaries, A/B), `output`
(terminal, JSON, snapshot) and `report` (HTML). See docs/replay.md.
"""
