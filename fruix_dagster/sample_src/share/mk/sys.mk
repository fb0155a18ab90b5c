# sys.mk: stand-in for FreeBSD's share/mk/sys.mk (the system makefile read by every make run).
# Installed by the fruix_dagster sample tree; not used to build it.

.if !target(__<sys.mk>__)
__<sys.mk>__:
CC?=		cc
CFLAGS?=	-O2 -pipe
.include <bsd.own.mk>
.endif
