"""Nodes back to text: the canonical formatter behind `s3 rules fmt` and the text of diagnostics.

Parentheses are emitted exactly where the tree needs them, so ``parse(format_module(m)) == m``.
Comments are kept: each one is placed above the item it sat in or before (never lost, maybe moved).
"""

from __future__ import annotations

from dsl import nodes as n

LINE_WIDTH = 88
"""A `when` longer than this is broken before each top-level `and`/`or`."""

_PREC_OR, _PREC_AND, _PREC_NOT, _PREC_CMP, _PREC_SUM, _PREC_PROD, _PREC_NEG, _PREC_ATOM = range(
    1, 9
)


def _prec(e: n.Expr) -> int:
    match e:
        case n.BoolOp(op="or"):
            return _PREC_OR
        case n.BoolOp():
            return _PREC_AND
        case n.Not():
            return _PREC_NOT
        case n.Compare() | n.Member():
            return _PREC_CMP
        case n.BinOp(op="+" | "-"):
            return _PREC_SUM
        case n.BinOp():
            return _PREC_PROD
        case n.Neg():
            return _PREC_NEG
        case _:
            return _PREC_ATOM


def quote(value: str) -> str:
    escaped = (
        value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t")
    )
    return f'"{escaped}"'


def to_source(e: n.Expr, min_prec: int = 0) -> str:
    """The canonical text of an expression, parenthesised only where precedence needs it."""
    text = _bare(e)
    return f"({text})" if _prec(e) < min_prec else text


def _bare(e: n.Expr) -> str:
    match e:
        case n.Number(text=text):
            return text
        case n.String(value=value):
            return quote(value)
        case n.Bool(value=value):
            return "true" if value else "false"
        case n.FeatureRef(name=name, lag=lag) if lag:
            return f"prev({name})" if lag == 1 else f"prev({name}, {lag})"
        case n.Name(name=name) | n.FeatureRef(name=name) | n.LetRef(name=name):
            return name
        case n.Index(name=name, key=k) | n.Lookup(name=name, key=k):
            return f"{name}[{to_source(k)}]"
        case n.Crossed(op=op, left=a, right=b):
            return f"crossed_{op}({to_source(a)}, {to_source(b)})"
        case n.ListLit(items=items):
            return "[" + ", ".join(to_source(i) for i in items) + "]"
        case n.Neg(operand=o):
            inner = to_source(o, _PREC_NEG)
            return "-" + (" " + inner if inner.startswith("-") else inner)
        case n.Not(operand=o):
            return "not " + to_source(o, _PREC_NOT)
        case n.BinOp(op=op, left=left, right=right):
            p = _prec(e)
            return f"{to_source(left, p)} {op} {to_source(right, p + 1)}"
        case n.BoolOp(op=op, operands=ops):
            return f" {op} ".join(_bool_operand(op, o) for o in ops)
        case n.Compare(operands=ops, ops=cmp):
            parts = [to_source(ops[0], _PREC_SUM)]
            for op, o in zip(cmp, ops[1:], strict=True):
                parts += [op, to_source(o, _PREC_SUM)]
            return " ".join(parts)
        case n.Member(value=v, container=c, negated=neg):
            return (
                f"{to_source(v, _PREC_SUM)} {'not in' if neg else 'in'} {to_source(c, _PREC_ATOM)}"
            )
        case n.Convert(func=func, operand=o):
            return f"{func}({to_source(o)})"
        case n.Call(func=func, args=args):
            return f"{func}(" + ", ".join(to_source(a) for a in args) + ")"
    raise TypeError(f"not an expression node: {e!r}")


def _bool_operand(op: str, o: n.Expr) -> str:
    # `and` inside `or` is parenthesised although precedence does not need it: nobody should
    # have to remember which of the two binds tighter to read a rule.
    if op == "or" and isinstance(o, n.BoolOp) and o.op == "and":
        return f"({to_source(o)})"
    return to_source(o, _prec(n.BoolOp(op, ())) + 1)


def action_source(a: n.Action) -> str:
    if isinstance(a, n.Scale):
        return f"{a.target} *= {to_source(a.factor)}"
    return a.name


def _broken(head: str, e: n.Expr) -> str:
    """``head`` and the expression on one line, or broken before each top-level and/or."""
    line = head + to_source(e)
    if len(line) <= LINE_WIDTH or not isinstance(e, n.BoolOp):
        return line
    first, *rest = (_bool_operand(e.op, o) for o in e.operands)
    return "\n".join([head + first, *(f"    {e.op} {r}" for r in rest)])


def item_source(item: n.Item) -> str:
    if isinstance(item, n.LetDef):
        return _broken(f"let {item.name} = ", item.expr)
    head = f"rule {item.rule_id}"
    if item.title is not None:
        head += " " + quote(item.title)
    if item.priority:
        head += f" priority {item.priority}"
    then = "  then " + ", ".join(action_source(a) for a in item.actions)
    return "\n".join([head, _broken("  when ", item.when), then])


def format_module(module: n.Module) -> str:
    """Canonical text of a module, comments included; idempotent."""
    pending = sorted(module.comments)
    out: list[str] = []
    prev: n.Item | None = None
    for item in module.items:
        leading = [(line, text) for line, text in pending if line <= item.span.end_line]
        pending = [(line, text) for line, text in pending if line > item.span.end_line]
        if prev is not None and not (
            isinstance(prev, n.LetDef) and isinstance(item, n.LetDef) and not leading
        ):
            out.append("")
        for k, (line, text) in enumerate(leading):
            # A blank line between two comment blocks (in the source) is kept.
            if k and line - leading[k - 1][0] > 1:
                out.append("")
            out.append(text.rstrip())
        if leading and item.span.line - leading[-1][0] > 1:
            out.append("")
        out.append(item_source(item))
        prev = item
    if pending:
        if out:
            out.append("")
        out.extend(t.rstrip() for _, t in pending)
    return "\n".join(out) + "\n" if out else ""
