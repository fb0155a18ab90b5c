"""Slices of a tree, named by lists of path globs.

Globs apply to normalized, ``/``-separated relative paths (as in a
``Manifest``).  Within one component: ``*`` matches any run of bytes (leading
dots included, unlike a shell), ``?`` one byte, ``[abc]``/``[a-z]`` one byte
of a set and ``[!abc]`` one byte not in it (``]`` first in a set is literal;
there is no backslash escaping).  A component that is exactly ``**`` matches
zero or more whole components, so ``usr/include/**`` matches ``usr/include``
itself and everything below it.  ``**`` inside a longer component is just two
``*``.  Matching is per entry: a glob that names a directory selects the
directory only; add ``/**`` for its contents.

Globs are ``str`` (UTF-8, surrogateescape) or ``bytes``; each must be
non-empty and relative, without empty, ``.`` or ``..`` components or NUL
bytes, with balanced ``[...]`` and ascending ranges; anything else raises
``TreeError``.

``select(manifest, globs)`` returns the matching entries plus every ancestor
directory of each match, so a slice is always a complete tree.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Iterable

from fruix_dagster.errors import TreeError
from fruix_dagster.graph import DEFAULT_SLICES
from fruix_dagster.tree.manifest import Manifest
from fruix_dagster.tree.tarstream import _show

__all__ = ["BOOTLOADER_GLOBS", "DEFAULT_SLICES", "HEADERS_GLOBS", "matches", "select", "validate_globs"]

HEADERS_GLOBS: tuple[str, ...] = DEFAULT_SLICES["headers"]
BOOTLOADER_GLOBS: tuple[str, ...] = DEFAULT_SLICES["bootloader"]

_NOT_SLASH = b"(?!/)"


def _glob_bytes(glob: str | bytes) -> bytes:
    if isinstance(glob, str):
        return glob.encode("utf-8", "surrogateescape")
    if isinstance(glob, bytes):
        return glob
    raise TreeError(f"slice glob {glob!r} is a {type(glob).__name__}; expected str or bytes; fix the slice spec")


def _bad(glob: bytes, found: str) -> TreeError:
    return TreeError(
        f"slice glob {_show(glob)}: {found}; expected a non-empty relative '/'-separated glob without empty, '.' "
        "or '..' components (e.g. 'usr/include/**'); fix the slice spec"
    )


def _component(glob: bytes, comp: bytes) -> bytes:
    out = []
    i, n = 0, len(comp)
    while i < n:
        c = comp[i : i + 1]
        i += 1
        if c == b"*":
            out.append(b"[^/]*")
        elif c == b"?":
            out.append(b"[^/]")
        elif c == b"[":
            j = i
            negate = j < n and comp[j : j + 1] == b"!"
            if negate:
                j += 1
            start = j
            if j < n and comp[j : j + 1] == b"]":
                j += 1  # a leading ']' is literal
            while j < n and comp[j : j + 1] != b"]":
                j += 1
            if j >= n:
                raise _bad(glob, f"unterminated '[' in component {_show(comp)}")
            body = comp[start:j]
            if not body:
                raise _bad(glob, f"empty '[]' in component {_show(comp)}")
            i = j + 1
            parts = []
            k = 0
            while k < len(body):
                if k + 2 < len(body) and body[k + 1 : k + 2] == b"-":
                    lo, hi = body[k], body[k + 2]
                    if lo > hi:
                        raise _bad(glob, f"descending range {body[k:k + 3]!r}")
                    parts.append(re.escape(body[k : k + 1]) + b"-" + re.escape(body[k + 2 : k + 3]))
                    k += 3
                else:
                    parts.append(re.escape(body[k : k + 1]))
                    k += 1
            out.append(_NOT_SLASH + b"[" + (b"^" if negate else b"") + b"".join(parts) + b"]")
        else:
            out.append(re.escape(c))
    return b"".join(out)


@lru_cache(maxsize=256)
def _compile_one(glob: bytes) -> bytes:
    if not glob:
        raise _bad(glob, "it is empty")
    if b"\0" in glob:
        raise _bad(glob, "it contains a NUL byte")
    if glob.startswith(b"/"):
        raise _bad(glob, "it is absolute")
    pieces = []
    previous_star = False
    for comp in glob.split(b"/"):
        if comp in (b"", b".", b".."):
            raise _bad(glob, f"it has a {comp.decode()!r} component" if comp else "it has an empty component")
        if comp == b"**":
            if not previous_star:  # '**/**' is the same as '**'
                pieces.append(b"(?:/[^/]+)*")
            previous_star = True
        else:
            pieces.append(b"/" + _component(glob, comp))
            previous_star = False
    return b"".join(pieces)


@lru_cache(maxsize=64)
def _compile(globs: tuple[bytes, ...]) -> re.Pattern[bytes]:
    return re.compile(b"(?:" + b"|".join(_compile_one(g) for g in globs) + b")", re.DOTALL)


def validate_globs(globs: Iterable[str | bytes]) -> tuple[bytes, ...]:
    """Check a slice spec; return its globs as bytes.  TreeError if any is invalid or the list is empty."""
    if isinstance(globs, (str, bytes)):
        raise TreeError(f"slice spec {globs!r} is a single string; expected a list of globs; wrap it in a list")
    result = tuple(_glob_bytes(g) for g in globs)
    if not result:
        raise TreeError("slice spec is an empty list; expected at least one glob; add globs or drop the slice")
    for g in result:
        _compile_one(g)
    return result


def matches(path: bytes, globs: Iterable[str | bytes]) -> bool:
    """True if the relative path ``path`` matches any of ``globs``."""
    return _compile(validate_globs(globs)).fullmatch(b"/" + path) is not None


def select(manifest: Manifest, globs: Iterable[str | bytes]) -> Manifest:
    """Entries matching ``globs`` plus every ancestor directory of a match."""
    pattern = _compile(validate_globs(globs))
    fullmatch = pattern.fullmatch
    chosen: dict[bytes, object] = {}
    for entry in manifest:
        path = entry.path
        if path in chosen or fullmatch(b"/" + path) is None:
            continue
        chosen[path] = entry
        parent = path.rpartition(b"/")[0]
        while parent and parent not in chosen:
            ancestor = manifest.get(parent)
            if ancestor is None or ancestor.kind != "dir":
                found = "missing" if ancestor is None else f"a {ancestor.kind}"
                raise TreeError(
                    f"slice: ancestor {_show(parent)} of {_show(path)} is {found} in the manifest; expected a "
                    "directory entry for every ancestor (a complete tree); rebuild the manifest from the tree"
                )
            chosen[parent] = ancestor
            parent = parent.rpartition(b"/")[0]
    return Manifest(chosen.values())  # type: ignore[arg-type]
