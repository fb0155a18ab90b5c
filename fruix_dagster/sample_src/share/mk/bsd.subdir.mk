# bsd.subdir.mk: stand-in for FreeBSD's share/mk/bsd.subdir.mk (recursing into SUBDIR).
# Installed by the fruix_dagster sample tree; not used to build it.

.if !target(__<bsd.subdir.mk>__)
__<bsd.subdir.mk>__:
SUBDIR?=
.endif
