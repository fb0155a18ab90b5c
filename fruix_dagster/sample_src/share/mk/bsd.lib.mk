# bsd.lib.mk: stand-in for FreeBSD's share/mk/bsd.lib.mk (building and installing a library (LIB, SRCS, SHLIB_MAJOR, INCS)).
# Installed by the fruix_dagster sample tree; not used to build it.

.if !target(__<bsd.lib.mk>__)
__<bsd.lib.mk>__:
.include <bsd.own.mk>
LIBDIR?=	/usr/lib
INCSDIR?=	/usr/include
.endif
