"""Staged trees: streaming tar parsing, manifests, the tree digest and slices.

Plain standard library only (no dagster import), so guest-side tooling and
tests can use it directly.  See the submodules for the rules:

* ``tarstream``: ``iter_members`` / ``TarReader`` / ``Member``: framing one tar
  stream, reading the bytes of each header with ``tarformat`` (ustar/GNU/pax
  fields, checksums) and admitting each entry by ``tarrules`` (what a staged
  tree may hold); ``readahead``: ``ReadAhead`` and ``widen_pipe`` to overlap
  reading with parsing;
* ``manifest``: ``Entry``, ``Manifest`` (``to_jsonl``, ``from_jsonl``,
  ``digest`` = ``tree_sha256``), ``manifest_from_tar``, ``manifest_from_dir``,
  ``TreeSink``;
* ``slices``: ``matches``, ``select``, ``validate_globs`` and the default
  ``HEADERS_GLOBS`` / ``BOOTLOADER_GLOBS``.
"""

from fruix_dagster.tree.manifest import (
    Entry,
    Manifest,
    NullSink,
    TreeSink,
    manifest_from_dir,
    manifest_from_tar,
)
from fruix_dagster.tree.slices import (
    BOOTLOADER_GLOBS,
    DEFAULT_SLICES,
    HEADERS_GLOBS,
    matches,
    select,
    validate_globs,
)
from fruix_dagster.tree.tarstream import Member, ReadAhead, TarReader, iter_members, widen_pipe

__all__ = [
    "BOOTLOADER_GLOBS",
    "DEFAULT_SLICES",
    "Entry",
    "HEADERS_GLOBS",
    "Manifest",
    "Member",
    "ReadAhead",
    "NullSink",
    "TarReader",
    "TreeSink",
    "iter_members",
    "manifest_from_dir",
    "manifest_from_tar",
    "matches",
    "select",
    "validate_globs",
    "widen_pipe",
]
