"""Idempotency of decisions (spec §8, Part B6): `idem:order:{intent_id}` taken with SET NX PX,
then holding the first decision's result, replayed verbatim to every retry until the TTL ends.

The key's value is ``P<token>`` while its owner decides and ``R<token><result bytes>`` once the
result is stored; the token (32 hex characters, one per `begin`) lets compare-and-set scripts make
sure that a slow first caller whose marker expired can neither overwrite nor delete the marker of
a later owner. A value in neither form (another writer) reads as held by someone else.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import Any, Literal

import msgspec
import redis
from redis.cluster import ClusterNode, RedisCluster
from redis.exceptions import NoScriptError

from s3.adapters.redis_client import Client, parse_addresses
from s3.adapters.redis_keys import Keys

TOKEN_LEN = 32

# KEYS: idem key. ARGV: "P" .. token, ttl_ms. One atomic step: take the key, or read what holds it.
_BEGIN = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return {'first'} end
return {'held', redis.call('GET', KEYS[1]), redis.call('PTTL', KEYS[1])}
"""

# KEYS: idem key. ARGV: "P" .. token, "R" .. token .. result, ttl_ms, "R" .. token.
_COMPLETE = """
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 'stored'
end
if cur and string.sub(cur, 1, #ARGV[4]) == ARGV[4] then return 'already_stored' end
return 'not_owner'
"""

