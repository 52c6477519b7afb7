"""Imported once by the bundle-build fork server (`s3.config.offpath`): everything a build
needs, the DSL's parser built, so that each build's child starts ready."""

from dsl import parser
from s3.config import reload  # noqa: F401

parser._lark()
