"""A bounded build root: remove what no current target needs.

Kept under ``<build_root>``:

* ``obj/<build path>/<TARGET>.<TARGET_ARCH>`` for every current target on
  this guest (the build path as make sees it, ``pwd -P``), and the
  directories leading to them.  Everything else under ``obj/`` goes: object
  trees of store items the guest no longer declares (built before the stable
  build path existed), of targets that were removed, of other build paths.
* ``stage/<target>/world`` and ``stage/<target>/kernel`` of every current
  target on this guest, with their ``.METALOG`` (a NO_ROOT install's owners,
  modes and flags) and ``.installed`` (:mod:`fruix_dagster.guest.stage_stamp`)
  files.  The stages of targets no longer declared on this guest, anything
  else in ``stage/``, and every ``stage-*`` or ``artifact-*`` entry (the
  harness's layout, and the shared ``stage-world``/``stage-kernel`` of a build
  root made before the stages were per target) go.
* per step name, the step record that ``steps/<name>.current`` names and the
  newest ``build.keep_steps`` records in all (by their ``started`` time).

Nothing else (``src/``, the sync's files, the lock) is touched.  Deletes go
through :func:`fruix_dagster.guest.fence.remove_tree`: inside the build root,
re-checked physically on the guest, never through a symlink.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from fruix_dagster.graph import STAGES, spec
from fruix_dagster.guest.fence import check_build_root, check_inside, remove_tree
from fruix_dagster.guest.transport import Transport

# $1 root, $2 keep_steps, $3 the current targets' names, $4 the entries kept in
# stage/<target>/ (both newline-separated), then pairs: build path, TARGET.TARGET_ARCH.
# Prints "<kind> <KiB> <path>" per removable entry (kind obj|stage|step|link).
_PLAN = r'''
root=$1 keep=$2 targets=$3 kept=$4; shift 4
LC_ALL=C; export LC_ALL
[ -d "$root" ] && [ ! -L "$root" ] || exit 0
NL='
'
keeps= anc=
while [ $# -ge 2 ]; do
  p=$(cd "$1" 2>/dev/null && pwd -P) || p=$1
  k=$root/obj$p/$2
  keeps="$keeps$k$NL"
  a=${k%/*}
  while [ "${#a}" -ge "${#root}" ] && [ "$a" != "$root" ]; do anc="$anc$a$NL"; a=${a%/*}; done
  shift 2
done
size() { du -sk "$1" 2>/dev/null | awk '{ print $1 }'; }
is_in() { case "$NL$2" in *"$NL$1$NL"*) return 0 ;; esac; return 1; }
list() {
  for c in "$1"/* "$1"/.[!.]* "$1"/..?*; do
    [ -e "$c" ] || [ -L "$c" ] || continue
    printf '%s\n' "$c"
  done
}
if [ -d "$root/obj" ] && [ ! -L "$root/obj" ]; then
  printf '%s' "$root/obj$NL$anc" | sort -u | while IFS= read -r a; do
    [ -d "$a" ] && [ ! -L "$a" ] || continue
    list "$a" | while IFS= read -r c; do
      if is_in "$c" "$keeps" || { is_in "$c" "$anc" && [ -d "$c" ] && [ ! -L "$c" ]; }; then continue; fi
      if [ -L "$c" ]; then echo "link 0 $c"; else echo "obj $(size "$c") $c"; fi
    done
  done
fi
gone() { if [ -L "$1" ]; then echo "link 0 $1"; else echo "stage $(size "$1") $1"; fi; }
for c in "$root"/stage-* "$root"/artifact-*; do
  [ -e "$c" ] || [ -L "$c" ] || continue
  gone "$c"
done
if [ -L "$root/stage" ] || { [ -e "$root/stage" ] && [ ! -d "$root/stage" ]; }; then gone "$root/stage"
elif [ -d "$root/stage" ]; then
  list "$root/stage" | while IFS= read -r c; do
    if is_in "${c##*/}" "$targets$NL" && [ -d "$c" ] && [ ! -L "$c" ]; then
      list "$c" | while IFS= read -r e; do
        if is_in "${e##*/}" "$kept$NL" && [ ! -L "$e" ]; then continue; fi
        gone "$e"
      done
    else
      gone "$c"
    fi
  done
fi
if [ -d "$root/steps" ] && [ ! -L "$root/steps" ]; then
  for d in "$root"/steps/*-*; do
    [ -d "$d" ] && [ ! -L "$d" ] || continue
    b=${d##*/}; name=${b%-*}
    s=$(cat "$d/started" 2>/dev/null) || s=0
    cur=$(cat "$root/steps/$name.current" 2>/dev/null) || cur=
    [ "$cur" = "$d" ] && s=9999999999
    printf '%s %s %s\n' "$name" "${s:-0}" "$d"
  done | sort -k1,1 -k2,2nr | awk -v k="$keep" '{ n[$1]++; if (n[$1] > k) print $3 }' |
  while IFS= read -r d; do echo "step $(size "$d") $d"; done
fi
'''


@dataclass(frozen=True)
class Removal:
    kind: str        # obj | stage | step | link (a symlink, removed as such)
    kib: int
    path: str


#: what ``stage/<target>/`` holds: each stage, its NO_ROOT METALOG and its install stamp
STAGE_ENTRIES: tuple[str, ...] = tuple(
    name for asset in STAGES for d in (spec(asset).stage_dir,) for name in (d, f"{d}.METALOG", f"{d}.installed"))


def plan_gc(transport: Transport, build_root: str, keep: Sequence[tuple[str, str]],
            keep_steps: int, targets: Sequence[str]) -> list[Removal]:
    """What a gc would remove.  ``keep``: (build path, "TARGET.TARGET_ARCH") of every current
    target; ``targets``: their names (whose ``stage/<name>/`` stays)."""
    root = check_build_root(build_root)
    if keep_steps < 1:
        raise ValueError("keep_steps must be at least 1")
    args = [a for pair in keep for a in pair]
    res = transport.sh(_PLAN, root, str(keep_steps), "\n".join(targets), "\n".join(STAGE_ENTRIES),
                       *args).check(f"listing what the gc of {root} would remove")
    out = []
    for line in res.stdout.decode("utf-8", "replace").splitlines():
        kind, kib, path = line.split(" ", 2)
        check_inside(root, path)
        out.append(Removal(kind, int(kib) if kib.isdigit() else 0, path))
    return out


def collect(transport: Transport, build_root: str, keep: Sequence[tuple[str, str]], keep_steps: int,
            *, targets: Sequence[str], dry_run: bool = False) -> list[Removal]:
    """Remove (or with ``dry_run`` only list) everything no current target needs."""
    removals = plan_gc(transport, build_root, keep, keep_steps, targets)
    if not dry_run:
        for r in removals:
            if r.kind == "link":   # the link itself, never what it points to
                transport.sh('[ -L "$1" ] && rm -f -- "$1"', r.path)
            else:
                remove_tree(transport, check_build_root(build_root), r.path)
    return removals


def describe(removals: Sequence[Removal]) -> str:
    if not removals:
        return "nothing to remove"
    total = sum(r.kib for r in removals)
    return (f"{len(removals)} entries, {total / 1024:.1f} MiB: "
            + ", ".join(f"{r.path} ({r.kind}, {r.kib} KiB)" for r in removals))


def object_tree(transport: Transport, build_root: str, build_path: str, target_arch: str) -> tuple[str, bool]:
    """The target's object tree (as make names it: the physical build path) and whether it exists."""
    root = check_build_root(build_root)
    res = transport.sh('p=$(cd "$2" 2>/dev/null && pwd -P) || p=$2; printf "%s" "$1/obj$p/$3"; '
                       '[ -d "$1/obj$p/$3" ]', root, build_path, target_arch)
    return res.stdout.decode("utf-8", "replace"), res.ok
