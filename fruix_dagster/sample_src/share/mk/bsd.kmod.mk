# bsd.kmod.mk: stand-in for FreeBSD's share/mk/bsd.kmod.mk (building a kernel module (KMOD, SRCS)).
# Installed by the fruix_dagster sample tree; not used to build it.

.if !target(__<bsd.kmod.mk>__)
__<bsd.kmod.mk>__:
.include <bsd.own.mk>
KMODDIR?=	/boot/kernel
KMODMODE?=	555
.endif
