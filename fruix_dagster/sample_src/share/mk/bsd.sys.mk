# bsd.sys.mk: stand-in for FreeBSD's share/mk/bsd.sys.mk (compiler warning flags).
# Installed by the fruix_dagster sample tree; not used to build it.

.if !target(__<bsd.sys.mk>__)
__<bsd.sys.mk>__:
CWARNFLAGS?=	-Wall
.endif
