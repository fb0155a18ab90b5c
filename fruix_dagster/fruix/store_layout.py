"""Recover the declared FreeBSD source store from a Fruix guest's system metadata.

A development-enabled Fruix system describes its store in
``/run/current-system/metadata/store-layout.scm``, a Guile S-expression such as::

    (store-layout
      (version 1)
      (store-root "/frx/store")
      (items ("/frx/store/<hash>-freebsd-source-default" …)))

The exact shape is not relied on.  The file is *read* (never evaluated) with
:mod:`fruix_dagster.fruix.sexp`, every top-level datum is walked, and every
*string* atom is classified (symbols, keywords, characters and anything
inside ``#;``/``#| |#``/``;`` comments are ignored):

* A string **refers to a FreeBSD source item** when it is an absolute path
  and either its first component below the store root looks like
  ``<something without '-'>-freebsd-source-…``, or any of its components
  looks like ``<32–64 letters/digits>-freebsd-source-…``.  Every other string
  (names such as ``"freebsd-source-default"``, prose, other store items) is
  ignored.
* Every such reference must be a normalized absolute path (no ``.`` or ``..``
  component, no ``//``, no trailing ``/``, no control characters),
  must lie under ``store_root``, and its first component below the store root
  must be a well-formed item name ``<hash>-freebsd-source-<name>`` (``hash``:
  32–64 lowercase letters and digits, Guix base32 or hex; ``name`` as
  ``source.name`` allows).  Otherwise the whole file is refused — a corrupt or
  hostile layout is never guessed around.
* A path *inside* an item (``<item>/tree``) counts as a mention of that item.
* Mentions of the same item, any number of times, are one item.  Exactly one
  item must carry the requested name.

Several top-level data in the file are accepted; all of them are searched
(so a stray trailing datum is harmless, and a second layout naming another
source makes the file ambiguous and refused).

:func:`source_from_metadata` then checks the item *on the guest* with one
POSIX ``sh`` command: it exists, its physical path (``cd -P``/``pwd -P``) is
still under the physical store root (a store item that is a symlink out of
the store is refused), and ``tree/`` is a directory (physically under the
store root too) with a top-level ``Makefile``.
"""

from __future__ import annotations

import re

from fruix_dagster.errors import SourceError
from fruix_dagster.fruix import sexp
from fruix_dagster.fruix.source import SourceStore
from fruix_dagster.guest.transport import Transport

#: The largest metadata file read, in bytes.
MAX_METADATA_BYTES = sexp.MAX_BYTES

_NAME = r"[A-Za-z0-9][A-Za-z0-9._+-]*"
_ITEM = re.compile(rf"(?P<hash>[0-9a-z]{{32,64}})-freebsd-source-(?P<name>{_NAME})")
# a first component below the store root that claims to be a source item
_CLAIMS_ITEM = re.compile(r"[^-/]+-freebsd-source-")
# any component that looks like a source item (hash-like prefix)
_LOOKS_LIKE_ITEM = re.compile(r"(?:^|/)[0-9A-Za-z]{32,64}-freebsd-source-")
_BAD_CHARS = re.compile(r"[\x00-\x1f\x7f-\x9f]")

_PARSE_HINT = ("regenerate the system metadata (reconfigure the Fruix system), point "
               "source.metadata at the right file, or set source.from = \"path\"")
_MAX_LISTED = 10


def _show(s: str, limit: int = 160) -> str:
    text = s if s.isprintable() else repr(s)[1:-1]
    if len(text) > limit:
        text = text[:limit] + f"… ({len(s)} characters)"
    return f'"{text}"'


def _listing(items: list[str]) -> str:
    shown = ", ".join(_show(i) for i in items[:_MAX_LISTED])
    if len(items) > _MAX_LISTED:
        shown += f" and {len(items) - _MAX_LISTED} more"
    return shown


def _path_problem(s: str) -> str:
    """Why ``s`` is not a normalized absolute path, or ''."""
    if not s.startswith("/"):
        return "relative"
    if _BAD_CHARS.search(s):
        return "contains a control character"
    if s != "/" and s.endswith("/"):
        return "trailing '/'"
    if "//" in s:
        return "contains '//'"
    parts = s[1:].split("/")
    if ".." in parts:
        return "contains a '..' component"
    if "." in parts:
        return "contains a '.' component"
    return ""


def _declared_store_roots(data: list) -> list[str]:
    """Strings the file itself gives as ``(store-root "…")`` or ``(store-root . "…")`` (for hints)."""
    out: list[str] = []
    for d in sexp.walk(data):
        if isinstance(d, list) and len(d) == 2 and d[0] == sexp.Symbol("store-root") and isinstance(d[1], str):
            out.append(d[1])
        elif (isinstance(d, sexp.DottedList) and d.items == (sexp.Symbol("store-root"),)
              and isinstance(d.tail, str)):
            out.append(d.tail)
    return out


