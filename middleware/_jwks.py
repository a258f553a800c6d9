"""Signing keys from a JWKS document (RFC 7517), fetched with trio: :class:`JWKSKeys`.

Theory of operation: the keys are fetched on first use and kept for ``cache_ttl`` seconds of
trio time. A token whose ``kid`` is not in the cached set makes us fetch again (the issuer may
have rotated its keys), but no more than once per ``min_refetch_interval``, whatever the
reason, so a stream of tokens with junk key ids cannot make us hammer the JWKS server. Callers
that need keys while a fetch is running wait for it and share its result (a :class:`trio.Lock`
and a generation counter): there is never more than one fetch at a time.

A failed fetch is logged with the URL and counted; we go on with the keys we had (stale keys
beat refusing every client while the issuer is down) and refuse with ``"cannot fetch signing
keys"`` only when we never had any.

Resource handling: no task outlives a call; the default fetch opens an ``httpx.AsyncClient``
per fetch (fetches are rare) and closes it before returning. Cancellation: a fetch cancelled
half-way leaves the cache as it was; the next caller fetches.

Times come from :func:`trio.current_time`, so an instance belongs to one ``trio.run`` (and
tests can drive it with the autojump clock).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import math
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import attrs
import trio

from ._credentials import AuthError

if TYPE_CHECKING:
    from jwt import PyJWK

__all__ = ["JWKSKeys", "JWKSStatistics"]

logger = logging.getLogger("strands_trio.middleware.auth")

#: Seconds the default fetch may take, connecting included.
FETCH_TIMEOUT = 10.0

_INSTALL_HINT = "pip install 'strands-trio[auth]'"


async def _http_get(url: str) -> bytes:
    """The default fetch: an HTTP GET with httpx (which runs on trio through its trio backend).

    Raises:
        httpx.HTTPError: the request failed or the status was not 2xx.
    """
    import httpx

    async with httpx.AsyncClient(timeout=FETCH_TIMEOUT) as client:
        response = await client.get(url, headers={"Accept": "application/json"})
        response.raise_for_status()
        return response.content


@attrs.frozen(kw_only=True)
class JWKSStatistics:
    """What :meth:`JWKSKeys.statistics` reports.

    Attributes:
        fetches: Fetches that ended, successful or not (a cancelled one is not counted).
        failed_fetches: Fetches that failed (network, status or a document without usable keys).
        keys: Usable signing keys in the cache (possibly stale).
    """

    fetches: int
    failed_fetches: int
    keys: int


class _Entry:
    """One usable signing key of the document, with its PyJWK for each algorithm asked for."""

    def __init__(self, data: dict[str, Any], key: PyJWK) -> None:
        self.kid: str | None = data.get("kid")
        self.data = data
        # A key that names its algorithm serves only that one; without "alg" an RSA key serves
        # RS* and PS*, so other algorithms are parsed (once) when first asked for.
        self.declared = "alg" in data
        self.by_alg: dict[str, PyJWK | None] = {key.algorithm_name: key}

    def key_for(self, alg: str) -> PyJWK | None:
        if alg not in self.by_alg:
            import jwt

            key = None
            if not self.declared:
                with contextlib.suppress(jwt.PyJWTError, NotImplementedError):  # not for alg
                    key = jwt.PyJWK(self.data, algorithm=alg)
            self.by_alg[alg] = key
        return self.by_alg[alg]


def _parse(document: bytes | dict[str, Any]) -> list[_Entry]:
    import jwt

    if not isinstance(document, dict):
        document = json.loads(document)
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError("not a JWKS document: expected an object with a 'keys' list")
    entries = []
    for data in document["keys"]:
        if not isinstance(data, dict) or data.get("use", "sig") != "sig":
            continue  # not a JWK, or an encryption key
        try:
            entries.append(_Entry(data, jwt.PyJWK(data)))
        except (jwt.PyJWTError, NotImplementedError):  # NotImplementedError: alg "none"
            continue  # a key PyJWT cannot use: skipped, as PyJWKSet does
    if not entries:
        raise ValueError("the JWKS document has no usable signing keys")
    return entries


def _check_seconds(name: str, value: float, *, zero_ok: bool) -> None:
    if not (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and (value >= 0 if zero_ok else value > 0)
    ):
        bound = ">= 0" if zero_ok else "> 0"
        raise ValueError(f"{name} must be a number of seconds {bound}, got {value!r}")


class JWKSKeys:
    """Signing keys from a JWKS URL, cached, refetched when they expire or a ``kid`` is new.

    Give it to :class:`JWTVerifier` as its ``key``.

    Args:
        url: Where the JWKS document is, for example
            ``https://issuer.example/.well-known/jwks.json``.
        cache_ttl: Seconds a fetched document is used before fetching again.
        min_refetch_interval: The least number of seconds between two fetches, whatever the
            reason (expiry, unknown ``kid``, an earlier failure).
        fetch: ``async (url) -> bytes | dict``, for a custom HTTP client or for tests. The
            default is an httpx GET with a timeout of ``FETCH_TIMEOUT`` (10) seconds.

    Raises:
        ValueError: an argument is out of range.
        ImportError: *fetch* is not given and httpx is not installed.
    """

    def __init__(
        self,
        url: str,
        *,
        cache_ttl: float = 300,
        min_refetch_interval: float = 30,
        fetch: Callable[[str], Awaitable[bytes | dict[str, Any]]] | None = None,
    ) -> None:
        if not isinstance(url, str) or not url:
            raise ValueError(f"url must be a non-empty string, got {url!r}")
        _check_seconds("cache_ttl", cache_ttl, zero_ok=False)
        _check_seconds("min_refetch_interval", min_refetch_interval, zero_ok=True)
        if fetch is None and importlib.util.find_spec("httpx") is None:
            raise ImportError(
                f"JWKSKeys fetches with httpx, which is not installed: {_INSTALL_HINT}"
            )
        if importlib.util.find_spec("jwt") is None:
            raise ImportError(f"JWKSKeys needs PyJWT, which is not installed: {_INSTALL_HINT}")
        self.url = url
        self.cache_ttl = float(cache_ttl)
        self.min_refetch_interval = float(min_refetch_interval)
        self._fetch = fetch or _http_get
        self._entries: list[_Entry] | None = None
        self._fetched_at = -math.inf  # trio time of the last successful fetch
        self._attempted_at = -math.inf  # trio time of the last fetch, successful or not
        self._generation = 0  # fetches ended: lets waiters see that one just happened
        self._failures = 0
        self._lock = trio.Lock()

    def __repr__(self) -> str:
        return f"JWKSKeys({self.url!r}, cache_ttl={self.cache_ttl}, ...)"

    def statistics(self) -> JWKSStatistics:
        """Fetches made and failed, and keys cached."""
        return JWKSStatistics(
            fetches=self._generation,
            failed_fetches=self._failures,
            keys=len(self._entries or ()),
        )

    async def get_key(self, kid: str | None, alg: str) -> PyJWK:
        """The key that verifies a token with header ``kid`` and ``alg``.

        A token without a ``kid`` is accepted when exactly one cached key serves *alg*.

        Raises:
            AuthError: ``"cannot fetch signing keys"`` (none fetched yet and fetching failed),
                ``"unknown key id"`` (not even after a refetch), ``"algorithm not allowed"``
                (the key with this ``kid`` is for another algorithm), ``"missing key id"``
                (no ``kid`` and several keys would do).
        """
        if trio.current_time() - self._fetched_at >= self.cache_ttl:
            await self._refresh()
        key = self._lookup(kid, alg)
        if key is None and self._entries is not None:
            await self._refresh()
            key = self._lookup(kid, alg)
        if self._entries is None:
            raise AuthError("cannot fetch signing keys")
        if key is None:
            raise AuthError("unknown key id")
        return key

    def _lookup(self, kid: str | None, alg: str) -> PyJWK | None:
        entries = [e for e in self._entries or () if kid is None or e.kid == kid]
        if not entries:
            return None  # maybe a new key: worth a refetch
        keys = [key for entry in entries if (key := entry.key_for(alg)) is not None]
        if not keys:
            raise AuthError("algorithm not allowed")
        if kid is None and len(keys) > 1:
            raise AuthError("missing key id")
        return keys[0]

    async def _refresh(self) -> None:
        generation = self._generation
        async with self._lock:
            started = trio.current_time()
            if generation != self._generation:
                return  # another task fetched while we waited for the lock: share its result
            if started - self._attempted_at < self.min_refetch_interval:
                return  # fetched too recently: go on with the keys we have, if any
            try:
                entries = _parse(await self._fetch(self.url))
            except Exception as exc:  # whatever the fetch raises: the caller decides
                self._failures += 1
                logger.warning("cannot fetch signing keys from %s: %s", self.url, exc)
            else:
                self._entries = entries
                self._fetched_at = trio.current_time()
            # Only a fetch that ended counts: if it was cancelled, the next caller fetches.
            self._attempted_at = started
            self._generation += 1
