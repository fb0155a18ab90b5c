"""The rules of the asset view's values ([assets]): Dagster owners and tags.

Kept apart from :mod:`.rules` (the build's values) so each stays small; the
same :func:`~.rules._rule` wraps each check.
"""

from __future__ import annotations

import re
from typing import Any

from fruix_dagster.settings.messages import expect, sub_key
from fruix_dagster.settings.rules import MakeVars, _rule

_OWNER = re.compile(r"team:[A-Za-z0-9_.-]+|[^@\s]+@[^@\s]+\.[^@\s]+")
_TAG_PART = re.compile(r"[A-Za-z0-9_.-]{1,63}")


def _owners(v: Any) -> tuple[str, ...]:
    """Dagster asset owners: ``team:NAME`` or an e-mail address."""
    expected = 'must be an array of owners, each "team:NAME" or an e-mail address'
    if isinstance(v, tuple):
        v = list(v)
    if not isinstance(v, list):
        raise expect(expected, v, typed=True)
    for i, item in enumerate(v):
        if not isinstance(item, str) or not _OWNER.fullmatch(item):
            raise expect('must be "team:NAME" (NAME of letters, digits, _ . -) or an e-mail address', item,
                         typed=not isinstance(item, str), sub=f"[{i}]")
    return tuple(v)


Owners = _rule(tuple[str, ...], _owners)


def _asset_tags(v: Any) -> MakeVars:
    """A ``{ key = "value" }`` table of Dagster tags → sorted pairs (Dagster's tag rules)."""
    if isinstance(v, tuple):
        v = dict(v)
    if not isinstance(v, dict):
        raise expect('must be a table of key = "value" pairs', v, typed=True)
    for key, value in v.items():
        prefix, _, name = key.rpartition("/")
        if not _TAG_PART.fullmatch(name) or (prefix and not _TAG_PART.fullmatch(prefix)):
            raise expect("tag keys must be NAME or PREFIX/NAME, each of 1–63 letters, digits, _ . -", key)
        if not isinstance(value, str):
            raise expect("must be a string", value, typed=True, sub=sub_key(key))
        if value and not _TAG_PART.fullmatch(value):
            raise expect("must be empty or 1–63 letters, digits, _ . -", value, sub=sub_key(key))
    return tuple(sorted(v.items()))


TagTable = _rule(MakeVars, _asset_tags)
