"""A recording audit hook for the security tests: which events fired in this thread, and whether
generated code (a frame whose globals carry `dsl.guard.MARK`) was on the stack when each one did."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from dsl.guard import MARK, MARKER


@dataclass(frozen=True)
class Event:
    name: str
    from_generated: bool
    detail: str


_local = threading.local()


def _from_generated(event: str) -> bool:
    """Like the guard: introspection counts when generated code does it itself (a tracer's
    frame walks during a hypothesis replay are not), anything else when it is on the stack."""
    f = sys._getframe(2)  # f_globals and f_back are not audited (f_code is)
    if event.startswith("object."):
        return f.f_globals.get(MARK) is MARKER
    while f is not None:
        if f.f_globals.get(MARK) is MARKER:
            return True
        f = f.f_back  # type: ignore[assignment]
    return False


def _recorder(event: str, args: tuple[object, ...]) -> None:
    sink = getattr(_local, "sink", None)
    if sink is None or event == "sys._getframe" or getattr(_local, "busy", False):
        return
    _local.busy = True
    try:
        detail = repr(args[0])[:120] if args else ""
        sink.append(Event(event, _from_generated(event), detail))
    finally:
        _local.busy = False


_installed = False


@contextmanager
def recording() -> Iterator[list[Event]]:
    """Every audit event this thread raises inside the block (the hook stays, as hooks do)."""
    global _installed
    if not _installed:
        sys.addaudithook(_recorder)
        _installed = True
    events: list[Event] = []
    _local.sink = events
    try:
        yield events
    finally:
        _local.sink = None


BUILD_EVENTS = frozenset(
    {
        "open",  # reading bundle.toml and the rule files
        "os.scandir",  # walking the bundle directory
        "compile",  # ast.parse and compile of the generated module
        "exec",  # running the verified module, once per evaluator
        "builtins.id",  # pydantic copies the manifest's defaults (copy.deepcopy)
        "import",  # first use of a module (lark's and pydantic's error paths, the stdlib)
        "os.listdir",
        "marshal.loads",
        "object.__getattr__",
        "object.__setattr__",
        "sys.addaudithook",  # the guard installing its hook, at the first build of a process
    }
)
"""What the loader and compiler themselves may cause during a build; none of it from generated
code (checked separately), and evaluation causes no event at all."""
