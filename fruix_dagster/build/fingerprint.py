"""Step fingerprints: a digest of everything that determines a step's output."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

#: bump when the way steps are run changes what they produce
BUILD_CODE_VERSION = "1"

_NO_OUTPUT_EFFECT = re.compile(r"^(-j\d*|KERNFAST=.*)$")


def output_argv(argv: tuple[str, ...]) -> list[str]:
    """argv without what cannot change the output (``-jN``, ``KERNFAST=``)."""
    return [a for a in argv if not _NO_OUTPUT_EFFECT.match(a)]


def fingerprint(**parts: Any) -> str:
    """sha256 hex of the canonical JSON of the given parts."""
    blob = json.dumps({"code": BUILD_CODE_VERSION, **parts}, sort_keys=True,
                      separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(blob.encode()).hexdigest()
