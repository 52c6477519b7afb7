"""Service errors: each has a `code` and a `detail`; the HTTP edge maps them to 400/422/503."""

from __future__ import annotations


class S3Error(Exception):
    status = 500

    def __init__(self, code: str, detail: str, **extra: object):
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail
        self.extra = extra


class InputError(S3Error):
    """Malformed input or missing required features (HTTP 400)."""

    status = 400


class Rejected(S3Error):
    """Well formed, but cannot be decided under the rules, e.g. an unconfigured symbol (422)."""

    status = 422


class DependencyUnavailable(S3Error):
    """Redis or the store cannot be reached (503)."""

    status = 503
