# bsd.own.mk: stand-in for FreeBSD's share/mk/bsd.own.mk (install owners, modes and directories).
# Installed by the fruix_dagster sample tree; not used to build it.

.if !target(__<bsd.own.mk>__)
__<bsd.own.mk>__:
BINOWN?=	root
BINGRP?=	wheel
BINMODE?=	555
LIBMODE?=	444
INCMODE?=	444
.endif
