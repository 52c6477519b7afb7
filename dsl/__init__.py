"""The S3 rule DSL as a library: parse, check, compile and run whitelist rules with a trace.

Text flows one way: `parse` -> `check` -> `compile_ruleset` -> `CompiledRuleset.evaluate`.
Nothing in `dsl` imports `s3`.
"""

from dsl.bundle import (
    BuildResult,
    LoadedBundle,
    Manifest,
    build_bundle,
    load_bundle,
    parse_manifest,
)
from dsl.checker import CheckedBundle, check
from dsl.compiler import CompiledRuleset, compile_ruleset
from dsl.errors import Diagnostic, DslError, DslSyntaxError, Severity
from dsl.interpreter import interpret
from dsl.parser import parse, parse_text
from dsl.printer import format_module
from dsl.runtime import Fault, Outcome, TraceStep
from dsl.schema import Clamp, FeatureSpec, Schema
from dsl.source import Source, Span

__all__ = [
    "BuildResult",
    "CheckedBundle",
    "Clamp",
    "CompiledRuleset",
    "Diagnostic",
    "DslError",
    "DslSyntaxError",
    "Fault",
    "FeatureSpec",
    "LoadedBundle",
    "Manifest",
    "Outcome",
    "Schema",
    "Severity",
    "Source",
    "Span",
    "TraceStep",
    "build_bundle",
    "check",
    "compile_ruleset",
    "format_module",
    "interpret",
    "load_bundle",
    "parse",
    "parse_manifest",
    "parse_text",
]
