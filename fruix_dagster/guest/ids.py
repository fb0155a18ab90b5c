"""User and group names → ids on a guest, as its install and its tar see them.

A NO_ROOT stage's METALOG names owners (``uname=root gname=operator``); the
manifest records ids and names as a root install streamed by the guest's tar
would: the id the install would chown to (the running system's, or with
DB_FROM_SRC the source tree's ``etc/master.passwd`` / ``etc/group`` for a
name the system lacks, as the sample tree's install does), and the guest's
own name for that id (what tar writes), ``""`` if it has none.
"""

from __future__ import annotations

from typing import Iterable

from fruix_dagster.errors import GuestError
from fruix_dagster.guest.transport import Transport

# $1: the etc/ directory of the source tree; then u:NAME or g:NAME words.
# Prints one line per word: KIND NAME ID CANONICAL ("-" for unknown).
_RESOLVE = r'''
etc=$1
shift
for a in "$@"; do
	n=${a#?:}
	i= c=
	case $a in
	u:*)
		i=$(id -u "$n" 2>/dev/null) || i=
		[ -n "$i" ] || i=$(awk -F: -v n="$n" '$1 == n { print $3; exit }' "$etc/master.passwd" 2>/dev/null)
		[ -z "$i" ] || c=$(id -un "$i" 2>/dev/null) || c=
		;;
	g:*)
		i=$(getent group "$n" 2>/dev/null | awk -F: '{ print $3; exit }')
		[ -n "$i" ] || i=$(awk -F: -v n="$n" '$1 == n { print $3; exit }' "$etc/group" 2>/dev/null)
		[ -z "$i" ] || c=$(getent group "$i" 2>/dev/null | awk -F: '{ print $1; exit }')
		;;
	esac
	printf '%s %s %s %s\n' "${a%%:*}" "$n" "${i:--}" "${c:--}"
done
'''


def resolve_ids(transport: Transport, etc_dir: str, users: Iterable[str], groups: Iterable[str]
                ) -> dict[tuple[str, str], tuple[int, str]]:
    words = [f"u:{u}" for u in sorted(set(users))] + [f"g:{g}" for g in sorted(set(groups))]
    res = transport.sh(_RESOLVE, etc_dir, *words).check(f"looking up users and groups on {transport.description}")
    out: dict[tuple[str, str], tuple[int, str]] = {}
    unknown = []
    for line in res.stdout.decode("utf-8", "replace").splitlines():
        kind, name, ident, canonical = line.split(" ")
        if not ident.isdigit():
            unknown.append(f"{'user' if kind == 'u' else 'group'} {name}")
            continue
        out[(kind, name)] = (int(ident), "" if canonical == "-" else canonical)
    if unknown or len(out) != len(words):
        raise GuestError(
            f"the METALOG names {', '.join(unknown) or 'users or groups'} that neither "
            f"{transport.description} nor {etc_dir}/master.passwd and group know; expected every owner of "
            "the stage to exist there (as install -N requires); fix the source tree's etc/ or the guest")
    return out
