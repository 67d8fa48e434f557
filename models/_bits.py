"""Bit-level helpers for :mod:`models.tcf`: base64url <-> bits, a bounded reader, a writer.

A TC string segment is unpadded, URL-safe base64 (RFC 4648 section 5) read as a plain bit string:
every character is six big-endian bits, left to right. Bits are held as a ``str`` of ``"0"`` and
``"1"`` so that slicing a long bit field costs only that slice.

Every read is bounds-checked and raises :class:`~models.errors.InvalidConsent` naming the field,
so a truncated segment can never decode to a default value.
"""

from __future__ import annotations

import string

from models.errors import InvalidConsent

__all__ = ["ALPHABET", "BitReader", "BitWriter", "base64url_to_bits"]

ALPHABET = string.ascii_uppercase + string.ascii_lowercase + string.digits + "-_"
_CHAR_BITS = {c: format(i, "06b") for i, c in enumerate(ALPHABET)}
_BITS_CHAR = {bits: c for c, bits in _CHAR_BITS.items()}


def base64url_to_bits(segment: str, field: str) -> str:
    """Decode one unpadded base64url segment to a bit string.

    Parameters
    ----------
    segment : str
        The segment text, without the ``"."`` separators.
    field : str
        Field name used in errors.

    Returns
    -------
    str
        ``"0"``/``"1"`` characters, six per input character.

    Raises
    ------
    InvalidConsent
        On any character outside ``A-Z a-z 0-9 - _`` (including ``=``, ``+``, ``/``, whitespace).

    Examples
    --------
    >>> base64url_to_bits("C_", "tc")
    '000010111111'
    """
    try:
        return "".join([_CHAR_BITS[c] for c in segment])
    except KeyError as exc:
        pos = segment.index(exc.args[0])
        raise InvalidConsent(
            field,
            f"character {exc.args[0]!r} at position {pos} is not unpadded base64url "
            "(allowed: A-Z a-z 0-9 - _; no '=' padding, no whitespace)",
        ) from None


class BitReader:
    """Sequential, bounds-checked reader over a bit string.

    Parameters
    ----------
    bits : str
        ``"0"``/``"1"`` characters, e.g. from :func:`base64url_to_bits`.

    Examples
    --------
    >>> r = BitReader("000010101")
    >>> r.read_int(6, "version"), r.read_bool("flag"), r.remaining
    (2, True, 2)
    """

    __slots__ = ("_bits", "_pos")

    def __init__(self, bits: str) -> None:
        self._bits = bits
        self._pos = 0

    @property
    def remaining(self) -> int:
        """Number of bits not yet read."""
        return len(self._bits) - self._pos

    def read_bits(self, n: int, field: str) -> str:
        """Read ``n`` raw bits; raise :class:`InvalidConsent` if fewer remain."""
        if n > self.remaining:
            raise InvalidConsent(
                field,
                f"truncated: needs {n} bits at bit {self._pos}, only {self.remaining} remain",
            )
        out = self._bits[self._pos : self._pos + n]
        self._pos += n
        return out

    def read_int(self, n: int, field: str) -> int:
        """Read an ``n``-bit big-endian unsigned integer."""
        return int(self.read_bits(n, field), 2) if n else 0

    def read_bool(self, field: str) -> bool:
        """Read one bit as a boolean."""
        return self.read_bits(1, field) == "1"

    def expect_zero_tail(self, field: str) -> None:
        """Require every unread bit to be zero (padding); anything else means a misparse."""
        tail = self._bits[self._pos :]
        if "1" in tail:
            raise InvalidConsent(
                field,
                f"{len(tail)} bits left after the last field are not all zero padding",
            )


class BitWriter:
    """Append-only bit writer producing an unpadded base64url segment.

    Examples
    --------
    >>> w = BitWriter()
    >>> w.write_int(2, 6)
    >>> w.to_base64url()  # six bits, zero-padded to a byte, then to whole characters
    'CA'
    """

    __slots__ = ("_parts",)

    def __init__(self) -> None:
        self._parts: list[str] = []

    def write_int(self, value: int, n: int) -> None:
        """Append ``value`` as ``n`` big-endian bits; ``ValueError`` if it does not fit."""
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < (1 << n):
            raise ValueError(f"{value!r} does not fit in {n} unsigned bits")
        if n:
            self._parts.append(format(value, f"0{n}b"))

    def write_bool(self, value: bool) -> None:
        """Append one bit."""
        self._parts.append("1" if value else "0")

    def write_bits(self, bits: str) -> None:
        """Append a raw ``"0"``/``"1"`` string."""
        if bits.strip("01"):
            raise ValueError("bits must contain only '0' and '1'")
        self._parts.append(bits)

    def bits(self) -> str:
        """The bits written so far."""
        return "".join(self._parts)

    def to_base64url(self) -> str:
        """Zero-pad to a whole byte, then to a whole character, and encode.

        Byte alignment first keeps the output length valid for decoders that go through bytes
        (the length is never ``1 mod 4``).
        """
        bits = self.bits()
        bits += "0" * (-len(bits) % 8)
        bits += "0" * (-len(bits) % 6)
        return "".join(_BITS_CHAR[bits[i : i + 6]] for i in range(0, len(bits), 6))
