#!/bin/sh
# tools/sample/install.sh -- "make installworld", "make distribution" and
# "make installkernel", sourced by main.sh (STEP says which).  Installs with
# portable commands only (mkdir -p, cp, chmod, ln -s) and sets every mode
# explicitly, so the staged tree is the same bytes and modes every time.

case ${DESTDIR:-} in
'') die "DESTDIR is not set: $STEP refuses to install into the running system; pass DESTDIR=/some/stage/dir" ;;
/) die "DESTDIR=/: $STEP refuses to install into the running system" ;;
/*) ;;
*) die "DESTDIR must be an absolute path, not '$DESTDIR'" ;;
esac
DESTDIR=$(printf '%s\n' "$DESTDIR" | sed 's:/*$::')

# inst MODE SRC DST: install one file (DST is removed first: it may be
# read-only from an earlier install).
inst() {
	echo "install -m $1 $2 $3"
	rm -f "$3"
	cp "$2" "$3"
	chmod "$1" "$3"
}

# mkdirs MODE DIR...: make directories under DESTDIR with MODE.
mkdirs() {
	_mode=$1
	shift
	for _x in "$@"; do
		mkdir -p "$DESTDIR/$_x"
		chmod "$_mode" "$DESTDIR/$_x"
	done
}

# check_ugid: FreeBSD's installcheck_UGID.  Without DB_FROM_SRC the users
# and groups must exist on the running system; with it, in the tree's etc/.
check_ugid() {
	if is_on "${DB_FROM_SRC:-}"; then
		grep -q '^auditdistd:' "$SRCTOP/etc/master.passwd" ||
		    die "Required auditdistd user is missing, see /usr/src/UPDATING."
		grep -q '^audit:' "$SRCTOP/etc/group" ||
		    die "Required audit group is missing, see /usr/src/UPDATING."
	elif ! id auditdistd >/dev/null 2>&1; then
		die "Required auditdistd user is missing, see /usr/src/UPDATING."
	fi
}

installworld() {
	check_ugid
	[ -f "$OBJTOP/.sample-world-built" ] ||
	    die "no world to install in $OBJTOP; run \"make buildworld\" first"
	box "Install check world"
	box "Making hierarchy"
	mkdir -p "$DESTDIR"
	mkdirs 755 bin boot boot/defaults boot/lua etc lib mnt sbin usr usr/bin \
	    usr/include usr/include/sys usr/lib usr/sbin usr/share usr/share/mk var
	mkdirs 750 root
	mkdirs 1777 tmp
	mkdirs 555 var/empty
	box "Installing everything started on $(now)"

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
			inst 444 "$OBJTOP/$_d/$_lib.so.$_major" "$DESTDIR/usr/lib/$_lib.so.$_major"
			echo "ln -sf $_lib.so.$_major $DESTDIR/usr/lib/$_lib.so"
			rm -f "$DESTDIR/usr/lib/$_lib.so"
			ln -s "$_lib.so.$_major" "$DESTDIR/usr/lib/$_lib.so"
		fi
	done

	for _d in $WORLD_PROGS; do
		echo "===> $_d (install)"
		_p=$(mkvar "$SRCTOP/$_d/Makefile" PROG)
		_bindir=$(mkvar "$SRCTOP/$_d/Makefile" BINDIR)
		_mode=$(mkvar "$SRCTOP/$_d/Makefile" BINMODE)
		inst "${_mode:-555}" "$OBJTOP/$_d/$_p" "$DESTDIR${_bindir:-/usr/bin}/$_p"
	done
	echo "ln -sf loader.efi $DESTDIR/boot/loader"
	rm -f "$DESTDIR/boot/loader"
	ln -s loader.efi "$DESTDIR/boot/loader"

	echo "===> stand (install)"
	inst 444 "$SRCTOP/stand/defaults/loader.conf" "$DESTDIR/boot/defaults/loader.conf"
	for _f in "$SRCTOP"/stand/lua/*.lua; do
		inst 444 "$_f" "$DESTDIR/boot/lua/${_f##*/}"
	done
	echo "===> share/mk (install)"
	for _f in "$SRCTOP"/share/mk/*.mk; do
		inst 444 "$_f" "$DESTDIR/usr/share/mk/${_f##*/}"
	done
	box "Installing everything completed on $(now)"
}

distribution() {
	check_ugid
	box "Making hierarchy"
	mkdir -p "$DESTDIR"
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
	chmod 644 "$DESTDIR/etc/passwd"
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
	box "Installing kernel $KERNCONF on $(now)"
	mkdir -p "$DESTDIR"
	mkdirs 755 boot
	if [ -d "$DESTDIR/boot/kernel" ]; then
		echo "mv $DESTDIR/boot/kernel $DESTDIR/boot/kernel.old"
		rm -rf "$DESTDIR/boot/kernel.old"
		mv "$DESTDIR/boot/kernel" "$DESTDIR/boot/kernel.old"
	fi
	mkdirs 755 boot/kernel
	midpoint "sys/$TARGET/conf/$KERNCONF" boot/kernel/kernel
	inst 555 "$KOBJ/kernel" "$DESTDIR/boot/kernel/kernel"
	for _ko in "$KOBJ"/modules/*/*.ko; do
		if [ -f "$_ko" ]; then
			inst 555 "$_ko" "$DESTDIR/boot/kernel/${_ko##*/}"
		fi
	done
	box "Installing kernel $KERNCONF completed on $(now)"
}

$STEP
