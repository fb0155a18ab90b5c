"""Phase 20.1 development-environment checks, run on the guest before any build.

One portable sh script reports every problem at once, one ``missing: …``
line each, so a failure names each missing piece.  A ``plain`` (non-Fruix)
guest gets the same tool, make, root, clock, filemon and free-space checks,
only not the Fruix profile ones.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from fruix_dagster.errors import GuestError
from fruix_dagster.guest.transport import Transport

PROFILE = "/run/current-system/development-profile"
DEVELOPMENT = "/run/current-development"

#: FreeBSD's top-level Makefile runs the build with this PATH (src/Makefile:
#: "PATH= /sbin:/bin:/usr/sbin:/usr/bin"), whatever the caller's PATH is.
BUILD_PATH = "/sbin:/bin:/usr/sbin:/usr/bin"
#: The oldest bmake the current src tree's makefiles accept without first
#: "Building an up-to-date bmake(1)" (share/mk/src.sys.env.mk tests 20170301).
MIN_BMAKE = 20170301
#: what the build runs from BUILD_PATH
BUILD_TOOLS = ("cc", "c++", "ld", "tar")

# $1 fruix|plain, $2 build root, $3 min free KiB, $4 make, $5 source root
# (or ""), $6 root needed (yes|no), $7 filemon needed (yes|no), $8 host
# epoch seconds, rest: tools the build runs from BUILD_PATH.
_CHECK = r"""
system=$1 root=$2 need=$3 mk=$4 src=$5 needroot=$6 filemon=$7 hostnow=$8; shift 8
if [ "$system" = fruix ]; then
  [ -d /run/current-system/development-profile ] || echo "missing: /run/current-system/development-profile (not a development-enabled Fruix system)"
  [ -e /run/current-development ] || echo "missing: /run/current-development"
  prof=$(cd /run/current-system/development-profile 2>/dev/null && pwd -P) || prof=
  for p in /usr/include /usr/share/mk; do
    real=$(cd "$p" 2>/dev/null && pwd -P) || { echo "missing: $p"; continue; }
    case "$real/" in
      "$prof"/*) ;;
      *) echo "missing: $p resolving into the development profile (it resolves to $real)" ;;
    esac
  done
fi
for tool in "$@"; do
  PATH=BUILD_PATH_HERE command -v "$tool" >/dev/null 2>&1 ||
    echo "missing: tool $tool on the build's PATH (BUILD_PATH_HERE, which FreeBSD's Makefile sets)"
done
if ! command -v "$mk" >/dev/null 2>&1; then
  echo "missing: tool $mk (build.make) on PATH"
elif [ -n "$src" ] && [ -f "$src/Makefile.inc1" ]; then
  v=$("$mk" -f /dev/null -V MAKE_VERSION 2>/dev/null) || v=
  case "$v" in
    [0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9]*) [ "${v%%[!0-9]*}" -ge MIN_BMAKE_HERE ] ||
        echo "missing: a bmake of MIN_BMAKE_HERE or later as $mk (it is bmake $v)" ;;
    *) echo "missing: bmake as $mk (FreeBSD's Makefile needs bmake; $mk -V MAKE_VERSION printed '${v:-nothing}')" ;;
  esac
fi
if [ "$needroot" = yes ] && [ "$(id -u)" != 0 ]; then
  echo "missing: root for the staged installs (running as $(id -un); set NO_ROOT in make_vars to stage without root)"
fi
if [ "$filemon" = yes ] && [ ! -c /dev/filemon ]; then
  echo "missing: /dev/filemon for WITH_META_MODE (kldload filemon, or drop WITH_META_MODE)"
fi
now=$(date +%s)
if [ $((now + 86400)) -lt "$hostnow" ]; then
  echo "missing: a clock that is not in the past (the guest says $(date -u), a day or more behind this host's; make compares mtimes)"
fi
dir=$root
while [ ! -d "$dir" ]; do dir=$(dirname "$dir"); done
free=$(df -k -P "$dir" | awk 'NR==2 {print $4}')
if [ -z "$free" ]; then echo "missing: free-space figure from df -k -P $dir"
elif [ "$free" -lt "$need" ]; then echo "missing: free space: $free KiB free at $dir, $need KiB needed"
fi
echo "free_kib $free"
""".replace("BUILD_PATH_HERE", BUILD_PATH).replace("MIN_BMAKE_HERE", str(MIN_BMAKE))


@dataclass(frozen=True)
class DevEnvReport:
    problems: tuple[str, ...]
    free_kib: int | None

    @property
    def ok(self) -> bool:
        return not self.problems


def check_development_environment(transport: Transport, *, system: str, build_root: str,
                                  min_free_gib: float, make: str = "make", source_root: str = "",
                                  need_root: bool = True, meta_mode: bool = False,
                                  tools: tuple[str, ...] = BUILD_TOOLS,
                                  host_now: float | None = None) -> DevEnvReport:
    """Every missing piece at once: the Fruix development profile (``fruix``
    guests), ``cc``, ``c++``, ``ld`` and ``tar`` on the build's PATH, ``make``
    (a bmake new enough when ``source_root`` is a real FreeBSD tree, i.e. has
    Makefile.inc1), root for staged installs, /dev/filemon with META_MODE, a
    guest clock not behind this host's, free space."""
    need_kib = int(min_free_gib * 1024 * 1024)
    res = transport.sh(_CHECK, system, build_root, str(need_kib), make, source_root,
                       "yes" if need_root else "no", "yes" if meta_mode else "no",
                       str(int(time.time() if host_now is None else host_now)), *tools)
    res.check(f"checking the development environment on {transport.description}")
    problems, free = [], None
    for line in res.stdout.decode("utf-8", "replace").splitlines():
        if line.startswith("missing: "):
            problems.append(line[len("missing: "):])
        elif line.startswith("free_kib "):
            value = line.split()[1] if len(line.split()) > 1 else ""
            free = int(value) if value.isdigit() else None
    return DevEnvReport(tuple(problems), free)


def require_development_environment(transport: Transport, **kwargs) -> DevEnvReport:
    report = check_development_environment(transport, **kwargs)
    if not report.ok:
        raise GuestError(
            f"{transport.description} is not ready to build: expected a development-enabled "
            f"guest with enough space, found these missing:\n  - " + "\n  - ".join(report.problems)
            + "\nfix the guest (or set system = \"plain\" for a non-Fruix guest) and re-run")
    return report


def needs_root(build_settings) -> bool:
    """Staged installs chown and chflags (bsd.prog.mk), which needs root,
    unless they run with NO_ROOT (then a METALOG): ``no_root_user`` or NO_ROOT
    in a step's make variables."""
    if getattr(build_settings, "no_root_user", ""):
        return False
    return not any(name == "NO_ROOT" for table in (build_settings.make_vars, build_settings.world_make_vars,
                                                   build_settings.kernel_make_vars) for name, _ in table)
