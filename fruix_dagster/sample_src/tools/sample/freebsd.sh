#!/bin/sh
# tools/sample/freebsd.sh -- what FreeBSD's own makefiles and make(1) print,
# release by release.  Sourced by main.sh after lib.sh.
# POSIX sh only: it must run under dash and FreeBSD's /bin/sh.
#
# SAMPLE_RELEASE picks the wording (default: REVISION of sys/conf/newvers.sh):
#   15 (also 15.0, 16, main)  Makefile.inc1 / Makefile.libcompat of main and
#                             releng/15.0, bmake 20250804 (contrib/bmake/VERSION)
#   14                        stable/14 (sobomax/freebsd14_vendor Makefile.inc1)
#   13                        13.x (freebsd-src Makefile.inc1 of 13-CURRENT,
#                             HardenedBSD-stable Makefile.libcompat)
# Each function below names the rule it imitates.

release_init() {
	_rel=${SAMPLE_RELEASE:-$(sh sys/conf/newvers.sh -V REVISION)}
	case $_rel in
	main | 1[5-9] | 1[5-9].*) REL=15 ;;
	14 | 14.*) REL=14 ;;
	13 | 13.*) REL=13 ;;
	*) die "SAMPLE_RELEASE must be 13, 14, 15 or main, not '$_rel'" ;;
	esac
	read_confs
	mk_clean_init
}

# conf_assignments FILE: the "NAME=value", "NAME?=value", "NAME+=value"
# lines of a make.conf-style file, as "NAME OP VALUE" (comments and
# conditionals are not understood; the sample's files are plain).
conf_assignments() {
	[ -f "$1" ] || return 0
	sed -n 's/^[ 	]*\([A-Za-z_][A-Za-z0-9_]*\)[ 	]*\([?+]*=\)[ 	]*\(.*\)$/\1 \2 \3/p' "$1"
}

# read_confs: the files share/mk reads before any target runs, in its
# order: SRC_ENV_CONF (src.sys.env.mk, default /etc/src-env.conf),
# __MAKE_CONF (sys.mk, /etc/make.conf), SRCCONF (src.sys.mk,
# /etc/src.conf, or on 15 ${SRCTOP}/src.conf when the tree has one).  A knob assigned there is defined unless the command line
# or environment defined it already (those win in make).  CFLAGS from
# make.conf reach every compile.  src.conf may not set environment-only
# options (src.sys.mk: __ENV_ONLY_OPTIONS).
read_confs() {
	_env_conf=${SRC_ENV_CONF-/etc/src-env.conf}
	_make_conf=${__MAKE_CONF-/etc/make.conf}
	# src.sys.mk of main/15: ".if exists(${SRCTOP}/src.conf) SRCCONF?=
	# ${SRCTOP}/src.conf .else SRCCONF?= /etc/src.conf": a src.conf at the
	# top of the source tree replaces /etc/src.conf, and a SRCCONF given in
	# the environment or on the command line replaces both (?=).  13.x and
	# 14.x read only SRCCONF?= /etc/src.conf.
	if [ "$REL" = 15 ] && [ -f "$SRCTOP/src.conf" ]; then
		_src_conf=${SRCCONF-$SRCTOP/src.conf}
	else
		_src_conf=${SRCCONF-/etc/src.conf}
	fi
	for _f in "$_env_conf" "$_make_conf" "$_src_conf"; do
		[ -n "$_f" ] || continue
		_list=$(conf_assignments "$_f")
		[ -n "$_list" ] || continue
		while read -r _name _op _value; do
			case $_name in
			CFLAGS)
				if [ "$_op" = "+=" ]; then CFLAGS="$CFLAGS $_value"; else CFLAGS=$_value; fi
				continue ;;
			WITH_META_MODE | WITHOUT_META_MODE | WITH_AUTO_OBJ | WITHOUT_AUTO_OBJ | \
			    WITH_DIRDEPS_BUILD | WITHOUT_DIRDEPS_BUILD)
				if [ "$_f" = "$_src_conf" ]; then
					_opt=${_name#WITH_}
					_opt=${_opt#OUT_}
					MK_DIAG_FILE=share/mk/src.sys.mk mk_diag error 32 "Option $_opt may only be defined in $_env_conf, environment, or make argument, not $_src_conf."
				fi ;;
			esac
			if ! is_defined "$_name"; then
				eval "$_name=\$_value"
				export "$_name"
			fi
		done <<EOF
$_list
EOF
	done
}

# mk_diag KIND LINE MESSAGE: a .info/.warning/.error line of make[1] reading
# Makefile.inc1.  bmake 20250804 (15.0, main) prints "file:line: message"
# (contrib/bmake/unit-tests/directive-error.exp); older bmake prints
# '"file" line N: message'.  The line numbers are those of the stored
# Makefile.inc1 only roughly.
mk_diag() {
	_what=
	[ "$1" = warning ] && _what="warning: "
	_mkfile=$SRCTOP/${MK_DIAG_FILE:-Makefile.inc1}
	if [ "$REL" = 15 ]; then
		echo "make[1]: $_mkfile:$2: $_what$3"
	else
		echo "make[1]: \"$_mkfile\" line $2: $_what$3"
	fi
	if [ "$1" = error ]; then
		printf '\nmake[1]: stopped in %s\n' "$SRCTOP"
		exit 1
	fi
}

# mk_clean_init: MK_CLEAN as FreeBSD decides it (is_defined: lib.sh, defined()).
#   13.x: Makefile.inc1 cleans unless defined(NO_CLEAN).
#   14.x: src.opts.mk has CLEAN in __DEFAULT_YES_OPTIONS: WITHOUT_CLEAN keeps
#         objects (tools/build/options/WITHOUT_CLEAN); WITH_CLEAN changes nothing.
#   15.0/main: CLEAN is off by default, WITH_CLEAN turns it on
#         (tools/build/options/WITH_CLEAN); WITHOUT_CLEAN changes nothing.
#   14 and later: NO_CLEAN still works, with an .info (Makefile.inc1).
mk_clean_init() {
	case $REL in
	13) if is_defined NO_CLEAN; then MK_CLEAN=no; else MK_CLEAN=yes; fi ;;
	14) if is_defined WITHOUT_CLEAN; then MK_CLEAN=no; else MK_CLEAN=yes; fi ;;
	*) if is_defined WITH_CLEAN; then MK_CLEAN=yes; else MK_CLEAN=no; fi ;;
	esac
	if [ "$REL" != 13 ] && is_defined NO_CLEAN; then
		MK_CLEAN=no
		mk_diag info 243 "The src.conf WITHOUT_CLEAN option can now be used instead of NO_CLEAN."
	fi
}