# KEYS: idem key. ARGV: "P" .. token.
_ABANDON = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"""


class Begin(msgspec.Struct, frozen=True):
    """What `begin` found.

    ``first``: the caller owns the key (``token``) and must `complete` or `abandon` it.
    ``replay``: a decision for this intent is stored; ``result`` is its bytes, verbatim.
    ``in_progress``: another caller holds the key without a result yet (``ttl_ms`` left).
    """

    status: Literal["first", "replay", "in_progress"]
    intent_id: str
    token: str | None = None
    result: bytes | None = None
    ttl_ms: int | None = None


def _new_token(intent_id: str, ttl_ms: int) -> str:
    if not intent_id:
        raise ValueError("intent_id must not be empty")
    if ttl_ms <= 0:
        raise ValueError(f"ttl_ms must be positive, got {ttl_ms}")
    return secrets.token_hex(TOKEN_LEN // 2)


def _as_bytes(v: Any) -> bytes:
    return v if isinstance(v, bytes) else str(v).encode()


class Idempotency:
    """`idem:order:{intent_id}` markers and results on a standalone Redis or a cluster.

    Tokens of the markers this instance took are remembered per intent id, so `complete` and
    `abandon` need only the id (a caller may pass the `Begin` token instead); both forget it. A
    client with
    ``decode_responses=True`` stores UTF-8 results only; `from_addresses` builds a bytes client.
    """

    def __init__(self, client: Client, keys: Keys) -> None:
        self._client = client
        self.keys = keys
        self._decodes = bool(client.get_encoder().decode_responses)
        self._tokens: dict[str, str] = {}
        self._begin = client.register_script(_BEGIN)
        self._complete = client.register_script(_COMPLETE)
        self._abandon = client.register_script(_ABANDON)

    @classmethod
    def from_addresses(
        cls, addresses: str | Sequence[str], *, prefix: str = "", timeout_s: float = 2.0
    ) -> Idempotency:
        """One ``host:port`` (standalone) or several (cluster), as `S3_REDIS_ADDRESSES`."""
        nodes = parse_addresses(addresses)
        common: dict[str, Any] = dict(socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
        client: Client
        if len(nodes) == 1:
            client = redis.Redis(host=nodes[0][0], port=nodes[0][1], **common)
        else:
            client = RedisCluster(startup_nodes=[ClusterNode(h, p) for h, p in nodes], **common)
        return cls(client, Keys.for_mode(cluster=len(nodes) > 1, prefix=prefix))

    @classmethod
    def from_url(cls, url: str, *, prefix: str = "") -> Idempotency:
        """A standalone server from a ``redis://`` URL (bytes client)."""
        return cls(redis.Redis.from_url(url), Keys(prefix=prefix))

    def close(self) -> None:
        self._client.close()

    def begin(self, intent_id: str, ttl_ms: int) -> Begin:
        """Take `idem:order:{intent_id}` (SET NX PX) or report who has it.

        Raises:
            ValueError: empty intent id or a TTL that is not positive.
        """
        token = _new_token(intent_id, ttl_ms)
        out = self._begin(keys=[self.keys.idem(intent_id)], args=["P" + token, int(ttl_ms)])
        return self._began(intent_id, token, ttl_ms, out)

    def queue_begin(self, pipe: Any, intent_id: str, ttl_ms: int) -> str:
        """Queue `begin` on a standalone pipeline (one round trip with other reads); returns the
        token to hand to `begin_reply` with the reply. Not for cluster pipelines (redis-py
        refuses EVALSHA there): use `begin`."""
        token = _new_token(intent_id, ttl_ms)
        pipe.evalsha(self._begin.sha, 1, self.keys.idem(intent_id), "P" + token, int(ttl_ms))
        return token

    def begin_reply(self, intent_id: str, token: str, ttl_ms: int, reply: Any) -> Begin:
        """`begin`'s answer from the reply of `queue_begin` (a pipeline run with
        ``raise_on_error=False``). A server that lost the script (restarted) ran nothing: the
        claim is taken again directly, loading the script."""
        if isinstance(reply, NoScriptError):
            return self.begin(intent_id, ttl_ms)
        if isinstance(reply, Exception):
            raise reply
        return self._began(intent_id, token, ttl_ms, reply)

    def _began(self, intent_id: str, token: str, ttl_ms: int, out: Any) -> Begin:
        # our own marker: the client's retry re-sent a claim whose first answer was lost
        if _as_bytes(out[0]) == b"first" or _as_bytes(out[1]) == b"P" + token.encode():
            self._tokens[intent_id] = token
            return Begin("first", intent_id, token=token, ttl_ms=int(ttl_ms))
        value, left = _as_bytes(out[1]), int(out[2])
        if value[:1] == b"R" and len(value) > TOKEN_LEN:
            return Begin("replay", intent_id, result=value[1 + TOKEN_LEN :], ttl_ms=left)
        return Begin("in_progress", intent_id, ttl_ms=left)

    def complete(
        self, intent_id: str, result: bytes, ttl_ms: int, *, token: str | None = None
    ) -> Literal["stored", "already_stored", "not_owner"]:
        """Store the first decision's result, only while our marker holds the key.

        Returns ``stored``, ``already_stored`` (we stored it before: kept as it was) or
        ``not_owner`` (our marker expired or another caller owns the key: nothing written).

        Raises:
            ValueError: no token for this intent, or a non-UTF-8 result on a decoding client.
        """
        token = self._complete_token(intent_id, result, token)
        out = self._complete(
            keys=[self.keys.idem(intent_id)], args=self._complete_args(token, result, ttl_ms)
        )
        return self._completed(intent_id, out)

    def queue_complete(
        self, pipe: Any, intent_id: str, result: bytes, ttl_ms: int, *, token: str | None = None
    ) -> str:
        """Queue `complete` on a standalone pipeline (one round trip with the signal's XADD);
        returns the token to hand to `complete_reply`."""
        token = self._complete_token(intent_id, result, token)
        args = self._complete_args(token, result, ttl_ms)
        pipe.evalsha(self._complete.sha, 1, self.keys.idem(intent_id), *args)
        return token

    def complete_reply(
        self, intent_id: str, result: bytes, ttl_ms: int, token: str, reply: Any
    ) -> Literal["stored", "already_stored", "not_owner"]:
        """`complete`'s answer from the reply of `queue_complete` (``raise_on_error=False``); a
        server that lost the script ran nothing, so the result is stored again directly."""
        if isinstance(reply, NoScriptError):
            return self.complete(intent_id, result, ttl_ms, token=token)
        if isinstance(reply, Exception):
            raise reply
        return self._completed(intent_id, reply)

    def _complete_token(self, intent_id: str, result: bytes, token: str | None) -> str:
        token = token or self._tokens.get(intent_id)
        if token is None:
            raise ValueError(f"complete({intent_id!r}): this store did not begin that intent")
        if self._decodes:
            try:
                result.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ValueError(
                    "this client decodes responses, so results must be UTF-8 to come back "
                    "verbatim; use Idempotency.from_addresses for a bytes client"
                ) from exc
        return token

    @staticmethod
    def _complete_args(token: str, result: bytes, ttl_ms: int) -> list[Any]:
        return ["P" + token, b"R" + token.encode() + result, int(ttl_ms), "R" + token]

    def _completed(
        self, intent_id: str, reply: Any
    ) -> Literal["stored", "already_stored", "not_owner"]:
        out = _as_bytes(reply).decode()
        self._tokens.pop(intent_id, None)
        assert out in ("stored", "already_stored", "not_owner")
        return out  # type: ignore[return-value]

    def abandon(self, intent_id: str, *, token: str | None = None) -> bool:
        """Delete our in-progress marker after a failure, so that a retry can decide afresh.

        Returns whether it was deleted (``False``: not ours any more, or a result is stored).
        """
        token = token or self._tokens.pop(intent_id, None)
        if token is None:
            return False
        self._tokens.pop(intent_id, None)
        return bool(self._abandon(keys=[self.keys.idem(intent_id)], args=["P" + token]))
