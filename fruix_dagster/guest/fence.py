"""Fencing: anything that deletes on a guest stays inside the build root.

The host validates paths lexically; the guest re-checks physically
(``pwd -P``) right before deleting, so a symlink planted inside the build root
cannot redirect a delete elsewhere.
"""

from __future__ import annotations

import posixpath

from fruix_dagster.errors import FenceError
from fruix_dagster.guest.transport import Transport


def check_build_root(root: str) -> str:
    """Return the normalised root or raise FenceError before anything runs."""
    if not root.startswith("/"):
        raise FenceError(f"build root: expected an absolute path, got {root!r}")
    parts = root.split("/")[1:]
    if any(p in ("", ".", "..") for p in parts) or "\0" in root or "\n" in root:
        raise FenceError(
            f"build root: expected a normalised absolute path without '.', '..' or empty "
            f"components, got {root!r}")
    if len(parts) < 2:
        raise FenceError(
            f"build root: expected a dedicated directory at least two levels deep "
            f"(e.g. /var/tmp/fruix-native-build), got {root!r}; refusing to delete under it")
    return root


def check_inside(root: str, path: str) -> str:
    """Lexically check that path is strictly inside root."""
    check_build_root(root)
    norm = posixpath.normpath(path)
    if norm != path or ".." in path.split("/") or not path.startswith(root + "/"):
        raise FenceError(
            f"expected a path strictly inside the build root {root}, got {path!r}; refused")
    return path


# $1 root, $2 target.  Exit 3 = refused (reason on stdout).
_REMOVE = r'''
root=$1 target=$2
case "$target" in "$root"/?*) ;; *) echo "not inside $root"; exit 3 ;; esac
if [ -L "$root" ]; then echo "the build root $root is itself a symlink"; exit 3; fi
[ -e "$target" ] || [ -L "$target" ] || exit 0
if [ -L "$target" ]; then echo "$target is a symlink"; exit 3; fi
rp=$(cd "$root" && pwd -P) || exit 3
[ "$rp" != / ] || { echo "the build root resolves to /"; exit 3; }
tp=$(cd "$(dirname "$target")" && pwd -P) || exit 3
case "$tp/" in "$rp"/*) ;; *) echo "$target resolves to $tp, outside $rp"; exit 3 ;; esac
if command -v chflags >/dev/null 2>&1; then chflags -R noschg "$target" 2>/dev/null; fi
chmod -R u+w "$target" 2>/dev/null
rm -rf -- "$target"
'''


def remove_tree(transport: Transport, root: str, path: str) -> None:
    """Delete path (a file or tree) on the guest, only if it is inside root."""
    check_inside(root, path)
    res = transport.sh(_REMOVE, root, path)
    if res.exit_status == 3:
        raise FenceError(
            f"refused to delete {path} on {transport.description}: "
            f"{res.stdout.decode(errors='replace').strip()}; deletes are fenced to the build root {root}")
    res.check(f"deleting {path}")
