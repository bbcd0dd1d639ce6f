"""Seeds derived per purpose: one run seed gives independent, stable streams for each use.

SHA-256 of ``"<seed>:<purpose>"`` (never Python's ``hash()``, which changes between processes), so
weight init, data order, corruption, dropout and each measure draw from their own stream, and
enabling one measure never shifts another's random draws.
"""

from __future__ import annotations

import hashlib


def derive_seed(seed: int, purpose: str) -> int:
    """A 63-bit seed for ``purpose`` (fits ``torch.Generator.manual_seed``)."""
    digest = hashlib.sha256(f"{int(seed)}:{purpose}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)