def find_source_store(text: bytes, *, metadata_path: str, store_root: str, name: str,
                      max_bytes: int = MAX_METADATA_BYTES) -> str:
    """The one store item ``<store_root>/<hash>-freebsd-source-<name>`` that the
    store layout ``text`` names; raises :class:`SourceError` otherwise."""
    problem = _path_problem(store_root)
    if problem or store_root == "/":
        raise SourceError(
            f"source.store_root: expected a normalized absolute directory other than '/', "
            f"found {_show(store_root)} ({problem or 'the root directory'}); fix source.store_root")
    if not re.fullmatch(_NAME, name):
        raise SourceError(
            f"source.name: expected a name matching {_NAME}, found {_show(name)}; fix source.name")
    data = sexp.read_all(text, source=metadata_path, max_bytes=max_bytes, hint=_PARSE_HINT)
    prefix = store_root + "/"
    items: dict[str, tuple[str, str]] = {}   # item path -> (hash, name), in document order
    where = f"{metadata_path} (store root {store_root})"
    for s in sexp.strings(data):
        if not s.startswith("/"):
            continue
        below = s[len(prefix):] if s.startswith(prefix) else None
        first = below.split("/", 1)[0] if below is not None else ""
        claims = below is not None and _CLAIMS_ITEM.match(first) is not None
        if not claims and not _LOOKS_LIKE_ITEM.search(s):
            continue
        problem = _path_problem(s)
        if problem:
            raise SourceError(
                f"{where}: expected FreeBSD source store paths to be normalized absolute paths "
                f"(no '.', '..', '//', trailing '/' or control characters), found "
                f"{_show(s)} ({problem}); refusing the whole layout as corrupt or hostile — "
                f"regenerate the system metadata")
        if below is None:
            declared = [r for r in _declared_store_roots(data) if r != store_root]
            note = f" (the file declares store-root {_listing(declared)})" if declared else ""
            raise SourceError(
                f"{where}: expected every FreeBSD source store item to be under the store root "
                f"{store_root}, found {_show(s)} outside it{note}; set source.store_root to the "
                f"system's store root, or regenerate the metadata")
        m = _ITEM.fullmatch(first)
        if m is None:
            if not claims:
                raise SourceError(
                    f"{where}: expected a FreeBSD source store item directly under {store_root}, "
                    f"found {_show(s)}, which names one nested inside {_show(prefix + first)}; "
                    f"refusing the layout — regenerate the system metadata")
            raise SourceError(
                f"{where}: expected a store item name <hash>-freebsd-source-<name> (hash: 32–64 "
                f"lowercase letters and digits; name: {_NAME}), found {_show(first)} in {_show(s)}; "
                f"refusing the layout — regenerate the system metadata")
        items.setdefault(prefix + first, (m.group("hash"), m.group("name")))

    wanted = [path for path, (_, n) in items.items() if n == name]
    if len(wanted) == 1:
        return wanted[0]
    expected = f"exactly one store item {store_root}/<hash>-freebsd-source-{name}"
    if len(wanted) > 1:
        raise SourceError(
            f"{where}: expected {expected}, found {len(wanted)} different ones: {_listing(wanted)}; "
            f"the layout is ambiguous — fix the system declaration so it names one source, "
            f"or set source.from = \"path\"")
    if items:
        names = sorted({n for _, n in items.values()})
        raise SourceError(
            f"{where}: expected {expected}, found none for {name!r}; the layout names FreeBSD "
            f"source items for other names: {_listing(list(items))}; set source.name to one of "
            f"{', '.join(repr(n) for n in names)}")
    raise SourceError(
        f"{where}: expected {expected}, found no freebsd-source store item at all; the system "
        f"does not declare a FreeBSD source — boot a development-enabled Fruix system, or set "
        f"source.from = \"path\" and source.path")


def store_hash_of(source_store: str) -> str:
    """The hash part of ``…/<hash>-freebsd-source-<name>``."""
    m = _ITEM.fullmatch(source_store.rsplit("/", 1)[-1])
    if m is None:
        raise SourceError(
            f"expected a store item name <hash>-freebsd-source-<name>, found {_show(source_store)}; "
            f"this is a bug in fruix_dagster")
    return m.group("hash")


# -- on the guest --------------------------------------------------------------------

# $1 = path, $2 = limit, $3 = limit + 1.  Prints the size on the first line, then
# (only if size <= limit) at most limit + 1 bytes of the file.
_READ_BOUNDED = r"""
[ -e "$1" ] || exit 3
[ -f "$1" ] || exit 4
size=$(wc -c < "$1" | tr -d ' \t') || exit 5
case $size in ''|*[!0-9]*) exit 5;; esac
printf '%s\n' "$size"
[ "$size" -le "$2" ] || exit 7
exec head -c "$3" "$1"
"""

# $1 = store root, $2 = store item.  Prints the physical item path and tree path.
_VERIFY_STORE = r"""
unset CDPATH
cd -P "$1" 2>/dev/null || exit 10
root_p=$(pwd -P) || exit 10
[ -e "$2" ] || [ -L "$2" ] || exit 11
[ -d "$2" ] || exit 12
cd -P "$2" 2>/dev/null || exit 12
store_p=$(pwd -P) || exit 12
case $store_p in "$root_p"/*) ;; *) printf '%s\n' "$store_p"; exit 13;; esac
[ -d ./tree ] || exit 14
cd -P ./tree 2>/dev/null || exit 14
tree_p=$(pwd -P) || exit 14
case $tree_p in "$root_p"/*) ;; *) printf '%s\n' "$tree_p"; exit 15;; esac
[ -f ./Makefile ] || exit 16
printf '%s\n%s\n' "$store_p" "$tree_p"
"""


