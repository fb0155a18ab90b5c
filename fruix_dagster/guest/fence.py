"""Fencing: anything that deletes on a guest stays inside the build root.

The host validates paths lexically; the guest re-checks physically
(``pwd -P``) right before deleting, so a symlink planted inside the build root
cannot redirect a delete elsewhere.
"""

from __future__ import annotations

import posixpath

from fruix_dagster.errors import FenceError, GuestError
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


# $1 root, $2 target.  Exit 3 = refused (reason on stdout); exit 4 = could not
# delete (rm's complaint on stderr).
#
# File flags first, or rm cannot delete an immutable file (installworld run as
# root sets schg on several, like bsd.prog.mk's PRECIOUSPROG: INSTALLFLAGS+=
# -fschg): FreeBSD's release tooling clears them with chflags before rm -rf
# (release/Makefile's clean target: chflags -R noschg).  On FreeBSD chflags -R
# never follows symlinks (-P, its default, given explicitly); on Linux
# chattr -R skips the symlinks it meets while recursing and chattr is only
# reached for a real directory or file (the target itself is never a symlink:
# refused above).  Errors of the flag tools are ignored (a non-root user, a
# file system without flags); what matters is whether rm succeeds.
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
if command -v chflags >/dev/null 2>&1; then
	chflags -R -P noschg,nouchg,nosappnd,nouappnd "$target" 2>/dev/null
elif command -v chattr >/dev/null 2>&1; then
	chattr -R -f -i -a "$target" 2>/dev/null
fi
chmod -R u+w "$target" 2>/dev/null
rm -rf -- "$target" || exit 4
'''


def remove_tree(transport: Transport, root: str, path: str) -> None:
    """Delete path (a file or tree) on the guest, only if it is inside root.

    File flags (schg/uchg/sappnd/uappnd on FreeBSD, immutable/append-only on
    Linux) are cleared first without following symlinks, so a stage that a
    root install made immutable can be rebuilt.
    """
    check_inside(root, path)
    res = transport.sh(_REMOVE, root, path)
    if res.exit_status == 3:
        raise FenceError(
            f"refused to delete {path} on {transport.description}: "
            f"{res.stdout.decode(errors='replace').strip()}; deletes are fenced to the build root {root}")
    if res.exit_status == 4:
        err = "\n".join(res.stderr.decode(errors="replace").strip().splitlines()[-5:])
        raise GuestError(
            f"deleting {path} on {transport.description}: expected it gone after clearing its file flags "
            f"(chflags noschg,nouchg / chattr -i -a), but rm failed:\n{err}\nOnly root can clear system "
            f"flags (and on FreeBSD only at securelevel 0 or below); delete it by hand as root, then retry")
    res.check(f"deleting {path}")


# $1 root, $2 stage, $3 metalog, $4 user: an empty stage and METALOG the user may write.
_PREPARE_NO_ROOT = r'''
root=$1 stage=$2 metalog=$3 user=$4
for p in "$stage" "$metalog"; do
	case "$p" in "$root"/?*) ;; *) echo "$p is not inside $root"; exit 3 ;; esac
	if [ -L "$p" ]; then echo "$p is a symlink"; exit 3; fi
done
mkdir -p "$stage" && chown "$user" "$stage" && : >"$metalog" && chown "$user" "$metalog"
'''


def prepare_no_root_stage(transport: Transport, root: str, stage: str, metalog: str, user: str) -> None:
    """Create an empty stage directory and METALOG owned by the unprivileged staging user."""
    check_inside(root, stage)
    check_inside(root, metalog)
    res = transport.sh(_PREPARE_NO_ROOT, root, stage, metalog, user)
    if res.exit_status == 3:
        raise FenceError(f"refused to prepare {stage} on {transport.description}: "
                         f"{res.stdout.decode(errors='replace').strip()}")
    res.check(f"preparing {stage} and {metalog} for the NO_ROOT user {user!r} (build.no_root_user; the user "
              "must exist on the guest)")
