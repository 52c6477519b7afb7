"""The two guards of generated code: the `ast` allowlist (the boundary: a module that fails it is
a compiler bug, E311, and never runs) and the audit-hook tripwire (the alarm)."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from dsl import build_bundle, compiler, guard
from dsl.compiler import GeneratedCodeError, exec_generated
from dsl.guard import SandboxViolation
from tests.conftest import SNAPSHOT, BundleFactory
from tests.security.audit import recording

ROOT = Path(__file__).resolve().parents[2]
HELPERS = compiler._HELPER_NAMES
FIRST = "def _evaluate(f):\n"


def problems(body: str, *, head: str = FIRST, params: tuple[str, ...] = ("f",)) -> list[str]:
    return guard.verify(ast.parse(head + body), "_evaluate", params, HELPERS)


# -- the allowlist ---------------------------------------------------------------------------


def test_every_generated_module_of_the_default_bundle_passes() -> None:
    rs = build_bundle(ROOT / "rulesets" / "default").ruleset
    assert rs is not None
    assert guard.verify(ast.parse(rs.source), "_evaluate", ("f",), HELPERS) == []
    gen = compiler._Gen(rs.checked.lets, traced=True)
    traced, _ = compiler._function("_evaluate_traced", rs.rules, gen, "f, _w, _s")
    assert guard.verify(ast.parse(traced), "_evaluate_traced", ("f", "_w", "_s"), HELPERS) == []


@pytest.mark.parametrize(
    "body",
    [
        "    return f.__class__\n",  # attribute chains to modules
        "    return ().__class__.__base__.__subclasses__()\n",
        "    return '{0.__class__}'.format(f)\n",  # str.format / format_map
        "    return '{x.__globals__}'.format_map(f)\n",
        "    return f'{f!r}'\n",  # formatting
        "    return '%s' % f\n",
        "    return (x for x in ()).gi_frame.f_back\n",  # generator and frame walks
        "    return [x for x in f]\n",
        "    return lambda: 0\n",
        "    import os\n",
        "    from os import system\n",
        "    return __import__('os')\n",
        "    return _abs.__self__\n",  # the helpers' own attributes
        "    return _Exception.__subclasses__()\n",  # exception classes
        "    return _Exception('x').__traceback__\n",
        "    return f.__reduce__()\n",  # __reduce__
        "    return f.__reduce_ex__(2)\n",
        "    return getattr(f, 'x')\n",
        "    return f[0]\n",
        "    return f['mid'][0]\n",
        "    return f.get('mid')\n",
        "    fired.clear()\n",
        "    return _float(*f)\n",
        "    return _abs(x=1)\n",
        "    x = 1\n",
        "    global g\n",
        "    while True: pass\n",
        "    for i in f: pass\n",
        "    with f: pass\n",
        "    del f\n",
        "    raise _Exception()\n",
        "    assert f\n",
        "    return f if f is None else 1\n",
        "    return 1e999\n",
        "    return b'x'\n",
        "    return ...\n",
        "    _sm += 1\n",
        "    _float = 1\n",
        "    try:\n        pass\n    except _Exception as _e:\n        pass\n    finally:\n        pass\n",
        "    try:\n        pass\n    except BaseException as _e:\n        pass\n",
        "    try:\n        pass\n    except:\n        pass\n",
    ],
)
def test_anything_the_generator_does_not_emit_is_refused(body: str) -> None:
    assert problems(body) != []


@pytest.mark.parametrize(
    "src",
    [
        "import os\n",
        "x = 1\ndef _evaluate(f):\n    return 1\n",
        "def _evaluate(f):\n    return 1\ndef _other(f):\n    return 1\n",
        "@_abs\ndef _evaluate(f):\n    return 1\n",
        "def _evaluate(f, g=_abs):\n    return 1\n",
        "def _evaluate(*f):\n    return 1\n",
        "def _other(f):\n    return 1\n",
        "async def _evaluate(f):\n    return 1\n",
    ],
)
def test_the_module_is_one_plain_function(src: str) -> None:
    assert guard.verify(ast.parse(src), "_evaluate", ("f",), HELPERS) != []


def test_a_refused_module_is_e311_and_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    src = (
        f"def _evaluate(f):\n    return 1\n"
        f"[c for c in ().__class__.__base__.__subclasses__() if c.__name__ == '_wrap_close'][0]"
        f".__init__.__globals__['system']('touch {marker}')\n"
    )
    with pytest.raises(GeneratedCodeError) as info:
        exec_generated(src, "_evaluate", ("f",), "<bundle t rev 1>")
    assert [d.code for d in info.value.diagnostics] == ["E311"]
    assert not marker.exists()


def test_a_generator_bug_surfaces_as_e311_in_a_build(
    make_bundle: BundleFactory, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Simulate a code generator that pastes text: the helper table maps `abs` to an expression.
    marker = tmp_path / "ran"
    evil = (
        "[c for c in ().__class__.__base__.__subclasses__() if c.__name__ == '_wrap_close'][0]"
        f".__init__.__globals__['system']('touch {marker}') or _abs"
    )
    monkeypatch.setitem(compiler._FUNCS, "abs", evil)
    result = build_bundle(make_bundle("rule R-1 when abs(mid) > 0 then skip_entry\n"))
    assert result.ruleset is None
    assert [d.code for d in result.diagnostics] == ["E311"]
    assert "which is not a runtime helper" in result.diagnostics[0].message
    assert not marker.exists()


# -- the tripwire ----------------------------------------------------------------------------


def _generated(src: str, name: str = "g") -> Callable[..., Any]:
    """Code as an escape would run it: in a namespace marked as generated (the allowlist is
    bypassed on purpose, to see the alarm go off)."""
    namespace: dict[str, Any] = {"__builtins__": {}, guard.MARK: guard.MARKER}
    guard.install()
    exec(compile(src, "<bundle escaped rev 1>", "exec"), namespace)
    fn: Callable[..., Any] = namespace[name]
    return fn


@pytest.mark.parametrize(
    ("call", "event"),
    [
        (lambda g, p: g(open, str(p)), "open"),
        (lambda g, p: g(os.system, "true"), "os.system"),
        (lambda g, p: g(subprocess.Popen, ["true"]), "subprocess.Popen"),
        (lambda g, p: g(__import__, "antigravity"), "import"),
        (lambda g, p: g(compile, "1", "x", "eval"), "compile"),
        (lambda g, p: g(exec, compile("1", "x", "exec")), "exec"),
        (lambda g, p: g(os.listdir, str(p)), "os.listdir"),
    ],
    ids=["open", "os.system", "Popen", "import", "compile", "exec", "listdir"],
)
def test_dangerous_events_from_generated_code_are_refused_unarmed(
    tmp_path: Path, call: Callable[..., Any], event: str
) -> None:
    g = _generated("def g(fn, *args):\n    return fn(*args)\n")
    before = len(guard.violations)
    with pytest.raises(SandboxViolation, match=event):
        call(g, tmp_path)
    assert guard.violations[-1].startswith(f"audit event '{event}'")
    assert len(guard.violations) == min(before + 1, 100)


def test_a_frame_walk_from_generated_code_is_refused() -> None:
    def gen() -> Any:
        yield 1

    g = _generated("def g(x):\n    return x.gi_frame\n")
    with pytest.raises(SandboxViolation, match=re.escape("object.__getattr__")):
        g(gen())
    assert gen().gi_frame is not None  # outside generated code: nobody's business


def test_everything_watched_is_refused_while_armed_and_allowed_outside(tmp_path: Path) -> None:
    path = tmp_path / "x"
    path.write_text("x")
    guard.install()
    with guard.armed():
        with pytest.raises(SandboxViolation):
            path.read_text()
        with pytest.raises(SandboxViolation):
            os.listdir(tmp_path)
    assert path.read_text() == "x"  # the hook costs nothing once disarmed


def test_arming_is_per_thread(tmp_path: Path) -> None:
    import threading

    path = tmp_path / "x"
    path.write_text("x")
    seen: list[str] = []
    guard.install()
    with guard.armed():
        t = threading.Thread(target=lambda: seen.append(path.read_text()))
        t.start()
        t.join()
    assert seen == ["x"]


def test_a_violation_inside_a_rule_is_not_swallowed_as_a_fault(
    make_bundle: BundleFactory,
) -> None:
    rs = build_bundle(make_bundle("rule R-1 when mid > 0 then skip_entry\n")).ruleset
    assert rs is not None
    # An evaluator that (as an escape would) opens a file inside the rule's try block.
    escaped = _generated(
        "def g(f):\n"
        "    faults = []\n"
        "    try:\n"
        "        f['open']('/etc/hostname')\n"
        "    except _Exception as _e:\n"
        "        faults.append((0, _e))\n"
        "    return [], faults, [], 1.0, 1.0, 1.0\n"
    )
    escaped.__globals__["_Exception"] = Exception
    object.__setattr__(rs, "_fast", escaped)
    with pytest.raises(SandboxViolation):
        rs.evaluate({**SNAPSHOT, "open": open})


def test_building_and_evaluating_cause_no_event_from_generated_code(
    make_bundle: BundleFactory,
) -> None:
    root = make_bundle(
        "let big = mid > 100\nrule R-1 when big and log(mid) > 1 then size_mult *= mid / mid\n"
        "rule R-2 when big or sqrt(spread_bps) > 0 then tp_mult *= 1.1\n"
        "rule R-3 when big then sl_mult *= 0.9\n"
    )
    with recording() as events:
        rs = build_bundle(root).ruleset
        assert rs is not None
        rs.evaluate(SNAPSHOT)
        rs.evaluate(SNAPSHOT, trace=True)
        rs.run(SNAPSHOT)
    assert [e for e in events if e.from_generated] == []
    assert [e.name for e in events if e.name == "exec"] == ["exec", "exec"]  # fast and traced


def test_the_hook_does_not_get_in_the_way_of_a_child_interpreter() -> None:
    # A subprocess started outside generated code is the engine's business (Redis, tools).
    guard.install()
    out = subprocess.run([sys.executable, "-c", "print(1)"], capture_output=True, text=True)
    assert out.stdout == "1\n"
