"""The erasure ledger: keyed hashes of erased customers, honoured by ingestion, replay and training.

The ledger never holds a raw customer id: each entry is ``HMAC-SHA256(key, id)`` (the same keyed
hash as the audit trail) with the erasure time. An event of an erased customer whose time is at or
before the erasure is never applied again, so replaying an archive or a topic cannot bring the
customer back; a customer who returns and consents anew after the erasure starts afresh.

Examples
--------
>>> import tempfile, pathlib
>>> ledger = ErasureLedger(pathlib.Path(tempfile.mkdtemp()) / "ledger.jsonl", b"k")
>>> _ = ledger.add("c1", 1000)
>>> ledger.is_erased("c1", 999), ledger.is_erased("c1", 1001), "c1" in ledger, "c2" in ledger
(True, False, True, False)
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import orjson

from models.decision import hash_customer_id

__all__ = ["ErasureLedger", "read_hash_key", "LEDGER_FILE"]

LEDGER_FILE = "erasure-ledger.jsonl"


class ErasureLedger:
    """An append-only ledger file plus its in-memory index.

    Parameters
    ----------
    path : Path
        The ledger file (JSON lines ``{"h": hash, "erased_at": ms}``); created on first write.
    key : bytes
        The installation's hash key.
    """

    def __init__(self, path: Path, key: bytes) -> None:
        self.path = Path(path)
        self.key = key
        self._erased: dict[str, int] = {}
        if self.path.exists():
            for line in self.path.read_bytes().splitlines():
                try:
                    entry = orjson.loads(line)
                    self._erased[entry["h"]] = max(int(entry["erased_at"]), self._erased.get(entry["h"], 0))
                except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                    continue  # a torn last line after a crash

    def hash(self, customer_id: str) -> str:
        """The keyed hash under which ``customer_id`` is recorded."""
        return hash_customer_id(self.key, customer_id)

    def add(self, customer_id: str, erased_at_ms: int) -> str:
        """Record an erasure durably (fsync) and return its hash."""
        digest = self.hash(customer_id)
        self.add_hash(digest, erased_at_ms)
        return digest

    def add_hash(self, digest: str, erased_at_ms: int) -> bool:
        """Record an erasure known by hash (e.g. from another worker); False if already known."""
        if self._erased.get(digest, -1) >= erased_at_ms:
            return False
        self._erased[digest] = erased_at_ms
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "ab") as handle:
            handle.write(orjson.dumps({"h": digest, "erased_at": erased_at_ms}) + b"\n")
            handle.flush()
            os.fsync(handle.fileno())
        return True

    def erased_at(self, customer_id: str) -> int | None:
        """When the customer was last erased, or ``None``."""
        if not self._erased:  # the usual case on the ingest path: no keyed hash to compute
            return None
        return self._erased.get(self.hash(customer_id))

    def is_erased(self, customer_id: str, ts_ms: int) -> bool:
        """True if an event of ``customer_id`` at ``ts_ms`` predates the customer's erasure."""
        erased = self.erased_at(customer_id)
        return erased is not None and ts_ms <= erased

    def __contains__(self, customer_id: object) -> bool:
        return isinstance(customer_id, str) and self.hash(customer_id) in self._erased

    def entries(self) -> dict[str, int]:
        """All entries, hash -> erasure time."""
        return dict(self._erased)


def read_hash_key(data_dir: Path, *, create: bool = False) -> bytes:
    """The installation's hash key: ``$OFFERSTREAM_HASH_KEY``, else ``DATA_DIR/hash.key``.

    With ``create`` a new random key is written (mode 0600) when there is none yet.
    """
    env = os.environ.get("OFFERSTREAM_HASH_KEY")
    if env:
        return env.encode()
    path = Path(data_dir) / "hash.key"
    if not path.exists():
        if not create:
            raise FileNotFoundError(f"no hash key: set OFFERSTREAM_HASH_KEY or provide {path}")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_hex(32))
        path.chmod(0o600)
    return path.read_text().strip().encode()
