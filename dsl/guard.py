"""The two guards around generated evaluator code: the boundary and the alarm.

*The boundary* is `verify`: every module the compiler generates is parsed back with `ast` and
checked against an allowlist of exactly what the code generator emits (one function, assignments,
``try``/``if``, arithmetic, comparisons, ``f['name']``, calls of the runtime helpers and
``fired.append``), before it is compiled. Anything else (an attribute other than ``append``, a
string method, an f-string, a name the generator never writes, a lambda, an import) is a compiler
bug: the module is refused and never executed.

*The alarm* is an audit hook (`sys.addaudithook`, PEP 578). It refuses the events of `_WATCHED`
(processes, files, sockets, imports, ``exec``/``compile``, code and function objects) while an
evaluator is built (or traced) under `armed` (the ``exec`` of the verified module itself is the one
exception), and at any time when generated code is on the Python stack, so the raw hot path
(`CompiledRuleset.run`) is covered without arming; introspection (``object.__getattr__`` of
``gi_frame``, ``tb_frame``, ``f_code``, ``__globals__`` ...) is refused when generated code does
it itself. Generated code causes no audit event at all. A refusal raises `SandboxViolation` and
is kept in `violations`. Every other event costs one ``str.startswith``. CPython says audit hooks
are not a sandbox: the allowlist is what keeps code out, the hook says if it failed.

Also here: `bad_char`/`escaped`, the one test of "text a bundle may carry in a name or a path".
Imports nothing from the rest of the project.
"""

from __future__ import annotations

import ast
import math
import re
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from types import CodeType, FrameType

GENERATED_PREFIX = "<bundle "
"""Every generated module is compiled under a file name starting with this."""

# -- names and paths ---------------------------------------------------------------------------


def bad_char(text: str) -> str | None:
    """The first control or non-printable character of ``text`` (escaped), or None."""
    for ch in text:
        if not ch.isprintable():
            return repr(ch)[1:-1]
    return None


def escaped(text: str) -> str:
    """``text`` quoted for a message, with control and non-printable characters escaped."""
    if text.isprintable() and "'" not in text:
        return f"'{text}'"
    return repr(text)


# -- the allowlist -----------------------------------------------------------------------------