# header TEXT: a boxed ">>> " header after an empty line, as every stage
# target of Makefile.inc1 prints it (@echo; @echo "---"; @echo ">>> ..."; @echo "---").
# One write: bmake -j drops a lone "\n" read from a job's output pipe.
header() {
	printf '\n%s\n>>> %s\n%s\n' "$HR" "$1" "$HR"
}

# ncpu: Makefile.inc1's _ncpu_cmd.
ncpu() {
	sysctl -n hw.ncpu 2>/dev/null || getconf _NPROCESSORS_ONLN 2>/dev/null || echo unknown
}

# seconds_line TEXT START: ">>> TEXT in N seconds, ncpu: N[, make -jN]"
# (buildworld_epilogue, buildkernel, reinstall, installkernel).
seconds_line() {
	_j=$(make_jobs)
	echo ">>> $1 in $(($(date +%s) - $2)) seconds, ncpu: $(ncpu)${_j:+, make -j$_j}"
}

# jobs_mode: make runs with -j (job.c) rather than in compat mode (compat.c).
jobs_mode() {
	[ -n "$(make_jobs)" ]
}

# stopped DEPTH DIR TARGET: PrintOnError's last line.  In jobs mode bmake
# 20250804 says 'stopped making "TARGET" in DIR'
# (contrib/bmake/unit-tests/jobs-error-nested.exp); compat mode and older
# bmake say "stopped in DIR" (compat-error.exp).
stopped() {
	if [ "$REL" = 15 ] && jobs_mode; then
		printf 'make[%s]: stopped making "%s" in %s\n' "$1" "$3" "$2"
	else
		printf 'make[%s]: stopped in %s\n' "$1" "$2"
	fi
}

# job_failed DEPTH DIR TARGET FAILED CODE: what a make in jobs mode prints when
# its job FAILED exits with CODE: "*** [FAILED] Error code CODE", the stopped
# line, the error count, the stopped line again (jobs-error-nested.exp).
job_failed() {
	_count="1 error"
	[ "$REL" = 15 ] && _count="make[$1]: 1 error"
	_stop=$(stopped "$1" "$2" "$3")
	printf '*** [%s] Error code %s\n\n%s\n%s\n\n%s\n' "$4" "$5" "$_stop" "$_count" "$_stop"
}

# compat_failed DEPTH DIR CODE: the same in compat mode (no -j): "*** Error
# code N", an empty line, "Stop.", "make[N]: stopped in DIR" (compat.c).
compat_failed() {
	printf '*** Error code %s\n\nStop.\n%s\n' "$3" "$(stopped "$1" "$2")"
}

