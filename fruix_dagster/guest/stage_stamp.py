"""Which install made a stage directory, and whether the stage is still what it made.

A stage's install steps are reused when their step records say they
succeeded (:mod:`fruix_dagster.guest.detached`), but a step record says
nothing about the directory it installed into: it may have been deleted,
edited, or replaced since.  So once a stage's install steps finish, a stamp
is written beside it::

    <build_root>/stage/<target>/world.installed
        <step dir of the stage's last install step>
        <inode of the stage directory>

and before the steps are reused the stage is checked against it: the stamp
names the same step record, the stage is the same directory (its inode: not
a copy put in its place), and nothing in it is newer than the stamp
(``find -newer``: a written file, or an entry created or deleted in a
directory, changes an mtime).  Any difference means: install anew.  A change
that keeps every mtime (``touch -r``, a bare chmod) is not seen.

POSIX sh; ``ls -di``, ``find -newer`` and ``mkdir -p`` as FreeBSD and
GNU/busybox have them.
"""

from __future__ import annotations

from fruix_dagster.errors import FenceError
from fruix_dagster.guest.fence import check_inside
from fruix_dagster.guest.transport import Transport

# $1 root, $2 stage, $3 stamp, $4 step dir.  Prints "ok" or one line saying what differs.
_CHECK = r'''
root=$1 stage=$2 stamp=$3 want=$4
if [ -L "$stage" ] || [ ! -d "$stage" ]; then echo "$stage is missing (or not a directory)"; exit 0; fi
if [ ! -f "$stamp" ]; then echo "$stamp is missing: nothing says which install made $stage"; exit 0; fi
{ IFS= read -r step; IFS= read -r ino; } < "$stamp"
if [ "$step" != "$want" ]; then echo "$stage was installed by ${step:-an unknown step}, not $want"; exit 0; fi
now=$(ls -di "$stage" | awk '{ print $1 }')
if [ "$now" != "$ino" ]; then echo "$stage is another directory than the one installed (inode $now, was $ino)"; exit 0; fi
newer=$(find "$stage" -newer "$stamp" 2>&1 | head -n 1)
if [ -n "$newer" ]; then echo "$stage changed since it was installed ($newer)"; exit 0; fi
echo ok
'''

# $1 stage, $2 stamp, $3 step dir.
_WRITE = r'''
stage=$1 stamp=$2 step=$3
[ -d "$stage" ] && [ ! -L "$stage" ] || { echo "$stage is not a directory after its install"; exit 3; }
ino=$(ls -di "$stage" | awk '{ print $1 }')
printf '%s\n%s\n' "$step" "$ino" > "$stamp.tmp" && mv -f "$stamp.tmp" "$stamp"
'''

# $1 root, $2 the stage root (<root>/stage/<target>): created (the build root too, as the
# installs would), never through a symlink.
_PARENT = r'''
root=$1 dir=$2
if [ -L "$root" ]; then echo "$root is a symlink"; exit 3; fi
[ -d "$root" ] || mkdir -p "$root" || exit 1
p=$root
for c in $(printf '%s' "${dir#"$root"/}" | tr '/' ' '); do
  p=$p/$c
  if [ -L "$p" ]; then echo "$p is a symlink"; exit 3; fi
  [ -d "$p" ] || mkdir "$p" || exit 1
done
'''


def stamp_path(stage_dir: str) -> str:
    """Beside the stage, not in it (it is not part of the tree)."""
    return f"{stage_dir}.installed"


def stage_differs(transport: Transport, root: str, stage_dir: str, step_dir: str) -> str:
    """"" if ``stage_dir`` is what the install ending in ``step_dir`` left there, else why not."""
    check_inside(root, stage_dir)
    res = transport.sh(_CHECK, root, stage_dir, stamp_path(stage_dir), step_dir)
    out = res.check(f"checking {stage_dir} against its install stamp").stdout.decode("utf-8", "replace").strip()
    return "" if out == "ok" else out


def write_stamp(transport: Transport, root: str, stage_dir: str, step_dir: str) -> None:
    check_inside(root, stage_dir)
    res = transport.sh(_WRITE, stage_dir, stamp_path(stage_dir), step_dir)
    if res.exit_status == 3:
        raise FenceError(f"{stage_dir} on {transport.description}: {res.stdout.decode(errors='replace').strip()}")
    res.check(f"writing the install stamp of {stage_dir}")


def make_stage_root(transport: Transport, root: str, stage_root: str) -> None:
    """Create ``<root>/stage/<target>`` (DESTDIR's parent), refusing symlinks on the way."""
    check_inside(root, stage_root)
    res = transport.sh(_PARENT, root, stage_root)
    if res.exit_status == 3:
        raise FenceError(f"refused to create {stage_root} on {transport.description}: "
                         f"{res.stdout.decode(errors='replace').strip()}; the stage directories must be "
                         f"real directories inside the build root {root}")
    res.check(f"creating {stage_root}")


__all__ = ["make_stage_root", "stage_differs", "stamp_path", "write_stamp"]
