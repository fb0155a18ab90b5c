#!/bin/sh
# tools/sample/install.sh -- "make installworld", "make distribution" and
# "make installkernel", sourced by main.sh (STEP says which).  Installs with
# portable commands only (mkdir -p, cp, chown, chmod, ln -s, chflags or
# chattr) and sets every owner and mode explicitly, so the staged tree is the
# same bytes, owners and modes every time.

case ${DESTDIR:-} in
'') die "DESTDIR is not set: $STEP refuses to install into the running system; pass DESTDIR=/some/stage/dir" ;;
/) die "DESTDIR=/: $STEP refuses to install into the running system" ;;
/*) ;;
*) die "DESTDIR must be an absolute path, not '$DESTDIR'" ;;
esac
DESTDIR=$(printf '%s\n' "$DESTDIR" | sed 's:/*$::')

# Owners, groups, modes and flags are applied as FreeBSD's install(1) does
# for share/mk's bsd.prog.mk ("${INSTALL} -o ${BINOWN} -g ${BINGRP} -m
# ${BINMODE} ${INSTALLFLAGS}", BINOWN/BINGRP/BINMODE defaulting to
# root/wheel/555 in bsd.own.mk) and bsd.lib.mk:
# * as root, chown then chmod, by the ids _id finds (DB_FROM_SRC: this
#   tree's etc/master.passwd and etc/group for names the system lacks);
# * PRECIOUSPROG / PRECIOUSLIB add "-fschg -S" unless NO_FSCHG is set: the
#   file gets the system immutable flag (chflags schg on FreeBSD, chattr +i
#   on Linux); a file system without flags only warns, as install(1) does
#   on EOPNOTSUPP;
# * with NO_ROOT (-DNO_ROOT, as the release build stages) nothing is chowned
#   or flagged: every entry is logged to METALOG (default DESTDIR/METALOG) as
#   install -U -M writes it: "./path type=file uname=U gname=G mode=0NNN
#   size=N [flags=schg]" (mtree -W for directories, install -l s for links).
_no_root() { is_defined NO_ROOT; }
if _no_root; then
	METALOG=${METALOG:-$DESTDIR/METALOG}
	case $METALOG in
	/*) ;;
	*) die "METALOG must be an absolute path, not '$METALOG'" ;;
	esac
fi

# _id passwd|group NAME: the numeric id of NAME: from the running system, or
# with DB_FROM_SRC from this tree's etc/ when the running system lacks it.
# (FreeBSD's install -N reads only the tree's files; on a FreeBSD system the
# two agree.  On a Linux test guest, which has operator and tty but no wheel,
# this keeps every name a name the guest's tar can write back.)
_id() {
	if [ "$1" = passwd ]; then
		_n=$(id -u "$2" 2>/dev/null) || _n=
	else
		_n=$(getent group "$2" 2>/dev/null | awk -F: '{ print $3; exit }')
	fi
	if [ -z "$_n" ] && is_defined DB_FROM_SRC; then
		if [ "$1" = passwd ]; then _db=$SRCTOP/etc/master.passwd; else _db=$SRCTOP/etc/group; fi
		_n=$(awk -F: -v n="$2" '$1 == n { print $3; exit }' "$_db")
	fi
	[ -n "$_n" ] || die "install: unknown $([ "$1" = passwd ] && echo user || echo group) $2"
	echo "$_n"
}

# _meta TYPE PATH OWNER GROUP MODE [KEYWORD=VALUE...]: one METALOG line.
_meta() {
	_t=$1 _p=${2#"$DESTDIR"} _o=$3 _g=$4 _m=$5
	shift 5
	_p=${_p#/}
	_p=.${_p:+/$_p}
	printf '%s type=%s uname=%s gname=%s mode=0%s%s\n' "$_p" "$_t" "$_o" "$_g" "${_m#0}" \
	    "$(for _k in "$@"; do printf ' %s' "$_k"; done)" >>"$METALOG"
}

# _unflag PATH: clear the flags of an existing file before replacing it (install -S does).
_unflag() {
	[ -e "$1" ] || return 0
	if command -v chflags >/dev/null 2>&1; then
		chflags noschg "$1" 2>/dev/null || :
	elif command -v chattr >/dev/null 2>&1; then
		chattr -f -i "$1" 2>/dev/null || :
	fi
}

# _schg PATH: set the system immutable flag (install -f schg).
_schg() {
	if command -v chflags >/dev/null 2>&1; then
		chflags schg "$1" 2>/dev/null && return 0
	elif command -v chattr >/dev/null 2>&1; then
		chattr +i "$1" 2>/dev/null && return 0
	fi
	echo "install: $1: chflags: Operation not supported" >&2
}

# _own TYPE PATH OWNER GROUP MODE FLAGS [KEYWORD=VALUE...]: apply (or log) metadata.
_own() {
	_ot=$1 _op=$2 _oo=$3 _og=$4 _om=$5 _of=$6
	shift 6
	if _no_root; then
		chmod "$_om" "$_op"
		_meta "$_ot" "$_op" "$_oo" "$_og" "$_om" "$@" ${_of:+flags=$_of}
		return 0
	fi
	_who=$(_id passwd "$_oo"):$(_id group "$_og")
	chown "$_who" "$_op" 2>/dev/null ||
	    die "install: $_op: chown/chgrp: Operation not permitted (installing as $(id -un); run as root, or stage with -DNO_ROOT)"
	chmod "$_om" "$_op"
	if [ -n "$_of" ]; then
		_schg "$_op"
	fi
}

# inst_o OWNER GROUP MODE FLAGS SRC DST: install one file (an existing DST
# is unflagged and removed first: it may be read-only or immutable).
inst_o() {
	echo "install -o $1 -g $2 -m $3${4:+ -f$4 -S} $5 $6"
	_unflag "$6"
	rm -f "$6"
	cp "$5" "$6"
	_own file "$6" "$1" "$2" "$3" "$4" "size=$(wc -c <"$6" | tr -d ' ')"
}

# inst MODE SRC DST: install one file owned by root:wheel.
inst() {
	inst_o root wheel "$1" "" "$2" "$3"
}

# symlink TARGET LINK: ln -s, owned by root:wheel (install -l s).
symlink() {
	echo "ln -sf $1 $2"
	rm -f "$2"
	ln -s "$1" "$2"
	if _no_root; then
		_meta link "$2" root wheel 755 "link=$1"
	fi
}

# mkdirs MODE DIR...: make directories under DESTDIR with MODE, owned by root:wheel.
mkdirs() {
	_mode=$1
	shift
	for _x in "$@"; do
		mkdir -p "$DESTDIR/$_x"
		_own dir "$DESTDIR/$_x" root wheel "$_mode" ""
	done
}

# defined MAKEFILE VAR: whether the Makefile sets VAR (even to nothing).
defined() {
	awk -v v="$2" '
	{
		n = index($0, "=")
		if (n == 0)
			next
		k = substr($0, 1, n - 1)
		sub(/[ \t]+$/, "", k)
		if (k == v)
			found = 1
	}
	END { exit !found }' "$1"
}

# precious MAKEFILE PRECIOUSVAR: "schg" when the file is precious and NO_FSCHG is unset.
precious() {
	if defined "$1" "$2" && ! is_defined NO_FSCHG; then
		echo schg
	fi
}

# stage_filler: SAMPLE_STAGE_MB=N adds usr/share/sample/filler, N MiB of
# zeros, so a test can collect a stage of hundreds of MB.
stage_filler() {
	case ${SAMPLE_STAGE_MB:-} in
	'') return 0 ;;
	*[!0-9]*) die "SAMPLE_STAGE_MB must be a number of MiB, not '$SAMPLE_STAGE_MB'" ;;
	esac
	mkdirs 755 usr/share/sample
	echo "dd if=/dev/zero of=$DESTDIR/usr/share/sample/filler bs=1048576 count=$SAMPLE_STAGE_MB"
	_unflag "$DESTDIR/usr/share/sample/filler"
	rm -f "$DESTDIR/usr/share/sample/filler"
	dd if=/dev/zero of="$DESTDIR/usr/share/sample/filler" bs=1048576 count="$SAMPLE_STAGE_MB" 2>/dev/null
	_own file "$DESTDIR/usr/share/sample/filler" root wheel 444 "" "size=$((SAMPLE_STAGE_MB * 1048576))"
}

# check_ugid: FreeBSD's installcheck_UGID.  Without DB_FROM_SRC the users
# and groups must exist on the running system; with it, in the tree's etc/.
check_ugid() {
	if is_defined DB_FROM_SRC; then
		grep -q '^auditdistd:' "$SRCTOP/etc/master.passwd" ||
		    die "Required auditdistd user is missing, see /usr/src/UPDATING."
		grep -q '^audit:' "$SRCTOP/etc/group" ||
		    die "Required audit group is missing, see /usr/src/UPDATING."
	elif ! id auditdistd >/dev/null 2>&1; then
		die "Required auditdistd user is missing, see /usr/src/UPDATING."
	fi
}

# check_header WHAT: _installcheck_world / _installcheck_kernel (Makefile.inc1);
# main/15.0 add the date.
check_header() {
	if [ "$REL" = 15 ]; then
		box "Install check $1 started on $(now)"
	else
		box "Install check $1"
	fi
}

installworld() {
	# Makefile.inc1 reads ${OBJTOP}/toolchain-metadata.mk (written by
	# buildworld's stage 3.1) while parsing, before any target runs.
	[ -f "$OBJTOP/toolchain-metadata.mk" ] ||
	    mk_diag error 103 "A build is required first.  You may have the wrong MAKEOBJDIRPREFIX set."
	START=$(date +%s)
	check_header world
	check_ugid
	[ -f "$OBJTOP/.sample-world-built" ] ||
	    die "no world to install in $OBJTOP; run \"make buildworld\" first"
	# installworld copies the ITOOLS into INSTALLTMP and runs reinstall.
	echo "mkdir -p /tmp/install.sample"
	echo "cd $SRCTOP; make -f Makefile.inc1 reinstall"
	box "Making hierarchy"
	mkdir -p "$DESTDIR"
	_own dir "$DESTDIR" root wheel 755 ""
	mkdirs 755 bin boot boot/defaults boot/lua etc lib mnt sbin usr usr/bin \
	    usr/include usr/include/sys usr/lib usr/sbin usr/share usr/share/mk var
	mkdirs 750 root
	mkdirs 1777 tmp
	mkdirs 555 var/empty
	header "Installing everything started on $(now)"

	echo "===> include (install)"
	for _h in "$SRCTOP"/include/*.h; do
		inst 444 "$_h" "$DESTDIR/usr/include/${_h##*/}"
	done
	echo "===> sys/sys (install)"
	for _h in "$SRCTOP"/sys/sys/*.h; do
		inst 444 "$_h" "$DESTDIR/usr/include/sys/${_h##*/}"
	done
	midpoint include/stdio.h usr/include/stdio.h

	for _d in $WORLD_LIBS; do
		echo "===> $_d (install)"
		_lib=lib$(mkvar "$SRCTOP/$_d/Makefile" LIB)
		_major=$(mkvar "$SRCTOP/$_d/Makefile" SHLIB_MAJOR)
		for _h in $(mkvar "$SRCTOP/$_d/Makefile" INCS); do
			inst 444 "$SRCTOP/$_d/$_h" "$DESTDIR/usr/include/$_h"
		done
		inst 444 "$OBJTOP/$_d/$_lib.a" "$DESTDIR/usr/lib/$_lib.a"
		if [ -n "$_major" ]; then
			inst_o root wheel 444 "$(precious "$SRCTOP/$_d/Makefile" PRECIOUSLIB)" \
			    "$OBJTOP/$_d/$_lib.so.$_major" "$DESTDIR/usr/lib/$_lib.so.$_major"
			symlink "$_lib.so.$_major" "$DESTDIR/usr/lib/$_lib.so"
		fi
	done

	for _d in $WORLD_PROGS; do
		echo "===> $_d (install)"
		_p=$(mkvar "$SRCTOP/$_d/Makefile" PROG)
		_bindir=$(mkvar "$SRCTOP/$_d/Makefile" BINDIR)
		_mode=$(mkvar "$SRCTOP/$_d/Makefile" BINMODE)
		_owner=$(mkvar "$SRCTOP/$_d/Makefile" BINOWN)
		_group=$(mkvar "$SRCTOP/$_d/Makefile" BINGRP)
		inst_o "${_owner:-root}" "${_group:-wheel}" "${_mode:-555}" \
		    "$(precious "$SRCTOP/$_d/Makefile" PRECIOUSPROG)" \
		    "$OBJTOP/$_d/$_p" "$DESTDIR${_bindir:-/usr/bin}/$_p"
	done
	symlink loader.efi "$DESTDIR/boot/loader"

	echo "===> stand (install)"
	inst 444 "$SRCTOP/stand/defaults/loader.conf" "$DESTDIR/boot/defaults/loader.conf"
	for _f in "$SRCTOP"/stand/lua/*.lua; do
		inst 444 "$_f" "$DESTDIR/boot/lua/${_f##*/}"
	done
	echo "===> share/mk (install)"
	for _f in "$SRCTOP"/share/mk/*.mk; do
		inst 444 "$_f" "$DESTDIR/usr/share/mk/${_f##*/}"
	done
	stage_filler
	echo "$HR"
	echo ">>> Installing everything completed on $(now)"
	[ "$REL" = 15 ] && seconds_line "Install world completed" "$START"
	echo "$HR"
}

