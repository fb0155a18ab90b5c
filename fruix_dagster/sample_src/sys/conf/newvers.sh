#!/bin/sh
# Stand-in for FreeBSD's sys/conf/newvers.sh: the version of this tree.
#   sh newvers.sh -v       print TYPE, BRANCH, REVISION, RELEASE and VERSION
#   sh newvers.sh -V VAR   print the value of one of them
# The sample build reads it (sourced, with no arguments) for vers.c.

TYPE="FreeBSD"
REVISION="15.0"
BRANCH="CURRENT"
RELEASE="${REVISION}-${BRANCH}"
VERSION="${TYPE} ${RELEASE}"

case "${1:-}" in
-v)
	for v in TYPE BRANCH REVISION RELEASE VERSION; do
		eval val=\$$v
		echo "$v=\"$val\""
	done
	exit 0
	;;
-V)
	case "${2:-}" in
	TYPE|BRANCH|REVISION|RELEASE|VERSION) eval echo \"\$$2\"; exit 0 ;;
	*) echo "newvers.sh: unknown variable '${2:-}'" >&2; exit 1 ;;
	esac
	;;
esac
