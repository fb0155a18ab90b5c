# bsd.prog.mk: stand-in for FreeBSD's share/mk/bsd.prog.mk (building and installing a program (PROG, SRCS, BINDIR, BINMODE)).
# Installed by the fruix_dagster sample tree; not used to build it.

.if !target(__<bsd.prog.mk>__)
__<bsd.prog.mk>__:
.include <bsd.own.mk>
SRCS?=		${PROG}.c
BINDIR?=	/usr/bin
.endif
