"""Chaos, fault injection and fuzzing with invariants checked after every run (issue 7).

`pytest tests/chaos` runs the short variant (also part of the normal suite); `python -m
tests.chaos --soak` runs the long one. See docs/reliability.md.
"""
