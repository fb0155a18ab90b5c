"""sha256 of files on the guest: ``sha256 -q`` on FreeBSD, ``sha256sum`` elsewhere."""

from __future__ import annotations

from typing import Sequence

from fruix_dagster.guest.transport import Transport

# $1 dir, rest: relative paths.  Prints "<sha256> <path>" per existing regular file.
_GUEST_SHA = r'''
dir=$1; shift
for f in "$@"; do
  [ -f "$dir/$f" ] || continue
  if command -v sha256 >/dev/null 2>&1; then h=$(sha256 -q "$dir/$f") || exit 1
  else h=$(sha256sum < "$dir/$f") || exit 1; h=${h%% *}; fi
  printf '%s %s\n' "$h" "$f"
done
'''


def guest_sha256(transport: Transport, directory: str, paths: Sequence[str]) -> dict[str, str]:
    """Hashes of those of ``paths`` (relative to directory) that are regular files."""
    if not paths:
        return {}
    res = transport.sh(_GUEST_SHA, directory, *paths).check(f"hashing files in {directory}")
    out = {}
    for line in res.stdout.decode("utf-8", "replace").splitlines():
        digest, _, path = line.partition(" ")
        out[path] = digest
    return out