# distribution (Makefile.inc1 "distrib-dirs distribution"): runs make in etc/
# and installconfig; it prints no ">>> " line at all.
distribution() {
	check_ugid
	echo "cd $SRCTOP/etc; make distribution"
	mkdir -p "$DESTDIR"
	_own dir "$DESTDIR" root wheel 755 ""
	mkdirs 755 etc etc/defaults
	echo "===> etc (distribution)"
	midpoint etc/master.passwd
	inst 600 "$SRCTOP/etc/master.passwd" "$DESTDIR/etc/master.passwd"
	# pwd_mkdb -p: the public passwd file, without the secret fields.
	echo "pwd_mkdb -p -d $DESTDIR/etc $DESTDIR/etc/master.passwd"
	rm -f "$DESTDIR/etc/passwd"
	awk -F: 'BEGIN { OFS = ":" }
	    /^#/ { print; next }
	    NF == 10 { print $1, "*", $3, $4, $8, $9, $10 }' \
	    "$SRCTOP/etc/master.passwd" >"$DESTDIR/etc/passwd"
	_own file "$DESTDIR/etc/passwd" root wheel 644 "" "size=$(wc -c <"$DESTDIR/etc/passwd" | tr -d ' ')"
	for _f in group hosts shells; do
		inst 644 "$SRCTOP/etc/$_f" "$DESTDIR/etc/$_f"
	done
	inst 444 "$SRCTOP/etc/defaults/rc.conf" "$DESTDIR/etc/defaults/rc.conf"
}

