"""The typed errors of the offerstream core.

Every error the core raises derives from one root, :class:`OfferstreamError`::

    OfferstreamError
    ├── ValidationError (also ValueError)       bad input; ``field`` names what is wrong
    │   ├── InvalidEvent                        an event breaks the event contract
    │   ├── InvalidOffer                        an offer breaks the catalogue contract
    │   ├── InvalidConsent                      a consent update or signal is malformed
    │   └── InvalidRequest                      a score request is malformed
    ├── ModelError                              a model bundle is missing, corrupt or mismatched
    ├── InvalidToken                            a customer token is malformed, forged or expired
    │   ├── TokenExpired                        ... expired (well-formed and correctly signed)
    │   └── TokenForged                         ... its signature does not match the key
    ├── TokenScope                              a token call names a customer other than the token's
    └── NotFound (also KeyError)                a customer or offer is unknown

The core never decides HTTP status codes: ``stream/`` maps these classes to them.
"""

from __future__ import annotations

__all__ = [
    "OfferstreamError",
    "ValidationError",
    "InvalidEvent",
    "InvalidOffer",
    "InvalidConsent",
    "InvalidRequest",
    "ModelError",
    "NotFound",
    "InvalidToken",
    "TokenExpired",
    "TokenForged",
    "TokenScope",
]


class OfferstreamError(Exception):
    """Root of every error raised by offerstream."""


class ValidationError(OfferstreamError, ValueError):
    """Input that breaks a contract.

    Parameters
    ----------
    field : str
        Dotted path of the offending field (``"items[2].price"``), or ``""`` for the whole input.
    reason : str
        What is wrong with it, in words a shop's engineer can act on.

    Examples
    --------
    >>> str(InvalidEvent("ts", "must be ISO-8601 with a zone or epoch milliseconds"))
    'ts: must be ISO-8601 with a zone or epoch milliseconds'
    """

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}" if field else reason)


class InvalidEvent(ValidationError):
    """An event that breaks the event contract."""


class InvalidOffer(ValidationError):
    """An offer that breaks the catalogue contract."""


class InvalidConsent(ValidationError):
    """A consent update or consent signal (flags, TC string, GCM, GPC) that is malformed."""


class InvalidRequest(ValidationError):
    """A score or API request body that is malformed."""


class ModelError(OfferstreamError):
    """A model bundle that is missing, corrupt, or does not match this feature schema."""


class NotFound(OfferstreamError, KeyError):
    """A customer, offer or model version that does not exist."""

    def __str__(self) -> str:  # KeyError quotes its argument; we want plain text
        return str(self.args[0]) if self.args else "not found"


class InvalidToken(OfferstreamError):
    """A customer token that cannot be trusted: malformed (this class), forged or expired (subclasses).

    Parameters
    ----------
    reason : str
        What is wrong, without echoing the token.
    """

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class TokenExpired(InvalidToken):
    """A well-formed, correctly signed customer token whose expiry has passed."""


class TokenForged(InvalidToken):
    """A customer token whose signature does not match the installation's token key."""


class TokenScope(OfferstreamError):
    """A call with a customer token that names another customer (``field`` says where).

    Parameters
    ----------
    field : str
        Where the other customer id was found (``"customer_id"``, ``"[3].customer_id"``).
    reason : str
        What is wrong.
    """

    def __init__(self, field: str, reason: str) -> None:
        self.field, self.reason = field, reason
        super().__init__(f"{field}: {reason}")
