#!/bin/sh
# tools/sample/main.sh TARGET -- entry point of the top-level Makefile.
# Run as "sh tools/sample/main.sh TARGET" from the top of the source tree,
# with the make variables in the environment (see ../../README).
# POSIX sh only: it must run under dash and FreeBSD's /bin/sh.

set -e
STEP=${1:-all}
. tools/sample/lib.sh
. tools/sample/freebsd.sh

case $STEP in
buildworld | buildkernel)
	setup
	knob_check
	release_init
	. "tools/sample/$STEP.sh"
	;;
installworld | distribution | installkernel)
	setup
	knob_check
	release_init
	. tools/sample/install.sh
	;;
*)
	cat <<USAGE
This is a small stand-in for a FreeBSD source tree (see README).  Targets:

  env MAKEOBJDIRPREFIX=/abs/obj make -jN buildworld
  env MAKEOBJDIRPREFIX=/abs/obj make -jN KERNCONF=GENERIC buildkernel
  env MAKEOBJDIRPREFIX=/abs/obj make DESTDIR=/abs/stage DB_FROM_SRC=yes installworld
  env MAKEOBJDIRPREFIX=/abs/obj make DESTDIR=/abs/stage DB_FROM_SRC=yes distribution
  env MAKEOBJDIRPREFIX=/abs/obj make KERNCONF=GENERIC DESTDIR=/abs/stage DB_FROM_SRC=yes installkernel
USAGE
	;;
esac