class GeneratedCodeRejected(Exception):
    """The generated module failed the allowlist (a compiler bug: it is never executed)."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("; ".join(problems))


_NODES: frozenset[type[ast.AST]] = frozenset(
    {
        ast.Module,
        ast.FunctionDef,
        ast.arguments,
        ast.arg,
        ast.Assign,
        ast.AugAssign,
        ast.Try,
        ast.ExceptHandler,
        ast.If,
        ast.Expr,
        ast.Return,
        ast.Name,
        ast.Load,
        ast.Store,
        ast.Constant,
        ast.Tuple,
        ast.Set,
        ast.List,
        ast.BoolOp,
        ast.And,
        ast.Or,
        ast.BinOp,
        ast.Add,
        ast.Sub,
        ast.Mult,
        ast.Div,
        ast.UnaryOp,
        ast.USub,
        ast.Not,
        ast.Compare,
        ast.Eq,
        ast.NotEq,
        ast.Lt,
        ast.LtE,
        ast.Gt,
        ast.GtE,
        ast.In,
        ast.NotIn,
        ast.IsNot,
        ast.IfExp,
        ast.NamedExpr,
        ast.Subscript,
        ast.Call,
        ast.Attribute,
    }
)
_LISTS = frozenset({"fired", "faults", "dyn"})
_ACCUMULATORS = frozenset({"_sm", "_tm", "_lm"})
_LOCAL = re.compile(r"_[tkL][0-9]+")
"""Temporaries (``_t1``), dynamic factors (``_k0``) and cached lets (``_L0``)."""
_STORED = _LISTS | _ACCUMULATORS | {"_U"}
_READ_ONLY = frozenset({"f", "_w", "_U", "_UNSET", "_Exception", "_e"})
_CONSTANTS = (bool, int, float, str)


def verify(
    tree: ast.Module, function: str, params: tuple[str, ...], helpers: frozenset[str]
) -> list[str]:
    """What in ``tree`` the code generator never emits (empty: the module may be compiled).

    Args:
        tree: the generated module, parsed.
        function: the one function it must define.
        params: that function's parameters.
        helpers: the names of the callables in its namespace.
    """
    problems: list[str] = []

    def bad(node: ast.AST, what: str) -> None:
        if len(problems) < 10:
            problems.append(f"line {getattr(node, 'lineno', 0)}: {what}")

    if len(tree.body) != 1 or not isinstance(tree.body[0], ast.FunctionDef):
        bad(tree, "the module must be one function definition")
        return problems
    fn = tree.body[0]
    a = fn.args
    if (
        fn.name != function
        or fn.decorator_list
        or fn.returns is not None
        or a.posonlyargs
        or a.kwonlyargs
        or a.vararg
        or a.kwarg
        or a.defaults
        or a.kw_defaults
        or tuple(p.arg for p in a.args) != params
        or any(p.annotation is not None for p in a.args)
    ):
        bad(fn, f"the function must be plain 'def {function}({', '.join(params)})'")
    readable = _READ_ONLY | _STORED | helpers | set(params)
    callable_ = helpers | ({"_w", "_s"} & set(params))  # the tracer's record and start hooks
    stack: list[ast.AST] = [fn]
    push = stack.append
    while stack:
        node = stack.pop()
        kind = type(node)
        if kind not in _NODES:
            bad(node, f"{kind.__name__} is not emitted by the code generator")
            continue
        if kind is ast.Name:
            assert isinstance(node, ast.Name)
            local = _LOCAL.fullmatch(node.id) is not None
            if isinstance(node.ctx, ast.Store):
                ok = local or node.id in _STORED
            else:
                ok = local or node.id in readable
            if not ok:
                bad(node, f"name {node.id!r} is not one the code generator writes")
            continue
        if kind is ast.Constant:
            assert isinstance(node, ast.Constant)
            v = node.value
            if type(v) not in _CONSTANTS or (isinstance(v, float) and not math.isfinite(v)):
                bad(node, f"constant {v!r} is not a finite number, a bool or a string")
            continue
        if kind is ast.Attribute:  # the one allowed use is checked (and skipped) at its Call
            assert isinstance(node, ast.Attribute)
            bad(node, f"attribute '.{node.attr}' (only fired/faults/dyn.append is emitted)")
            continue
        if kind is ast.Call:
            assert isinstance(node, ast.Call)
            f = node.func
            if node.keywords or any(isinstance(x, ast.Starred) for x in node.args):
                bad(node, "keyword or starred arguments")
            if (
                isinstance(f, ast.Attribute)
                and f.attr == "append"
                and isinstance(f.value, ast.Name)
                and f.value.id in _LISTS
            ):
                stack.extend(node.args)
                continue
            if not (isinstance(f, ast.Name) and f.id in callable_):
                bad(node, f"call of {ast.unparse(f)[:40]!r}, which is not a runtime helper")
                continue
        elif kind is ast.Subscript:
            assert isinstance(node, ast.Subscript)
            if not (
                isinstance(node.value, ast.Name)
                and node.value.id == "f"
                and isinstance(node.slice, ast.Constant)
                and type(node.slice.value) is str
            ):
                bad(node, "subscript other than f['<feature>']")
            continue  # f and a string: nothing below to check
        elif kind is ast.AugAssign:
            assert isinstance(node, ast.AugAssign)
            if not (
                isinstance(node.target, ast.Name)
                and node.target.id in _ACCUMULATORS
                and isinstance(node.op, ast.Mult)
            ):
                bad(node, "augmented assignment other than '<output> *= factor'")
        elif kind is ast.ExceptHandler:
            assert isinstance(node, ast.ExceptHandler)
            if (
                not (isinstance(node.type, ast.Name) and node.type.id == "_Exception")
                or node.name != "_e"
            ):
                bad(node, "except clause other than 'except _Exception as _e'")
        elif kind is ast.Try:
            assert isinstance(node, ast.Try)
            if node.orelse or node.finalbody or len(node.handlers) != 1:
                bad(node, "try statement other than try/except")
        elif kind is ast.Compare:
            assert isinstance(node, ast.Compare)
            if any(isinstance(op, ast.IsNot) for op in node.ops) and not (
                len(node.ops) == 1
                and isinstance(node.left, ast.Name)
                and _LOCAL.fullmatch(node.left.id)
                and isinstance(node.comparators[0], ast.Name)
                and node.comparators[0].id == "_U"
            ):
                bad(node, "'is not' other than the let cache test")
        for field in node._fields:
            child = getattr(node, field, None)
            if isinstance(child, list):
                stack.extend(child)
            elif isinstance(child, ast.AST):
                push(child)
    return problems


# -- the tripwire ------------------------------------------------------------------------------


class SandboxViolation(RuntimeError):
    """An audit event generated code must never cause (a bundle escaped the allowlist)."""


ARMED: ContextVar[bool] = ContextVar("dsl_guard_armed", default=False)
"""Set while an evaluator is built or traced in this thread and context (see `armed`)."""
_EXEC_OK: ContextVar[CodeType | None] = ContextVar("dsl_guard_exec_ok", default=None)
_WATCHED = (
    "os.",
    "subprocess.",
    "shutil.",
    "socket.",
    "ctypes.",
    "pty.",
    "object.",
    "code.",
    "function.",
    "marshal.",
    "pickle.",
    "builtins.input",
    "builtins.breakpoint",
    "cpython.",
    "sys.set",
    "sys.add",
    "import",
    "exec",
    "compile",
    "open",
)
"""The refused events (prefixes): while armed, and whenever generated code is on the stack."""

violations: list[str] = []
"""Every refused event of this process, newest last (at most 100 kept)."""

MARK = "__dsl_generated__"
"""The key that marks a generated module's globals (its value is `MARKER`); generated code
cannot name it, and the hook finds generated frames by it without reading ``f_code`` (which is
itself an audited attribute)."""
MARKER = object()

_lock = threading.Lock()
_installed = False


def _generated(frame: FrameType | None) -> bool:
    """Whether ``frame`` or a frame below it runs generated code."""
    while frame is not None:
        if frame.f_globals.get(MARK) is MARKER:
            return True
        frame = frame.f_back
    return False


def _hook(event: str, args: tuple[object, ...]) -> None:
    if not event.startswith(_WATCHED):
        return
    caller = sys._getframe(0).f_back  # the Python frame that caused the event, if any
    if event.startswith("object."):
        # Introspection (gi_frame, tb_frame, f_code, __globals__ ...) is refused when generated
        # code does it itself; a debugger's or tracer's own frame walks are not its business.
        if caller is not None and caller.f_globals.get(MARK) is MARKER:
            _refuse(event, "from generated code")
        return
    if ARMED.get():
        if event == "exec" and args and args[0] is _EXEC_OK.get():
            return
        _refuse(event, "while an evaluator was built or traced")
    if _generated(caller):
        _refuse(event, "from generated code")


def _refuse(event: str, where: str) -> None:
    message = f"audit event {event!r} refused {where}"
    del violations[:-99]
    violations.append(message)
    raise SandboxViolation(message)


def install() -> None:
    """Add the audit hook (once per process; a hook cannot be removed)."""
    global _installed
    with _lock:
        if not _installed:
            sys.addaudithook(_hook)
            _installed = True


@contextmanager
def armed(exec_ok: CodeType | None = None) -> Iterator[None]:
    """Refuse the watched audit events in this thread and context until the block ends.

    Args:
        exec_ok: the one code object the block may ``exec`` (the verified module).
    """
    token = ARMED.set(True)
    code_token = _EXEC_OK.set(exec_ok)
    try:
        yield
    finally:
        _EXEC_OK.reset(code_token)
        ARMED.reset(token)
