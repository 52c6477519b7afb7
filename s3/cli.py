"""The `s3` command: `s3 rules lint|fmt|explain|test` for rule authors; `s3 serve`, `s3 worker`,
`s3 demo` and `s3 bundle publish|list|show|rollback` for operators; `s3 model explain|train`.

Exit codes: 0 success, 1 the checked thing has errors (or a case fails), 2 usage errors.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from s3 import __version__, model_cli, ops_cli, replay_cli, rules_cli


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="s3", description="S3 strategy engine")
    parser.add_argument("--version", action="version", version=f"s3 {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    rules = sub.add_parser("rules", help="author, lint, format, explain and test rule bundles")
    rsub = rules.add_subparsers(dest="rules_command", required=True, parser_class=_Parser)

    lint = rsub.add_parser("lint", help="check bundles or rule files; all diagnostics at once")
    lint.add_argument("paths", nargs="+", metavar="PATH", help="bundle directories or .rule files")
    lint.add_argument("--format", choices=("human", "json"), default="human")
    lint.add_argument(
        "--strict",
        action="store_true",
        help="treat warnings as errors, and warn about numbers declared without a unit (W302)",
    )
    lint.set_defaults(func=rules_cli.lint)

    fmt = rsub.add_parser("fmt", help="rewrite .rule files in canonical form")
    fmt.add_argument("paths", nargs="+", metavar="PATH", help=".rule files or directories")
    fmt.add_argument(
        "--check", action="store_true", help="change nothing; exit 1 if a file would change"
    )
    fmt.set_defaults(func=rules_cli.fmt)

    explain = rsub.add_parser(
        "explain", help="evaluate a bundle on one snapshot and show the trace"
    )
    explain.add_argument("bundle", metavar="BUNDLE")
    explain.add_argument(
        "--features",
        required=True,
        metavar="FILE_OR_JSON",
        help="a JSON object, or a .json file holding one",
    )
    explain.add_argument("--format", choices=("human", "json"), default="human")
    explain.add_argument(
        "--rule", action="append", metavar="RULE_ID", help="show only these rules in the trace"
    )
    explain.add_argument(
        "--strict", action="store_true", help="an unknown feature key is an error (exit 1)"
    )
    explain.set_defaults(func=rules_cli.explain)

    test = rsub.add_parser(
        "test", help="run a bundle's case files and tapes, and report rule coverage"
    )
    test.add_argument("bundle", metavar="BUNDLE")
    test.add_argument(
        "--cases",
        action="append",
        metavar="PATH",
        help="case files (.toml), tapes (.jsonl, .jsonl.gz: replayed through the whole "
        "pipeline) or directories of either (default: BUNDLE/cases)",
    )
    test.add_argument(
        "--snapshot",
        metavar="FILE",
        help="write every case outcome and every tape event's full decision record as a "
        "stable JSON snapshot (syrupy's format; - for stdout)",
    )
    test.add_argument("--format", choices=("human", "json"), default="human")
    test.add_argument(
        "--run",
        metavar="PATTERN",
        help="only the cases whose 'file: name' matches (a glob with * ? [], else a "
        "case-insensitive substring)",
    )
    test.add_argument(
        "--update",
        action="store_true",
        help="rewrite the failing expectations of the cases in place (comments and order kept)",
    )
    test.add_argument("--junit", metavar="FILE", help="also write a JUnit XML report")
    test.add_argument("--strict", action="store_true", help="unknown feature keys fail their case")
    test.set_defaults(func=rules_cli.test)
    ops_cli.add_commands(sub, _Parser)
    replay_cli.add_commands(sub, _Parser)
    model_cli.add_commands(sub, _Parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except (rules_cli.UsageError, ops_cli.UsageError) as exc:
        print(f"s3: error: {exc}", file=sys.stderr)
        return 2
    except ops_cli.Unavailable as exc:
        print(f"s3: error: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # `s3 rules lint ... | head`
        return 0
    return code


if __name__ == "__main__":
    sys.exit(main())
