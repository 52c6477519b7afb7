"""The published escape families of Python sandboxes, each written into every place a bundle
carries text: DSL text (conditions, factors, lets, whole files), names (rule ids, lets, features,
params), params and file names. Every one is refused at build time with a DSL diagnostic, none
causes an audit event from generated code, and none runs.

Param *values* are data: a string value is a valid param whatever it says, so there the check
is that it reaches the generated code only as the literal it is, and compares equal to itself.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from dsl import build_bundle
from tests.conftest import SNAPSHOT, BundleFactory
from tests.security.audit import BUILD_EVENTS, recording

SYSTEM = (
    "[c for c in ().__class__.__base__.__subclasses__() if c.__name__ == '_wrap_close'][0]"
    ".__init__.__globals__['system']('touch pwned')"
)
FAMILIES = {
    # str.format / format_map: Jinja2 CVE-2016-10745, CVE-2019-10906, CVE-2024-56326
    "format": "'{0.__class__.__init__.__globals__}'.format(mid)",
    "format_map": "'{x.__class__.__base__}'.format_map(x=mid)",
    "format_stored": "(fmt := '{0.__globals__[os]}'.format) and fmt(mid)",
    "fstring": "f'{mid.__class__.__mro__}'",
    "percent": "'%s' % mid.__class__",
    # attribute chains to modules: simpleeval CVE-2026-32640, Jinja2 CVE-2025-27516 (|attr)
    "subclasses": SYSTEM,
    "attr_builtin": "getattr(mid, '__class__')",
    "globals": "abs.__self__.__dict__['__import__']('os').system('touch pwned')",
    "import": "__import__('os').system('touch pwned')",
    # generator and frame walks: simpleeval #138
    "gi_frame": "(x for x in []).gi_frame.f_back.f_globals['__builtins__']",
    "gi_code": "(x for x in []).gi_code.co_consts",
    # exception classes: asteval
    "exception_subclasses": "Exception.__subclasses__()[0].__init__.__globals__",
    "traceback": "[e.__traceback__.tb_frame.f_back for e in [ZeroDivisionError()]]",
    # __reduce__: asteval #86
    "reduce": "mid.__reduce_ex__(2)[0].__globals__",
    "reduce_plain": "symbol.__reduce__()",
    # the rest of the language Python has and this one has not
    "lambda": "(lambda: __import__('os'))()",
    "comprehension": "[x for x in ().__class__.__bases__]",
    "walrus": "(x := mid) and x.__class__",
    "subscript": "symbol[0:1]",
    "starred": "max(*symbol)",
    "keyword": "max(mid, key=abs)",
    "dunder_name": "__builtins__",
    "underscore_helper": "_abs(mid) > 0",
    "exec": "exec('import os')",
    "eval": "eval('1')",
    "semicolon": "mid > 0; import os",
    "newline": "mid > 0\nimport os\n",
}


def _rule_positions(p: str) -> dict[str, str]:
    return {
        "condition": f"rule R-1 when {p} then skip_entry\n",
        "comparison": f"rule R-1 when {p} > 1 then skip_entry\n",
        "factor": f"rule R-1 when mid > 0 then size_mult *= {p}\n",
        "let": f"let a = {p}\nrule R-1 when a then skip_entry\n",
        "whole_file": p + "\n",
        "rule_id": f"rule {p} when mid > 0 then skip_entry\n",
        "let_name": f"let {p} = mid > 0\nrule R-1 when mid > 0 then skip_entry\n",
        "action": f"rule R-1 when mid > 0 then {p}\n",
    }


CASES = [
    (f"{family}-{where}", text)
    for family, payload in FAMILIES.items()
    for where, text in _rule_positions(payload).items()
]


def _refused(root: Path, tmp_path: Path) -> list[str]:
    with recording() as events:
        result = build_bundle(root)
    assert not (tmp_path / "pwned").exists()
    assert [e for e in events if e.from_generated] == []
    assert {e.name for e in events} <= BUILD_EVENTS
    assert result.ruleset is None, "built"
    codes = [d.code for d in result.diagnostics if d.is_error]
    assert codes, "refused without an error"
    return codes


@pytest.mark.parametrize(("case", "text"), CASES, ids=[c for c, _ in CASES])
def test_as_dsl_text(
    make_bundle: BundleFactory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    case: str,
    text: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    codes = _refused(make_bundle(text), tmp_path)
    assert all(c.startswith(("E1", "E2")) for c in codes), codes


def _toml_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("kind", ["feature", "param"])
def test_as_a_name(
    make_bundle: BundleFactory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    family: str,
    kind: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    key = _toml_string(FAMILIES[family])
    rule = "rule R-1 when mid > 0 then skip_entry\n"
    if kind == "feature":
        from tests.conftest import BASE_FEATURES

        root = make_bundle(rule, features=BASE_FEATURES + f'{key} = "number"\n')
    else:
        root = make_bundle(rule, params=f"{key} = 1.5")
    assert _refused(root, tmp_path) == ["E303"]


@pytest.mark.parametrize("family", list(FAMILIES))
def test_as_a_file_name(
    make_bundle: BundleFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, family: str
) -> None:
    monkeypatch.chdir(tmp_path)
    root = make_bundle("rule R-1 when mid > 0 then skip_entry\n")
    name = FAMILIES[family].replace("/", "_")[:200] + ".rule"
    (root / name).write_text("rule R-2 when mid > 0 then skip_entry\n")
    assert _refused(root, tmp_path) == ["E312"]


@pytest.mark.parametrize("family", list(FAMILIES))
def test_as_a_param_value_it_is_an_inert_literal(
    make_bundle: BundleFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, family: str
) -> None:
    monkeypatch.chdir(tmp_path)
    payload = FAMILIES[family]
    root = make_bundle(
        "rule R-1 when symbol == pv then skip_entry\nrule R-2 when symbol in pl then skip_entry\n",
        params=f'pv = {_toml_string(payload)}\npl = [{_toml_string(payload)}, "x"]',
    )
    with recording() as events:
        result = build_bundle(root)
        assert result.ruleset is not None
        hit = result.ruleset.evaluate({**SNAPSHOT, "symbol": payload})
        miss = result.ruleset.evaluate(SNAPSHOT)
    assert [e for e in events if e.from_generated] == []
    assert not (tmp_path / "pwned").exists()
    assert (hit.vetoes, miss.vetoes) == (("R-1", "R-2"), ())
    assert repr(payload) in result.ruleset.source


@pytest.mark.parametrize(
    "params",
    [
        "pp = { __class__ = 1 }",
        "pp = [[1]]",
        'pp = { system = "touch pwned" }',
        "pp = 1979-05-27T07:32:00Z",
    ],
)
def test_params_are_scalars_or_lists_of_scalars(
    make_bundle: BundleFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, params: str
) -> None:
    monkeypatch.chdir(tmp_path)
    root = make_bundle("rule R-1 when mid > 0 then skip_entry\n", params=params)
    assert set(_refused(root, tmp_path)) == {"E303"}
