"""Resolve the FreeBSD source a target builds from.

``from = "path"``: a plain source directory on the guest; its identity
(``store_hash``) is the tree digest of its contents, streamed once.
``from = "system-metadata"``: the store named in the guest's
``store-layout.scm`` (see ``store_layout``).
"""

from __future__ import annotations

from dataclasses import dataclass

from fruix_dagster.errors import SourceError
from fruix_dagster.guest.transport import Transport
from fruix_dagster.tree.manifest import manifest_from_tar


@dataclass(frozen=True)
class SourceStore:
    source_store: str     # the store item (or the plain directory)
    source_root: str      # the tree make runs in
    store_hash: str       # identity: store hash, or tree digest for a plain path


def source_from_path(transport: Transport, path: str) -> SourceStore:
    res = transport.sh('[ -d "$1" ] && [ -f "$1/Makefile" ]', path)
    if not res.ok:
        raise SourceError(
            f"source.path: expected a FreeBSD source tree (a directory with a top-level Makefile) "
            f"at {path} on {transport.description}, found none; fix source.path in the settings file")
    with transport.tar_stream(path) as stream:
        digest = manifest_from_tar(stream).digest()
    return SourceStore(path, path, digest)


def resolve_source(transport: Transport, source_settings) -> SourceStore:
    """The source a target builds from, as ``[source]`` declares it (the one place that decides).

    ``from = "path"``: :func:`source_from_path`; ``"system-metadata"``:
    :func:`fruix_dagster.fruix.store_layout.source_from_metadata`.
    """
    if source_settings.from_ == "path":
        assert source_settings.path is not None
        return source_from_path(transport, source_settings.path)
    # store_layout imports SourceStore from here; import it when it is needed
    from fruix_dagster.fruix.store_layout import source_from_metadata

    return source_from_metadata(transport, source_settings)
