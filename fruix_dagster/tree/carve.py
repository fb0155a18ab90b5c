"""Carving a slice: copy the selected entries of a staged tree, on the guest.

The entries (with their ancestor directories, as ``slices.select`` gives
them) travel as a NUL-separated list file; one ``tar | tar`` pipeline on the
guest copies exactly those, preserving modes and symlinks.  Works with bsdtar
and GNU tar (``--null --no-recursion -T``).
"""

from __future__ import annotations

from fruix_dagster.errors import TreeError
from fruix_dagster.guest.fence import check_inside, remove_tree
from fruix_dagster.guest.transport import Transport
from fruix_dagster.tree.manifest import Manifest, manifest_from_tar

# $1 stage dir, $2 list file, $3 destination, $4 status file for the reading tar
_COPY = r'''
mkdir -p "$3" || exit 1
(cd "$1" && tar cf - --null --no-recursion -T "$2"; echo $? > "$4") | (cd "$3" && tar xpf -) || exit 1
[ "$(cat "$4")" = 0 ]
'''


def carve(transport: Transport, build_root: str, stage_dir: str, dest_dir: str,
          selection: Manifest) -> Manifest:
    """Recreate dest_dir holding exactly ``selection`` from stage_dir; return its manifest."""
    check_inside(build_root, dest_dir)
    remove_tree(transport, build_root, dest_dir)
    list_file = f"{dest_dir}.list"
    status_file = f"{dest_dir}.status"
    check_inside(build_root, list_file)
    if len(selection):
        transport.write_file(list_file, b"".join(e.path + b"\0" for e in selection))
        transport.sh(_COPY, stage_dir, list_file, dest_dir, status_file).check(
            f"carving {dest_dir} from {stage_dir}")
        remove_tree(transport, build_root, list_file)
        remove_tree(transport, build_root, status_file)
    else:
        transport.run(["mkdir", "-p", dest_dir]).check(f"creating {dest_dir}")
    with transport.tar_stream(dest_dir) as stream:
        carved = manifest_from_tar(stream)
    if carved != selection:
        missing = sorted(set(e.path for e in selection) ^ set(e.path for e in carved))[:5]
        raise TreeError(
            f"carving {dest_dir}: expected the {len(selection)} selected entries of {stage_dir}, "
            f"found {len(carved)} (differing: {missing or 'modes or contents'}); the stage changed "
            f"while carving — re-materialize it")
    return carved
