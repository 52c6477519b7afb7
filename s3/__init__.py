"""S3 strategy engine: the decision service around the `dsl` rule compiler."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("s3-strategy-engine")
except PackageNotFoundError:  # run from a checkout that was never installed
    __version__ = "0+unknown"
