"""Phase 20.1 development-environment checks, run on the guest before any build.

One portable sh script reports every problem at once, one ``missing: …``
line each, so a failure names each missing piece.  A ``plain`` (non-Fruix)
guest gets only the tool and free-space checks.
"""

from __future__ import annotations

from dataclasses import dataclass

from fruix_dagster.errors import GuestError
from fruix_dagster.guest.transport import Transport

PROFILE = "/run/current-system/development-profile"
DEVELOPMENT = "/run/current-development"

# $1 fruix|plain, $2 build root, $3 min free KiB, rest: tools
_CHECK = r'''
system=$1 root=$2 need=$3; shift 3
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
  command -v "$tool" >/dev/null 2>&1 || echo "missing: tool $tool on PATH"
done
dir=$root
while [ ! -d "$dir" ]; do dir=$(dirname "$dir"); done
free=$(df -k -P "$dir" | awk 'NR==2 {print $4}')
if [ -z "$free" ]; then echo "missing: free-space figure from df -k -P $dir"
elif [ "$free" -lt "$need" ]; then echo "missing: free space: $free KiB free at $dir, $need KiB needed"
fi
echo "free_kib $free"
'''


@dataclass(frozen=True)
class DevEnvReport:
    problems: tuple[str, ...]
    free_kib: int | None

    @property
    def ok(self) -> bool:
        return not self.problems


def check_development_environment(transport: Transport, *, system: str, build_root: str,
                                  min_free_gib: float, make: str = "make") -> DevEnvReport:
    need_kib = int(min_free_gib * 1024 * 1024)
    tools = ["cc", make, "ld", "tar"]
    res = transport.sh(_CHECK, system, build_root, str(need_kib), *tools)
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
