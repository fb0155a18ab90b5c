"""A cheap look at a guest's source: the data version of the ``guest_source`` observation.

Ticks (the source-change sensor, the nightly schedule) must never stream or
hash a source tree — ``freebsd_source`` does that inside its run.  What a
tick asks instead, in one POSIX ``sh`` command on the guest:

* ``source.from = "system-metadata"``: the declared store item, read from the
  one small ``store-layout.scm`` file (plus the item's existence check);
  version ``store:<hash>``.
* ``source.from = "path"``: metadata only, never file contents: the tree is
  listed with ``ls -lnR | cksum`` (names, sizes, modes, owners, minute
  mtimes); version ``listing:<cksum>-<bytes>``.  A listing misses an edit
  that keeps a file's size within the minute its last read saw, so each
  ``freebsd_source`` run also leaves a *read mark* in the build root
  (``<build_root>/source-read/<target>.ref``, an empty file whose mtime is the
  moment before the run listed and hashed the tree, and ``….info``:
  ``<run id> <listing>``).  The probe asks ``find PATH -newer REF`` for one
  entry modified after the mark (full mtime resolution): when the listing
  equals the mark's but something is newer, the version is
  ``listing:<cksum>-<bytes>+edited-after:<run id>``.  A run's read does not
  change the version (the next probe sees the same listing, nothing newer),
  so nothing turns stale because a run read the tree; only the rare
  same-size same-minute edit costs one extra re-read after its rebuild.

A changed version only says "look again": ``freebsd_source`` still computes
the real tree digest, and if it equals the recorded one nothing downstream
is rebuilt (its data version is the store hash).
An xcpng guest is never probed: it may be a halted VM and a tick never boots
one (:func:`probe` raises :class:`NotObservable`).
"""

from __future__ import annotations

from dataclasses import dataclass

from fruix_dagster.errors import FruixError, SourceError
from fruix_dagster.fruix.store_layout import source_from_metadata
from fruix_dagster.guest.transport import Transport
from fruix_dagster.session import GuestSession
from fruix_dagster.settings import Settings

__all__ = ["NotObservable", "Observation", "mark_read", "observe", "probe"]

MARK_DIR = "source-read"

# $1 source path, $2 mark (.ref), $3 mark info (.info).  Prints three lines:
# the info line (or empty), "newer" / "same" / "none" (no mark), the listing sum.
_PROBE = r"""
[ -d "$1" ] && [ -f "$1/Makefile" ] || { echo "no FreeBSD source tree at $1" >&2; exit 3; }
info=
state=none
if [ -f "$2" ] && [ -f "$3" ]; then
  info=$(cat "$3")
  first=$(find "$1" -newer "$2" -print | head -n 1)
  if [ -n "$first" ]; then state=newer; else state=same; fi
fi
sum=$(cd "$1" && ls -lnR . | cksum) || exit 4
printf '%s\n%s\n%s\n' "$info" "$state" "$sum"
"""

# $1 source path, $2 mark dir, $3 mark (.ref), $4 mark info (.info), $5 run id.
# The reference is touched before the listing, so whatever changes after it is newer.
_MARK = r"""
mkdir -p "$2" || exit 5
: > "$3.new" || exit 5
sum=$(cd "$1" && ls -lnR . | cksum) || exit 4
printf '%s %s\n' "$5" "$sum" > "$4.new" && mv -f "$3.new" "$3" && mv -f "$4.new" "$4" || exit 5
printf '%s\n' "$sum"
"""


def _listing(cksum_line: str) -> str:
    return "listing:" + "-".join(cksum_line.split())


class NotObservable(FruixError):
    """The guest's source cannot be looked at from a tick (an xcpng VM)."""


@dataclass(frozen=True)
class Observation:
    data_version: str
    #: one line for the tick log and the observation metadata
    detail: str


def _mark_paths(settings: Settings, target: str) -> tuple[str, str, str]:
    d = f"{settings.build.build_root}/{MARK_DIR}"
    return d, f"{d}/{target}.ref", f"{d}/{target}.info"


def probe(transport: Transport, settings: Settings, target: str) -> Observation:
    """The source's data version now, from the guest behind transport (cheap; see the module)."""
    src = settings.source
    if src.from_ != "path":
        store = source_from_metadata(transport, src)
        return Observation(f"store:{store.store_hash}", f"declared store {store.source_store}")
    assert src.path is not None
    _d, ref, info = _mark_paths(settings, target)
    res = transport.sh(_PROBE, src.path, ref, info)
    if not res.ok:
        raise SourceError(
            f"source.path: expected a FreeBSD source tree (a directory with a top-level Makefile) at "
            f"{src.path} on {transport.description}, found none "
            f"({res.stderr.decode(errors='replace').strip()}); fix source.path in the settings file")
    info_line, state, listing = res.stdout.decode().split("\n")[:3]
    version = _listing(listing)
    run_id, _, marked = info_line.partition(" ")
    if state == "newer" and _listing(marked) == version:
        return Observation(f"{version}+edited-after:{run_id}",
                           f"{src.path}: same listing as run {run_id} read, but entries modified after it")
    if state == "none":
        return Observation(version, f"{src.path}: listed (no read mark: not read by a run on this guest yet)")
    if _listing(marked) == version and state == "same":
        return Observation(version, f"{src.path}: unchanged since run {run_id} read it")
    return Observation(version, f"{src.path}: listing differs from what run {run_id} read")


def observe(settings: Settings, target: str) -> Observation:
    """:func:`probe` on the target's guest, in a session of its own; never boots a VM."""
    guest = settings.guest_for(target)
    if guest.kind == "xcpng":
        raise NotObservable(
            f"guest {guest.name!r} is an xcpng VM: not observed (a tick never boots a VM, and a "
            f"halted one cannot be asked); its source is read when a run boots it")
    session = GuestSession(settings, guest)
    try:
        return probe(session.transport, settings, target)
    finally:
        session.close()


def mark_read(transport: Transport, settings: Settings, target: str, run_id: str) -> Observation:
    """Leave the read mark (before the run reads the tree) and return the version it stands for.

    For a system-metadata source the version is the store item's, so no mark is needed.
    """
    src = settings.source
    if src.from_ != "path":
        return probe(transport, settings, target)
    assert src.path is not None
    d, ref, info = _mark_paths(settings, target)
    res = transport.sh(_MARK, src.path, d, ref, info, run_id).check(
        f"leaving the source read mark in {d} on {transport.description}")
    return Observation(_listing(res.stdout.decode()), f"{src.path}: read by run {run_id}")