def _stderr(res) -> str:
    err = res.stderr.decode("utf-8", "replace").strip()
    return "\n".join(err.splitlines()[-5:]) or "(no error output)"


def read_metadata(transport: Transport, path: str, *, max_bytes: int = MAX_METADATA_BYTES) -> bytes:
    """The bytes of the metadata file ``path`` on the guest, refusing files over
    ``max_bytes`` before any of their content is transferred."""
    on = transport.description
    res = transport.sh(_READ_BOUNDED, path, str(max_bytes), str(max_bytes + 1))
    if res.exit_status == 3:
        raise SourceError(
            f"source.metadata: expected a development-enabled Fruix system with its store layout "
            f"at {path} on {on}, found no such file; boot a development-enabled Fruix system, "
            f"fix source.metadata, or set source.from = \"path\" and source.path")
    if res.exit_status == 4:
        raise SourceError(
            f"source.metadata: expected {path} on {on} to be a regular file, found something else "
            f"(a directory or device); fix source.metadata")
    first, _, content = res.stdout.partition(b"\n")
    if res.exit_status == 7:
        size = first.decode("ascii", "replace")
        raise SourceError(
            f"source.metadata: expected {path} on {on} to be at most {max_bytes} bytes, found "
            f"{size} bytes; refusing to read it — a store layout is small, so this is not one: "
            f"fix source.metadata")
    if not res.ok:
        raise SourceError(
            f"source.metadata: expected to read {path} on {on}, the command exited "
            f"{res.exit_status}: {_stderr(res)}; check that the file is readable by the login user")
    if len(content) > max_bytes:
        raise SourceError(
            f"source.metadata: expected {path} on {on} to be at most {max_bytes} bytes, found more "
            f"(it grew while being read); refusing it — retry once the system is settled")
    return content


def verify_source_store(transport: Transport, store_root: str, source_store: str) -> None:
    """Check on the guest that ``source_store`` is a real source item inside ``store_root``."""
    on = transport.description
    res = transport.sh(_VERIFY_STORE, store_root, source_store)
    found = res.stdout.decode("utf-8", "replace").strip()
    status = res.exit_status
    item = _show(source_store)
    tree = _show(source_store + "/tree")
    if status == 0:
        return
    if status == 10:
        msg = (f"expected the store root {store_root} to be a directory on {on}, found none; "
               f"fix source.store_root")
    elif status == 11:
        msg = (f"expected the store item {item} named by the system metadata to exist on {on}, "
               f"found nothing there; the metadata is stale or the item was collected — "
               f"reconfigure the system, or set source.from = \"path\"")
    elif status == 12:
        msg = (f"expected the store item {item} on {on} to be a directory that can be entered, "
               f"found something else (a file, or no permission); reconfigure the system")
    elif status == 13:
        msg = (f"expected the store item {item} on {on} to be physically inside the store root "
               f"{store_root}, found it resolves to {_show(found)} outside it (a symlink out of the "
               f"store); refusing it — fix the store or set source.from = \"path\"")
    elif status == 14:
        msg = (f"expected a FreeBSD source tree directory {tree} on {on}, found none; "
               f"the item is not a materialized FreeBSD source — reconfigure the system or set "
               f"source.from = \"path\"")
    elif status == 15:
        msg = (f"expected the source tree {tree} on {on} to be physically inside the "
               f"store root {store_root}, found it resolves to {_show(found)}; refusing it — fix "
               f"the store or set source.from = \"path\"")
    elif status == 16:
        msg = (f"expected a top-level Makefile in the FreeBSD source tree {tree} on "
               f"{on}, found none; the item is not a FreeBSD source tree — check source.name")
    else:
        msg = (f"expected the check of the store item {item} on {on} to run, it exited {status}: "
               f"{_stderr(res)}; check that POSIX sh works on the guest")
    raise SourceError(f"source store: {msg}")


def source_from_metadata(transport: Transport, source_settings, *,
                         max_bytes: int = MAX_METADATA_BYTES) -> SourceStore:
    """Read ``source_settings.metadata`` on the guest, find the store item
    ``<store_root>/<hash>-freebsd-source-<name>`` it declares, verify it on the
    guest and return it (``source_root`` = ``<item>/tree``, ``store_hash`` = hash).

    ``source_settings`` needs ``metadata``, ``store_root`` and ``name``
    (:class:`fruix_dagster.settings.SourceSettings`).
    """
    text = read_metadata(transport, source_settings.metadata, max_bytes=max_bytes)
    store = find_source_store(text, metadata_path=source_settings.metadata,
                              store_root=source_settings.store_root, name=source_settings.name,
                              max_bytes=max_bytes)
    verify_source_store(transport, source_settings.store_root, store)
    return SourceStore(source_store=store, source_root=f"{store}/tree", store_hash=store_hash_of(store))
