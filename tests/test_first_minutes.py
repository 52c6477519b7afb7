"""The first ten minutes of a new user: the README's block and the commands `s3 demo` prints
at its end run as written, in a directory laid out like a fresh clone (`.venv`, `rulesets/`,
`data/`), against a fresh `s3 serve` on embedded defaults (its own redis-server, SQLite in var/).

The one liberty taken: port 8080 becomes a free port, since other tests or services on this
machine may hold 8080.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from s3.adapters.redis_server import free_port

ROOT = Path(__file__).resolve().parents[1]


def _readme_block() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## The first ten minutes", 1)[1]
    block = section.split("```sh\n", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line.strip()]


@pytest.fixture
def clone(tmp_path: Path) -> Path:
    """A directory laid out like the clone after `make setup`."""
    for name in ("rulesets", "data"):
        (tmp_path / name).symlink_to(ROOT / name)
    (tmp_path / ".venv").symlink_to(Path(sys.executable).parent.parent)
    return tmp_path


def _run_script(lines: list[str], cwd: Path, port: int) -> dict[str, str]:
    """Run ``lines`` as one bash script (8080 -> ``port``), stopping at the first failure;
    the output of each line, by line."""
    script = ["set -e"]
    for i, line in enumerate(lines):
        script += [f"printf '\\n@@@{i}\\n'", line.replace("8080", str(port))]
    script.append("printf '\\n@@@end\\n'")
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(cwd), "LANG": "C.UTF-8"}
    proc = subprocess.run(
        ["bash", "-c", "\n".join(script)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    parts = re.split(r"\n@@@(\w+)\n", proc.stdout)
    out = dict(zip(parts[1::2], parts[2::2], strict=True))
    assert proc.returncode == 0 and "end" in out, (
        f"exit {proc.returncode} after {len(out)} of {len(lines)} commands\n"
        f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    )
    return {lines[int(k)]: v for k, v in out.items() if k != "end"}


def _json_line(text: str) -> dict[str, object]:
    (line,) = [x for x in text.splitlines() if x.startswith("{")]
    value = json.loads(line)
    assert isinstance(value, dict)
    return value


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def test_readme_block_and_the_commands_the_demo_prints(clone: Path) -> None:
    lines = _readme_block()
    assert any(" serve " in line for line in lines) and any("/decide" in line for line in lines)
    port = free_port()
    out = _run_script(lines, clone, port)
    by_start = {k.split(" #")[0].split(" -H")[0].strip(): v for k, v in out.items()}
    assert out[".venv/bin/s3 --version"].strip().startswith("s3 ")
    assert "31 rules" in out[".venv/bin/s3 rules lint rulesets/default"]
    assert " 0 failed" in out[".venv/bin/s3 rules test rulesets/default"]
    health = _json_line(by_start["until curl -sf localhost:8080/health; do sleep 0.5; done"])
    assert health["status"] == "OK" and health["store"] == "sqlite"
    decide = _json_line(by_start["curl -s -X POST localhost:8080/decide"])
    # a real decision on the fresh snapshot: not refused for stale or missing features
    assert decide["decision"] in ("open", "skip") and decide["reason_detail"] != (
        "GATE.STALE_FEATURES"
    ), decide
    assert decide["dry_run"] is True
    assert _port_free(port), "the README's `kill %1` stopped the server"

    # the demo (run by the block above) ends with commands to try next: each works as printed
    demo = out[".venv/bin/s3 demo --events 40"]
    assert "where to look" in demo
    printed = [x.strip() for x in demo.split("where to look", 1)[1].splitlines()[1:] if x.strip()]
    serve = next(x for x in printed if " serve " in x)
    assert serve == "S3_AUTH_DISABLED=1 .venv/bin/s3 serve --port 8080", serve
    script = []
    for line in printed:
        if line.startswith("#"):
            continue
        if line == serve:
            script += [
                line + " &",
                "until curl -sf localhost:8080/health >/dev/null; do sleep 0.5; done",
            ]
        else:
            script.append(line)
    script.append("kill %1; wait")
    port = free_port()
    out = _run_script(script, clone, port)
    runs = {k.split(" ")[0] + ("/decide" if "/decide" in k else ""): v for k, v in out.items()}
    assert len(runs["sqlite3"].splitlines()) == 5  # five stored signals
    assert _json_line(runs["curl/decide"])["decision"] in ("open", "skip")
    assert 's3_decisions_total{decision="' in "".join(v for k, v in out.items() if "metrics" in k)
    assert "decision:" in runs[".venv/bin/s3"]  # rules explain


def _s3(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> Any:
    return subprocess.run(
        [sys.executable, "-m", "s3.cli", *args],
        env={**os.environ, **(env or {})},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_version() -> None:
    from s3 import __version__

    proc = _s3("--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"s3 {__version__}"
    assert re.fullmatch(r"\d+\.\d+\.\d+.*", __version__)


def test_serve_on_a_port_in_use_fails_before_serving(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = _s3("serve", "--port", str(port), env={"S3_AUTH_DISABLED": "1"}, cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "serving on" not in proc.stdout
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in proc.stderr
    assert not (tmp_path / "var").exists()  # nothing was started: no store, no redis-server


def test_without_the_arango_extra_the_error_says_what_to_install() -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; sys.modules['arango'] = None\n"  # as if python-arango were absent
            "from s3.cli import main; sys.exit(main(['bundle', 'list']))",
        ],
        env={**os.environ, "S3_DB_ARANGO_URI": "http://127.0.0.1:1/s3"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    assert "S3_DB_ARANGO_URI is set but the ArangoDB client is not installed" in proc.stderr
    assert "pip install 's3-strategy-engine[arango]'" in proc.stderr


def test_operations_doc_is_for_operators_and_the_diary_moved() -> None:
    ops = (ROOT / "docs" / "operations.md").read_text()
    perf = (ROOT / "docs" / "performance.md").read_text()
    assert "docs/performance.md" in ops and "| run | hello-world max |" not in ops
    assert "| run | hello-world max |" in perf
    api = (ROOT / "docs" / "api.md").read_text()
    for field in ("sideHint", "dry_run", "reason_detail", "ErrorBody", "store_status"):
        assert field in api
    assert "spec §3" not in ops
