#!/bin/sh
# tools/sample/lib.sh -- helpers shared by the sample tree's make targets.
# Sourced by main.sh with the source tree's top directory as cwd.
# POSIX sh only: it must run under dash and FreeBSD's /bin/sh.

HR=--------------------------------------------------------------

# What the world is made of; each directory holds a FreeBSD-style Makefile
# with one "VAR= value" per line (PROG, SRCS, LIBADD, BINDIR, BINMODE, LIB,
# BINOWN, BINGRP, PRECIOUSPROG, SHLIB_MAJOR, INCS, PRECIOUSLIB), read by
# mkvar below, never run by make.
BOOTSTRAP_TOOLS="tools/build/mkbuildinfo"
WORLD_LIBS="lib/libsample lib/libsampleutil"
WORLD_PROGS="bin/cat bin/echo sbin/init sbin/shutdown usr.bin/hello usr.bin/su usr.bin/wall stand/efi/loader"

die() {
	echo "ERROR: $*" >&2
	exit 1
}

# box LINE...: FreeBSD's framed ">>>" progress lines.
box() {
	echo "$HR"
	for _line in "$@"; do
		echo ">>> $_line"
	done
	echo "$HR"
}

# stage TEXT: a FreeBSD stage marker, preceded by a blank line.
stage() {
	echo
	box "$1"
}

now() {
	LC_ALL=C date
}

# is_defined NAME: FreeBSD's ".if defined(NAME)" for option knobs (KERNFAST,
# DB_FROM_SRC, NO_CLEAN, NO_ROOT, NO_FSCHG, WITHOUT_*): on whenever the variable is set, with
# any value -- "no" and the empty string included (Makefile.inc1,
# share/mk/bsd.mkopt.mk).  The top-level Makefile leaves these variables in
# the environment only when they were given to make.
is_defined() {
	case " ${SAMPLE_DEFINED:-} " in
	*" $1 "*) return 0 ;;
	esac
	eval "[ -n \"\${$1+set}\" ]"
}

# cleaning: FreeBSD's MK_CLEAN for buildworld and buildkernel, as
# tools/sample/freebsd.sh (mk_clean_init) decides it for the release: 13.x
# cleans unless defined(NO_CLEAN), 14.x unless defined(WITHOUT_CLEAN), 15.0
# and main only with defined(WITH_CLEAN).
cleaning() {
	[ "${MK_CLEAN:-yes}" = yes ]
}

# is_on VALUE: the sample's own knobs (SAMPLE_TIMESTAMP): on when set to
# anything but empty or "no".  FreeBSD's options use defined() above.
is_on() {
	case ${1:-} in
	'' | [Nn][Oo]) return 1 ;;
	esac
	return 0
}

# check_path NAME PATH: make targets cannot hold spaces, quotes, dollars, colons...
check_path() {
	case $2 in
	*[!A-Za-z0-9._/+,@~-]*)
		die "$1 ($2) contains characters the build cannot handle; use a path of letters, digits and ._/+,@~-" ;;
	esac
}