# fail_compile SRC DIR: a compiler error in SRC (relative to SRCTOP) while
# compiling in DIR, and the chain of makes stopping above it.  buildworld:
# make[1] buildworld -> make[2] "all" in SRCTOP (target everything) -> make[3]
# in bin -> make[4] in bin/cat; buildkernel: make[1] buildkernel -> make[2]
# "all" in the kernel object directory.
fail_compile() {
	_o=${1##*/}
	_o=${_o%.c}.o
	echo "--- $_o ---"
	echo "cc -O2 -pipe -c $SRCTOP/$1 -o $_o"
	echo "$SRCTOP/$1:1:1: error: unknown type name 'sample_fail_t' (SAMPLE_FAIL=$STEP)"
	echo "    1 | sample_fail_t x;"
	echo "      | ^"
	echo "1 error generated."
	if [ "$STEP" = buildworld ]; then
		_sub=${1%/*}
		_top=${_sub%%/*}
		set -- 4 "$SRCTOP/$_sub" all "$_o" 1 \
		    3 "$SRCTOP/$_top" all "all_subdir_$_sub" 2 \
		    2 "$SRCTOP" all "all_subdir_$_top" 2 \
		    1 "$SRCTOP" buildworld everything 2
	else
		set -- 2 "$2" all "$_o" 1 \
		    1 "$SRCTOP" buildkernel buildkernel 2
	fi
	_first=yes
	while [ $# -ge 5 ]; do
		if jobs_mode; then
			[ -n "$_first" ] || echo "--- $4 ---"
			job_failed "$1" "$2" "$3" "$4" "$5"
			if [ -n "$_first" ]; then
				# Another job of the innermost make's parent was still
				# running: it finds the failure token in the job
				# token pipe and gives up (job.c, TokenPool_Take).
				printf '%s\n%s\n\n%s\n' "--- all_subdir_usr.bin ---" \
				    "A failure has been detected in another branch of the parallel make" \
				    "$(stopped "$1" "$SRCTOP/usr.bin" all)"
			fi
		else
			compat_failed "$1" "$2" "$5"
		fi
		_first=
		shift 5
	done
}

# fail_install FILE DIR: install(1) failing on FILE in DIR (relative to
# SRCTOP); installs run in compat mode.
fail_install() {
	echo "install: $1: Input/output error (SAMPLE_FAIL=$STEP)"
	compat_failed 3 "$SRCTOP/$2" 71
	compat_failed 2 "$SRCTOP" 1
	compat_failed 1 "$SRCTOP" 1
}

# depend_cleanup OBJTREE [objects]: what Makefile.inc1's
# _cleanobj_fast_depend_hack prints and does on main and 15.0: '>>> Deleting
# stale dependencies...', then tools/build/depend-cleanup.sh OBJTREE SRCTOP.
# Its check_epoch compares the epoch of ${SRCTOP}/.clean_build_epoch
# (extract_epoch: the last line whose first word is a number > 0) with
# OBJTREE/.clean_build_epoch; a missing or different one runs clean_world:
#   - without CLEANMK: "Cleaning up the temporary build tree", rm -rf OBJTREE;
#   - with CLEANMK (the call "after legacy/bootstrap tools ... since we're
#     generally in the temporary tree's ancestor"): "Cleaning up the object
#     tree" and make CLEANMK (cleandir) instead -- here: clean_objects;
# then writes the source epoch into OBJTREE/.clean_build_epoch and exits 0.
# No source epoch: err "Malformed .clean_build_epoch; please validate the
# last line" (warn prefixes "depend-cleanup.sh:"), and the build stops.
# Returns 0 when it cleaned, 1 when it kept the objects.
# (freebsd/freebsd-src tools/build/depend-cleanup.sh: extract_epoch,
# clean_world, check_epoch; Makefile.inc1 of hitmoon/fb16-loongarch, a
# 16.0-CURRENT tree: _cleanobj without MK_CLEAN runs 'env CLEANMK=
# "_NO_INCLUDE_COMPILERMK=t ${CLEANDIR}" ${WMAKE} _cleanobj_fast_depend_hack',
# _bootstrap-tools runs it under BMAKE without CLEANMK.  13.x and 14.x here
# have no epoch check: their sources were not checked for one.)
extract_epoch() {
	[ -s "$1" ] || return 0
	awk 'int($1) > 0 { epoch = $1 } END { print epoch }' "$1"
}
depend_cleanup() {
	echo ">>> Deleting stale dependencies..."
	_srcepoch=$(extract_epoch "$SRCTOP/.clean_build_epoch")
	if [ -z "$_srcepoch" ]; then
		echo "depend-cleanup.sh: Malformed .clean_build_epoch; please validate the last line" >&2
		if jobs_mode; then
			job_failed 1 "$SRCTOP" buildworld _cleanobj_fast_depend_hack 1
		else
			compat_failed 1 "$SRCTOP" 1
		fi
		exit 1
	fi
	_objepoch=$(extract_epoch "$1/.clean_build_epoch")
	if [ -n "$_objepoch" ] && [ "$_srcepoch" -eq "$_objepoch" ]; then
		return 1
	fi
	# (clean_world's "run" echoes the command only with -v.)
	if [ "${2:-}" = objects ]; then
		echo "Cleaning up the object tree"
		clean_objects world
	else
		echo "Cleaning up the temporary build tree"
		rm -rf "$1"
	fi
	mkdir -p "$1"
	echo "$_srcepoch" >"$1/.clean_build_epoch"
	return 0
}
