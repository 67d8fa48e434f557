"""Signed customer tokens: what lets a shop's web page call offerstream for one customer only.

The shop's backend, which knows who is logged in, mints a short-lived token with a key it shares
with offerstream (``OFFERSTREAM_TOKEN_KEY``); the page sends it as ``X-Offerstream-Token``. The
token is two base64url texts (no padding) joined by a dot::

    payload   = base64url(JSON {"sub": CUSTOMER_ID, "exp": EXPIRY_EPOCH_SECONDS})
    signature = base64url(HMAC-SHA-256(key, payload))        # over the payload's ASCII text
    token     = payload + "." + signature

A shop can mint one with any language's standard library (README, "On your web page"). The
signature is checked in constant time before anything in the payload is believed. Errors are
typed (:mod:`models.errors`): :class:`~models.errors.InvalidToken` (malformed),
:class:`~models.errors.TokenForged`, :class:`~models.errors.TokenExpired`, and
:class:`~models.errors.TokenScope` for a body naming another customer.

Examples
--------
>>> token = mint("c1", b"a key of sixteen+ bytes", ttl_s=60, now_s=1_700_000_000)
>>> verify(token, b"a key of sixteen+ bytes", now_s=1_700_000_030)
'c1'
>>> verify(token, b"a key of sixteen+ bytes", now_s=1_700_000_060)
Traceback (most recent call last):
...
models.errors.TokenExpired: the token expired 0 s ago; ask the shop's backend for a new one
>>> claim({"k": 3}, "c1")
{'k': 3, 'customer_id': 'c1'}
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import time
from typing import Any

from models.errors import InvalidToken, TokenExpired, TokenForged, TokenScope

__all__ = [
    "DEFAULT_TTL_S",
    "MAX_TTL_S",
    "MIN_KEY_BYTES",
    "mint",
    "verify",
    "token_key",
    "claim",
    "claim_all",
]

DEFAULT_TTL_S = 900
MAX_TTL_S = 86_400
MIN_KEY_BYTES = 16
MAX_TOKEN_CHARS = 2048
MAX_CUSTOMER_ID = 256
_B64URL = re.compile(r"[A-Za-z0-9_-]+")


def token_key(text: str) -> bytes:
    """The key bytes of ``OFFERSTREAM_TOKEN_KEY`` (UTF-8), refusing a key too short to be secret.

    Raises
    ------
    ValueError
        If the key has fewer than :data:`MIN_KEY_BYTES` bytes.
    """
    key = text.encode()
    if len(key) < MIN_KEY_BYTES:
        raise ValueError(f"the token key must have at least {MIN_KEY_BYTES} bytes (got {len(key)}); "
                         "generate one with: python -c 'import secrets; print(secrets.token_urlsafe(32))'")
    return key


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _sign(payload: str, key: bytes) -> str:
    return _b64(hmac.new(key, payload.encode("ascii"), hashlib.sha256).digest())


def mint(customer_id: str, key: bytes, ttl_s: int = DEFAULT_TTL_S, now_s: float | None = None) -> str:
    """A token for ``customer_id`` valid for ``ttl_s`` seconds from ``now_s`` (default: now).

    Raises
    ------
    ValueError
        An empty or over-long customer id, or a ``ttl_s`` outside 1..:data:`MAX_TTL_S`.
    """
    if not isinstance(customer_id, str) or not customer_id.strip() or len(customer_id) > MAX_CUSTOMER_ID:
        raise ValueError(f"customer id must be a non-empty string of at most {MAX_CUSTOMER_ID} characters")
    if isinstance(ttl_s, bool) or not isinstance(ttl_s, int) or not 1 <= ttl_s <= MAX_TTL_S:
        raise ValueError(f"ttl must be a whole number of seconds from 1 to {MAX_TTL_S}")
    expiry = int(time.time() if now_s is None else now_s) + ttl_s
    payload = _b64(json.dumps({"sub": customer_id, "exp": expiry}, separators=(",", ":")).encode())
    return f"{payload}.{_sign(payload, key)}"


def verify(token: str, key: bytes, now_s: float | None = None) -> str:
    """The customer id of a valid token.

    Raises
    ------
    InvalidToken
        Not two base64url parts, or a correctly signed payload that is not ``{sub, exp}``.
    TokenForged
        The signature does not match ``key`` (checked in constant time, before the payload is read).
    TokenExpired
        The expiry has passed.
    """
    if not isinstance(token, str) or len(token) > MAX_TOKEN_CHARS:
        raise InvalidToken(f"a token is a string of at most {MAX_TOKEN_CHARS} characters")
    payload, dot, signature = token.strip().partition(".")
    if not dot or not _B64URL.fullmatch(payload) or not _B64URL.fullmatch(signature):
        raise InvalidToken("malformed token: expected PAYLOAD.SIGNATURE, both base64url without padding")
    if not hmac.compare_digest(_sign(payload, key).encode(), signature.encode()):
        raise TokenForged("the token's signature does not match: forged, altered, or minted with another key")
    claims = _claims(payload)
    now = time.time() if now_s is None else now_s
    if claims["exp"] <= now:
        raise TokenExpired(f"the token expired {int(now - claims['exp'])} s ago; ask the shop's backend for a new one")
    return str(claims["sub"])


def _claims(payload: str) -> dict[str, Any]:
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (binascii.Error, ValueError):
        raise InvalidToken("malformed token: the payload is not base64url JSON") from None
    if not isinstance(claims, dict):
        raise InvalidToken("malformed token: the payload must be a JSON object {sub, exp}")
    sub, exp = claims.get("sub"), claims.get("exp")
    if not isinstance(sub, str) or not sub.strip() or len(sub) > MAX_CUSTOMER_ID:
        raise InvalidToken("malformed token: 'sub' must be the customer id, a non-empty string")
    if isinstance(exp, bool) or not isinstance(exp, int):
        raise InvalidToken("malformed token: 'exp' must be the expiry in whole epoch seconds")
    return claims


def claim(body: Any, customer_id: str, where: str = "") -> Any:
    """``body`` bound to the token's customer: a missing ``customer_id`` is filled in.

    Anything but a JSON object is returned unchanged (the caller's own validation rejects it).

    Raises
    ------
    TokenScope
        ``body`` names another customer.
    """
    if not isinstance(body, dict):
        return body
    named = body.get("customer_id")
    if named is None:
        body["customer_id"] = customer_id
    elif named != customer_id:
        raise TokenScope(f"{where}customer_id",
                         "names another customer than the token's; a token only permits its own customer")
    return body


def claim_all(items: list[Any], customer_id: str) -> list[Any]:
    """:func:`claim` for every event of a batch (any event of another customer refuses the batch)."""
    return [claim(item, customer_id, f"[{index}].") for index, item in enumerate(items)]