# setup: validates the common variables and sets SRCTOP, OBJTOP, CC, CFLAGS.
setup() {
	umask 022
	SRCTOP=$(pwd -P)
	check_path "the source directory" "$SRCTOP"
	TARGET=${TARGET:-amd64}
	TARGET_ARCH=${TARGET_ARCH:-$TARGET}
	case $TARGET.$TARGET_ARCH in
	amd64.amd64) ;;
	*) die "this sample tree only builds TARGET=amd64 TARGET_ARCH=amd64, not $TARGET.$TARGET_ARCH" ;;
	esac
	[ -n "${MAKEOBJDIRPREFIX:-}" ] ||
	    die "MAKEOBJDIRPREFIX is not set; set it in the environment (objects go to \$MAKEOBJDIRPREFIX$SRCTOP/$TARGET.$TARGET_ARCH)"
	case $MAKEOBJDIRPREFIX in
	/*) ;;
	*) die "MAKEOBJDIRPREFIX must be an absolute path, not '$MAKEOBJDIRPREFIX'" ;;
	esac
	_prefix=$(printf '%s\n' "$MAKEOBJDIRPREFIX" | sed 's:/*$::')
	OBJTOP=$_prefix$SRCTOP/$TARGET.$TARGET_ARCH
	WORLDTMP=$OBJTOP/tmp
	check_path MAKEOBJDIRPREFIX "$OBJTOP"
	# Objects must never land inside the source tree.
	_real=$_prefix
	if [ -d "$MAKEOBJDIRPREFIX" ]; then
		_real=$(cd "$MAKEOBJDIRPREFIX" && pwd -P | sed 's:/*$::')
	fi
	case "$_real$SRCTOP/" in
	"$SRCTOP"/*) die "MAKEOBJDIRPREFIX ($MAKEOBJDIRPREFIX) would put objects inside the source tree $SRCTOP" ;;
	esac
	CC=${CC:-cc}
	CFLAGS="-O2 -g0"
}

# make_jobs: N of "make -jN", from bmake's .MAKE.JOBS or GNU make's MAKEFLAGS.
make_jobs() {
	_j=${SAMPLE_JOBS:-}
	if [ -z "$_j" ]; then
		_j=$(printf ' %s \n' "${MAKEFLAGS:-}" |
		    sed -n 's/^.* -j *\([0-9][0-9]*\) .*$/\1/p')
	fi
	echo "$_j"
}

# built_in WHAT START: FreeBSD's "built in N seconds, ncpu: N, make -jN" line.
built_in() {
	_secs=$(($(date +%s) - $2))
	_ncpu=$(getconf _NPROCESSORS_ONLN 2>/dev/null || sysctl -n hw.ncpu 2>/dev/null || echo 1)
	_j=$(make_jobs)
	echo ">>> $1 built in $_secs seconds, ncpu: $_ncpu${_j:+, make -j$_j}"
}

# submake MAKEFILE TARGET: runs a generated makefile; -j and the jobserver
# come down through MAKEFLAGS because the top-level Makefile's recipe names
# $(MAKE).  bmake would chdir into $MAKEOBJDIRPREFIX/<cwd>, so unset it.
submake() {
	(
		unset MAKEOBJDIRPREFIX MAKEOBJDIR
		exec ${MAKE:-make} -r -f "$1" "$2"
	) || exit 1
}

# mkvar MAKEFILE VAR: the value of "VAR= value" (or ".PATH: dir").
mkvar() {
	awk -v v="$2" '
	v == ".PATH" && sub(/^\.PATH:[ \t]*/, "") { print; exit }
	{
		n = index($0, "=")
		if (n == 0)
			next
		k = substr($0, 1, n - 1)
		sub(/[ \t]+$/, "", k)
		if (k != v)
			next
		val = substr($0, n + 1)
		sub(/^[ \t]+/, "", val)
		sub(/[ \t]+$/, "", val)
		print val
		exit
	}' "$1"
}

# srcs DIR: the sources of a program or library directory (default PROG.c).
srcs() {
	_s=$(mkvar "$1/Makefile" SRCS)
	[ -n "$_s" ] || _s="$(mkvar "$1/Makefile" PROG).c"
	echo "$_s"
}

