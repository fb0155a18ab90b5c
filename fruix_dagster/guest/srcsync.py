"""The stable build path: ``<build_root>/src`` kept in step with the source store.

A Fruix source store item gets a new path per version and every file in it
has mtime 1.  Building straight from it gives a new object tree per version
(FreeBSD keys objects on the source path) and make, deciding by mtime, could
never tell a changed file.  So builds run from ``<build_root>/src``, brought up
to date from the current store item the way ``git checkout`` updates a
developer's tree: a file is written (and its mtime becomes *now*) exactly when
its content, kind or executable bit changed; added files appear, removed files
and directories disappear, everything else is untouched.

Guest layout (all under the build root)::

    src/              the build path
    src.manifest      "<kind>\\t<sha256|link target|->\\t<path>" of src, sorted
    src.synced        "store <tree>" / "hash <store hash>" of the last completed sync
    src.syncing       present while src is being changed (phase 2 below)
    src.work/         scratch of a sync: manifests, lists, staged files
    src.new/          a first sync's full copy, renamed to src/ when complete

How a sync goes (one POSIX sh script, run as a detached step so that a dropped
connection or a restarted orchestrator re-attaches to it, under the build
root's lock so no build runs meanwhile):

1. Hash the store tree (``sha256 -r`` on FreeBSD, ``sha256sum`` elsewhere,
   batched with ``find -exec … {} +``) into a new manifest.  The old manifest
   is ``src.manifest`` — unless ``src.syncing`` exists or the manifest is
   missing: then src/ is hashed afresh (a *verify*), so an interrupted sync is
   finished correctly, never trusted.
2. Diff the manifests (awk) into what to remove, create and copy.
3. **Stage** every file to copy into ``src.work/stage`` (one ``tar -T`` pipe;
   ``tar -m`` gives the copies the current time).  This is the only step that
   needs disk space: if it fails (disk full) src/ has not been touched, so the
   previous tree stays usable, and the error says so.
4. Mark ``src.syncing``, remove, create, and ``mv`` the staged files into place
   (renames: no new space), install the new manifest and ``src.synced``,
   remove the mark.

Before staging the script waits until the clock has passed the second it
started in: the previous build finished before that, so every copied file is
strictly newer (in whole seconds, as bmake compares) than any object built
from its old content.  A first sync (no src/) copies the whole tree into
``src.new`` and renames it: a half-copied tree is never at the build path.

rsync would do most of this, but FreeBSD's base system has none; the
manifest makes a sync cost one hashing pass over the store item plus copies
of only what changed.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Callable

from fruix_dagster.build.make import MakeStep
from fruix_dagster.build.run import run_step
from fruix_dagster.errors import BuildError, SourceError
from fruix_dagster.guest.detached import DetachedSteps
from fruix_dagster.guest.fence import check_build_root
from fruix_dagster.guest.transport import Transport

SYNC_STEP = "srcsync"
SYNC_CODE_VERSION = "1"

# $1 build root, $2 store tree, $3 store hash.  Exit 3 refused, 4 unsyncable
# names, 5 copy failed (nothing changed), 6 failed while changing src (marked).
_SYNC = r'''
set -u
root=$1 from=$2 hash=$3
LC_ALL=C; export LC_ALL
dst=$root/src man=$root/src.manifest mark=$root/src.syncing work=$root/src.work new=$root/src.new
T=$(printf '\t')
t0=$(date +%s)
say() { printf 'fruix-srcsync: %s\n' "$*"; }
fail() { c=$1; shift; say "error: $*"; exit "$c"; }
[ -L "$root" ] && fail 3 "the build root $root is a symlink"
for p in "$dst" "$work" "$new" "$man" "$mark"; do
  [ -L "$p" ] && fail 3 "$p is a symlink; refusing to sync through it"
done
[ -d "$from" ] || fail 3 "no source tree at $from"
if command -v sha256 >/dev/null 2>&1; then H="sha256 -r"; s=68; else H=sha256sum; s=69; fi
rm -rf "$work" "$new" || fail 3 "cannot remove the leftovers $work $new"
mkdir -p "$work" || fail 5 "cannot create $work"

# manifest DIR OUT: every directory, symlink and file under DIR, sorted by path.
manifest() {
  bad=$(cd "$1" && find . \( -name "*$T*" -o -name '*\\*' -o -name '*
*' \) -print | head -n 1)
  [ -z "$bad" ] || fail 4 "the name $bad in $1 holds a tab, newline or backslash; such a tree cannot be synced"
  (
    cd "$1" || exit 1
    find . -type d -print | awk -v t="$T" 'length($0) > 2 { print "d" t "-" t substr($0, 3) }'
    find . -type l -print | while IFS= read -r p; do
      printf 'l\t%s\t%s\n' "$(readlink "$p")" "${p#./}"
    done
    find . -type f ! -perm -0100 -exec $H {} + > "$2.f" || exit 1
    find . -type f -perm -0100 -exec $H {} + > "$2.x" || exit 1
    awk -v t="$T" -v s=$s '{ print "f" t substr($0, 1, 64) t substr($0, s) }' "$2.f"
    awk -v t="$T" -v s=$s '{ print "x" t substr($0, 1, 64) t substr($0, s) }' "$2.x"
  ) > "$2.u" || return 1
  sort -t "$T" -k3 "$2.u" > "$2" && rm -f "$2.u" "$2.f" "$2.x"
}

manifest "$from" "$work/new.manifest" || fail 5 "cannot hash the store tree $from"

if [ ! -d "$dst" ]; then
  mode="full copy (no build path yet)"
  mkdir "$new" || fail 5 "cannot create $new"
  while [ "$(date +%s)" -le "$t0" ]; do sleep 1; done
  err=$( { { tar cf - -C "$from" . || echo "tar cf failed" >&2; } | tar xmf - -C "$new"; } 2>&1 )
  rc=$?
  case $err in *"tar cf failed"*) rc=1 ;; esac
  if [ $rc -ne 0 ]; then
    err=$(printf '%s\n' "$err" | tail -n 3 | tr '\n' ' ')
    rm -rf "$new" "$work"
    fail 5 "copying $from to $new failed ($err); no build path was created"
  fi
  find "$new" -type d -exec chmod u+w {} + || fail 5 "cannot make the directories of $new writable"
  n=$(awk -F "$T" '$1 != "d"' "$work/new.manifest" | wc -l)
  mv "$new" "$dst" || fail 5 "cannot rename $new to $dst"
  mv -f "$work/new.manifest" "$man" || fail 6 "cannot install $man"
  printf 'store %s\nhash %s\n' "$from" "$hash" > "$root/src.synced.tmp" && mv -f "$root/src.synced.tmp" "$root/src.synced"
  rm -rf "$work"
  say "mode=$mode added=$((n + 0)) changed=0 removed=0"
  exit 0
fi

if [ -e "$mark" ]; then mode="verify (an earlier sync was interrupted)"; old=$work/old.manifest
  manifest "$dst" "$old" || fail 6 "cannot hash the build path $dst"
elif [ ! -f "$man" ]; then mode="verify (no manifest of the build path)"; old=$work/old.manifest
  manifest "$dst" "$old" || fail 6 "cannot hash the build path $dst"
else mode=incremental; old=$man
fi

awk -F "$T" -v w="$work" '
  NR == FNR { k[$3] = $1; h[$3] = $2; next }
  {
    seen[$3] = 1
    if (!($3 in k)) {
      if ($1 == "d") print $3 > (w "/mkdir.list"); else { print $3 > (w "/copy.list"); add++ }
    } else if (k[$3] != $1 || h[$3] != $2) {
      if (k[$3] == "d" || $1 == "d" || k[$3] == "l") print $3 > (w "/rm.list")
      if ($1 == "d") print $3 > (w "/mkdir.list"); else print $3 > (w "/copy.list")
      if (k[$3] != "d" && $1 != "d") chg++
      else if ($1 == "d") rem++
      else add++
    }
  }
  END {
    for (p in k) if (!(p in seen)) { print p > (w "/rm.list"); if (k[p] != "d") rem++ }
    printf "%d %d %d\n", add, chg, rem > (w "/counts")
  }' "$old" "$work/new.manifest" || fail 5 "cannot compare the manifests"
read -r added changed removed < "$work/counts"
for f in mkdir.list copy.list rm.list; do [ -f "$work/$f" ] || : > "$work/$f"; done

if [ -s "$work/copy.list" ]; then
  mkdir "$work/stage" || fail 5 "cannot create $work/stage"
  sed 's:^:./:' "$work/copy.list" > "$work/copy.tar-list"
  while [ "$(date +%s)" -le "$t0" ]; do sleep 1; done
  # stderr is kept in memory: on a full disk no file can hold it
  err=$( { { tar cf - -C "$from" -T "$work/copy.tar-list" || echo "tar cf failed" >&2; } |
    tar xmf - -C "$work/stage"; } 2>&1 )
  rc=$?
  case $err in *"tar cf failed"*) rc=1 ;; esac
  if [ $rc -ne 0 ]; then
    err=$(printf '%s\n' "$err" | tail -n 3 | tr '\n' ' ')
    rm -rf "$work"
    fail 5 "staging the $added added and $changed changed files from $from failed ($err); the build path $dst was not changed and still holds the previous tree"
  fi
fi

printf '%s\n' "$hash" > "$mark.tmp" && mv -f "$mark.tmp" "$mark" || fail 5 "cannot write $mark"
sort -r "$work/rm.list" | while IFS= read -r p; do
  q=$dst/$p
  if [ -d "$q" ] && [ ! -L "$q" ]; then rm -rf -- "$q"; else rm -f -- "$q"; fi || exit 1
done || fail 6 "cannot remove files from $dst"
sort "$work/mkdir.list" | while IFS= read -r p; do mkdir -p -- "$dst/$p" || exit 1; done ||
  fail 6 "cannot create directories in $dst"
while IFS= read -r p; do mv -f -- "$work/stage/$p" "$dst/$p" || exit 1; done < "$work/copy.list" ||
  fail 6 "cannot move the staged files into $dst"
mv -f "$work/new.manifest" "$man" || fail 6 "cannot install $man"
printf 'store %s\nhash %s\n' "$from" "$hash" > "$root/src.synced.tmp" && mv -f "$root/src.synced.tmp" "$root/src.synced" ||
  fail 6 "cannot write $root/src.synced"
rm -f "$mark"
rm -rf "$work"
say "mode=$mode added=$added changed=$changed removed=$removed"
'''

# $1 build root.  Prints the synced store hash, or "syncing"/"none".
_STATE = r'''
if [ -e "$1/src.syncing" ]; then echo syncing
elif [ -f "$1/src.synced" ] && [ -d "$1/src" ]; then sed -n 's/^hash //p' "$1/src.synced"
else echo none; fi
'''

_RESULT = re.compile(r"^fruix-srcsync: mode=(.+) added=(\d+) changed=(\d+) removed=(\d+)$", re.M)


@dataclass(frozen=True)
class SyncResult:
    build_path: str
    store_tree: str
    mode: str
    added: int = 0
    changed: int = 0
    removed: int = 0
    duration_s: float = 0.0
    log_path: str = ""


def build_path(build_root: str) -> str:
    return f"{check_build_root(build_root)}/src"


def build_path_for(source_from: str, source_path: str | None, build_root: str) -> str:
    """Where make runs: a plain source directory in place (its mtimes are real and its
    path stable), a store item from the synced build path."""
    if source_from == "path" and source_path:
        return source_path
    return build_path(build_root)


def sync_spec(build_root: str, store_tree: str, store_hash: str) -> MakeStep:
    root = check_build_root(build_root)
    fp = hashlib.sha256(json.dumps([SYNC_CODE_VERSION, root, store_tree, store_hash]).encode()).hexdigest()
    return MakeStep(SYNC_STEP, ("sh", "-c", _SYNC, "sh", root, store_tree, store_hash), root, fp)


def synced_hash(transport: Transport, build_root: str) -> str:
    """The store hash the build path was last fully synced to ("syncing", "none")."""
    res = transport.sh(_STATE, check_build_root(build_root)).check("reading the build path's sync state")
    return res.stdout.decode().strip() or "none"


def require_synced(transport: Transport, build_root: str, store_hash: str) -> None:
    """Refuse to build from a build path that is not exactly the given store item."""
    found = synced_hash(transport, build_root)
    if found != store_hash:
        what = {"syncing": "a sync that did not finish", "none": "no completed sync"}.get(found, f"store {found[:12]}")
        raise SourceError(
            f"the build path {build_path(build_root)} on {transport.description} was expected to hold "
            f"source store {store_hash[:12]}, it holds {what}; re-materialize freebsd_source "
            f"to bring it up to date")


def sync_source(transport: Transport, steps: DetachedSteps, build_root: str, store_tree: str,
                store_hash: str, on_info: Callable[[str], None] | None = None) -> SyncResult:
    """Bring ``<build_root>/src`` up to date with ``store_tree`` (see the module doc)."""
    info = on_info or (lambda _m: None)
    dst = build_path(build_root)
    if synced_hash(transport, build_root) == store_hash:
        info(f"build path {dst} already holds source store {store_hash[:12]}")
        return SyncResult(dst, store_tree, "up to date")
    spec = sync_spec(build_root, store_tree, store_hash)
    try:
        outcome = run_step(steps, spec, on_info=info, force=True, busy_wait=3600.0)
    except BuildError as exc:
        raise _sync_error(steps, spec, dst, store_tree, exc) from None
    _, log = steps.poll(steps.step_dir(spec), 0, 1 << 20)
    m = _RESULT.search(log.decode("utf-8", "replace"))
    if m is None:
        raise SourceError(f"syncing {dst} from {store_tree} finished without its result line; "
                          f"see {outcome.log_path}")
    result = SyncResult(dst, store_tree, m.group(1), int(m.group(2)), int(m.group(3)), int(m.group(4)),
                        outcome.duration_s, outcome.log_path)
    info(f"build path {dst} synced from {store_tree}: {result.mode}, {result.added} added, "
         f"{result.changed} changed, {result.removed} removed")
    return result


def _sync_error(steps: DetachedSteps, spec: MakeStep, dst: str, store_tree: str,
                exc: BuildError) -> SourceError:
    _, log = steps.poll(steps.step_dir(spec), 0, 1 << 20)
    lines = [ln for ln in log.decode("utf-8", "replace").splitlines() if ln.startswith("fruix-srcsync: error:")]
    why = lines[-1].split("error: ", 1)[1] if lines else f"it stopped (exit status {exc.exit_status})"
    after = {5: "", 6: " The build path is marked as not synced; the next sync verifies it file by file."}
    return SourceError(
        f"syncing the build path {dst} from {store_tree} was expected to succeed, it failed: {why}."
        f"{after.get(exc.exit_status or 0, '')} Fix the cause (e.g. free space in the build root) "
        f"and re-materialize freebsd_source; log: {exc.log_path}")


def prepare_build_path(transport: Transport, steps: DetachedSteps, *, source_from: str,
                       build_root: str, source_root: str, store_hash: str,
                       on_info: Callable[[str], None] | None = None) -> dict[str, object]:
    """The build path for this source, synced if it is a store item; metadata for freebsd_source."""
    if source_from == "path":
        return {"build_path": source_root, "sync_mode": "in place (a plain source directory)"}
    r = sync_source(transport, steps, build_root, source_root, store_hash, on_info)
    if r.mode.startswith(("full copy", "verify")):
        (on_info or (lambda _m: None))(
            f"build path: {r.mode}; make rebuilds whatever it cannot prove current")
    return {"build_path": r.build_path, "sync_mode": r.mode, "sync_added": r.added,
            "sync_changed": r.changed, "sync_removed": r.removed,
            "sync_duration_s": float(r.duration_s)}
