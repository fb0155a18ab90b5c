"""When ``KERNFAST`` is safe for a kernel build, and the record that proves it.

FreeBSD's ``buildkernel`` with ``KERNFAST`` defined skips config(8) (and the
clean and obj stages; Makefile.inc1).  That is only correct when the kernel
object directory ``$MAKEOBJDIRPREFIX<src>/<TARGET>.<TARGET_ARCH>/sys/<KERNCONF>``
was configured *in this build path* from the *same config inputs*: the
KERNCONF file and everything it includes (and the ``DEFAULTS`` file config(8)
reads from the same directory), ``sys/conf/files*``, ``sys/conf/options*``,
``sys/<TARGET>/conf/files*`` and ``sys/<TARGET>/conf/options*``.  Anything
else — first build, wiped build root, another source path, a changed config
input, ``clean`` — is a full ``buildkernel``, and the reason is said.

The proof lives on the guest, next to the object tree it describes, so a
wiped build root also wipes it: ``<build_root>/kernconf/<TARGET>.<ARCH>-<KERNCONF>``
holds the build path and the digest of the config inputs of the last
``buildkernel`` that ran config(8) and succeeded.  It is removed before such
a build starts and written after it succeeded.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import re
from dataclasses import dataclass

from fruix_dagster.guest.fence import check_build_root
from fruix_dagster.guest.hashing import guest_sha256
from fruix_dagster.guest.transport import Transport

# $1 source root, $2 TARGET, $3 KERNCONF.  Lists the existing config inputs
# that are globs (relative paths, one per line).
_LIST_INPUTS = r'''
cd "$1" || exit 1
for f in sys/conf/files* sys/conf/options* "sys/$2/conf/files"* "sys/$2/conf/options"* \
         "sys/$2/conf/DEFAULTS"; do
  [ -f "$f" ] && printf '%s\n' "$f"
done
exit 0
'''

# $1 obj prefix, $2 build path, $3 TARGET.TARGET_ARCH, $4 KERNCONF.
# Exit 0 when the kernel object directory holds a configured kernel (its Makefile).
_CONFIGURED = r'''
src=$(cd "$2" 2>/dev/null && pwd -P) || exit 1
[ -f "$1$src/$3/sys/$4/Makefile" ]
'''

_INCLUDE = re.compile(r'^\s*include\s+"?([^"\s#]+)"?', re.M)
_MAX_INCLUDES = 64


@dataclass(frozen=True)
class KernfastDecision:
    kernfast: bool
    reason: str
    inputs_digest: str
    record_path: str


def record_path(build_root: str, target: str, target_arch: str, kernconf: str) -> str:
    root = check_build_root(build_root)
    return f"{root}/kernconf/{target}.{target_arch}-{kernconf}"


def config_inputs(transport: Transport, source_root: str, target: str, kernconf: str) -> dict[str, str]:
    """sha256 of every config input of KERNCONF, by path relative to source_root."""
    conf_dir = f"sys/{target}/conf"
    res = transport.sh(_LIST_INPUTS, source_root, target, kernconf).check(
        f"listing the kernel config inputs in {source_root}")
    paths = set(res.stdout.decode("utf-8", "replace").splitlines())
    # the KERNCONF file and its includes, followed transitively
    pending, seen = [f"{conf_dir}/{kernconf}"], set()
    while pending and len(seen) < _MAX_INCLUDES:
        rel = pending.pop()
        if rel in seen:
            continue
        seen.add(rel)
        probe = transport.sh('[ -f "$1/$2" ] && cat -- "$1/$2"', source_root, rel)
        if not probe.ok:
            continue   # a missing include: config(8) fails, and so does the full build
        paths.add(rel)
        for name in _INCLUDE.findall(probe.stdout.decode("utf-8", "replace")):
            inc = name if name.startswith("/") else posixpath.normpath(f"{conf_dir}/{name}")
            if not inc.startswith("/") and not inc.startswith(".."):
                pending.append(inc)
    return guest_sha256(transport, source_root, sorted(paths))


def inputs_digest(inputs: dict[str, str]) -> str:
    blob = json.dumps(sorted(inputs.items()), separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def decide(transport: Transport, *, build_root: str, source_root: str, target: str,
           target_arch: str, kernconf: str, clean: bool) -> KernfastDecision:
    """Whether buildkernel may pass KERNFAST, and why (or why not)."""
    digest = inputs_digest(config_inputs(transport, source_root, target, kernconf))
    path = record_path(build_root, target, target_arch, kernconf)

    def no(reason: str) -> KernfastDecision:
        return KernfastDecision(False, f"full buildkernel: {reason}", digest, path)

    if clean:
        return no("a clean build was asked for")
    res = transport.sh('[ -f "$1" ] && cat -- "$1"', path)
    if not res.ok:
        return no(f"no record of a configured {kernconf} kernel in this build root ({path})")
    fields = dict(line.split(" ", 1) for line in res.stdout.decode("utf-8", "replace").splitlines()
                  if " " in line)
    if fields.get("build_path") != source_root:
        return no(f"the kernel was configured in {fields.get('build_path')}, not in {source_root}")
    if fields.get("inputs") != digest:
        return no("the kernel config inputs (KERNCONF and its includes, sys/conf/files*, "
                  "options*) changed since the kernel was configured")
    if not transport.sh(_CONFIGURED, f"{check_build_root(build_root)}/obj", source_root,
                        f"{target}.{target_arch}", kernconf).ok:
        return no("the kernel object directory holds no configured kernel")
    return KernfastDecision(True, f"KERNFAST=yes: {kernconf} was configured in {source_root} "
                                  f"from the same config inputs", digest, path)


def forget(transport: Transport, decision: KernfastDecision) -> None:
    """Before a buildkernel that runs config(8): the old proof no longer holds."""
    transport.run(["rm", "-f", decision.record_path]).check(f"removing {decision.record_path}")


def remember(transport: Transport, decision: KernfastDecision, source_root: str) -> None:
    """After a successful buildkernel that ran config(8)."""
    transport.run(["mkdir", "-p", posixpath.dirname(decision.record_path)]).check(
        f"creating {posixpath.dirname(decision.record_path)}")
    transport.write_file(decision.record_path,
                         f"build_path {source_root}\ninputs {decision.inputs_digest}\n".encode())