installkernel() {
	KERNCONF=${KERNCONF:-GENERIC}
	KOBJ=$OBJTOP/sys/$KERNCONF
	case $KERNCONF in
	*/* | .*) die "No kernel \"$KERNCONF\" to install." ;;
	esac
	[ -f "$KOBJ/.sample-kernel-built" ] && [ -f "$KOBJ/kernel" ] ||
	    die "No kernel \"$KERNCONF\" to install."
	START=$(date +%s)
	check_header kernel
	box "Installing kernel $KERNCONF on $(now)"
	echo "cd $KOBJ; make KERNEL=kernel install"
	mkdir -p "$DESTDIR"
	_own dir "$DESTDIR" root wheel 755 ""
	mkdirs 755 boot
	# kern.post.mk kernel-install: an existing ${DESTDIR}${KODIR} that does
	# not hold the running kernel (kern.bootfile) is deleted; only the
	# running kernel's directory is moved to kernel.old.  A DESTDIR stage
	# never holds the running kernel.
	if [ -d "$DESTDIR/boot/kernel" ]; then
		echo "thiskernel=\`sysctl -n kern.bootfile\` ; if [ ! \"\`dirname \"\$thiskernel\"\`\" -ef $DESTDIR/boot/kernel ] ; then chflags -R noschg $DESTDIR/boot/kernel ; rm -rf $DESTDIR/boot/kernel ; rm -rf $DESTDIR/usr/lib/debug/boot/kernel ; else ... fi"
		chflags -R noschg "$DESTDIR/boot/kernel" 2>/dev/null ||
		    chattr -R -f -i "$DESTDIR/boot/kernel" 2>/dev/null || :
		rm -rf "$DESTDIR/boot/kernel" "$DESTDIR/usr/lib/debug/boot/kernel"
	fi
	echo "mkdir -p $DESTDIR/boot/kernel"
	mkdirs 755 boot/kernel
	midpoint "sys/$TARGET/conf/$KERNCONF" boot/kernel/kernel
	inst 555 "$KOBJ/kernel" "$DESTDIR/boot/kernel/kernel"
	for _ko in "$KOBJ"/modules/*/*.ko; do
		if [ -f "$_ko" ]; then
			inst 555 "$_ko" "$DESTDIR/boot/kernel/${_ko##*/}"
		fi
	done
	echo "kldxref $DESTDIR/boot/kernel"
	box "Installing kernel $KERNCONF completed on $(now)"
	if [ "$REL" = 15 ]; then
		seconds_line "Install kernel(s) $KERNCONF completed" "$START"
		echo "$HR"
	fi
}

$STEP