# hdrs DIR: the headers next to the sources, as make dependencies.
hdrs() {
	for _h in "$SRCTOP/$1"/*.h; do
		[ -f "$_h" ] && printf ' %s' "$_h"
	done
	return 0
}

# incdeps DIR SRC [GENDIR]: the headers SRC (in DIR) includes, as make
# dependencies -- what FreeBSD's compiler-written .depend files record
# (share/mk/bsd.dep.mk): "x.h" next to the source, <x.h> that a world library
# installs (its INCS) into WORLDTMP, and "buildinfo.h" generated in GENDIR.
# So a changed header rebuilds exactly the objects that include it.
incdeps() {
	_incs=" "
	for _l in $WORLD_LIBS; do
		_incs="$_incs$(mkvar "$SRCTOP/$_l/Makefile" INCS) "
	done
	sed -n 's/^[ 	]*#[ 	]*include[ 	]*\([<"][^">]*\)[">].*/\1/p' "$SRCTOP/$1/$2" |
	while IFS= read -r _i; do
		_n=${_i#?}
		case $_i in
		\"*)
			if [ -f "$SRCTOP/$1/$_n" ]; then
				printf ' %s/%s/%s' "$SRCTOP" "$1" "$_n"
			elif [ -n "${3:-}" ] && [ "$_n" = buildinfo.h ]; then
				printf ' %s/%s' "$3" "$_n"
			fi
			;;
		*)
			case $_incs in
			*" $_n "*) printf ' %s/usr/include/%s' "$WORLDTMP" "$_n" ;;
			esac
			;;
		esac
	done
	return 0
}

# write_if_changed FILE: stdin becomes FILE unless FILE already holds it, so
# unchanged generated files keep their mtime and incremental builds stay
# incremental.
write_if_changed() {
	cat >"$1.new"
	if cmp -s "$1.new" "$1"; then
		rm -f "$1.new"
	else
		mv -f "$1.new" "$1"
	fi
}

# rule_cc OBJ SRC FLAGS DEPS: compile SRC (relative to SRCTOP, so no
# absolute path reaches the object) into OBJ.
rule_cc() {
	printf '%s: %s/%s%s\n' "$1" "$SRCTOP" "$2" "$4"
	printf '\tcd %s && %s %s%s -c %s -o %s\n' "$SRCTOP" "$CC" "$CFLAGS" "${3:+ $3}" "$2" "$1"
}

# knob_check: the test knobs must be well-formed.
knob_check() {
	case ${SAMPLE_EXTRA_LOG:-0} in
	*[!0-9]*) die "SAMPLE_EXTRA_LOG must be a number of lines, not '$SAMPLE_EXTRA_LOG'" ;;
	esac
	case ${SAMPLE_SLEEP:-0} in
	*[!0-9.]* | .*) die "SAMPLE_SLEEP must be a number of seconds, not '$SAMPLE_SLEEP'" ;;
	esac
}

# midpoint SRC [DST]: where the knobs act, in the middle of a target: filler
# output (SAMPLE_EXTRA_LOG), silence (SAMPLE_SLEEP), failure (SAMPLE_FAIL,
# reported as if compiling SRC, or installing DESTDIR/DST from SRC's directory).
midpoint() {
	if [ "${SAMPLE_EXTRA_LOG:-0}" -gt 0 ] &&
	    { [ -z "${SAMPLE_EXTRA_LOG_STAGE:-}" ] || [ "$SAMPLE_EXTRA_LOG_STAGE" = "$STEP" ]; }; then
		awk -v n="$SAMPLE_EXTRA_LOG" -v t="$STEP" 'BEGIN {
			for (i = 1; i <= n; i++)
				printf("sample: filler output line %d of %d (%s, SAMPLE_EXTRA_LOG)\n", i, n, t)
		}'
	fi
	if [ -n "${SAMPLE_SLEEP:-}" ] && [ "${SAMPLE_SLEEP_STAGE:-buildworld}" = "$STEP" ]; then
		sleep "$SAMPLE_SLEEP"
	fi
	if [ "${SAMPLE_FAIL:-}" = "$STEP" ]; then
		case $STEP in
		buildworld) fail_compile "$1" "$SRCTOP/${1%/*}" ;;
		buildkernel) fail_compile "$1" "$KOBJ" ;;
		*) fail_install "$DESTDIR/${2:-$1}" "${1%/*}" ;;
		esac
		exit 1
	fi
}
