"""The pinned build configuration: make.conf, src.conf and src-env.conf.

A FreeBSD build silently reads three files of the machine it runs on:

* ``/etc/make.conf`` -- share/mk/sys.mk: ``__MAKE_CONF?= /etc/make.conf``;
* ``/etc/src.conf`` -- share/mk/src.sys.mk: ``SRCCONF?= /etc/src.conf``
  (options such as WITHOUT_LIB32, WITH_CLEAN);
* ``/etc/src-env.conf`` -- share/mk/src.sys.env.mk: ``SRC_ENV_CONF?=
  /etc/src-env.conf``, read before anything else; the only file that may
  hold the "environment-only" options (``__ENV_ONLY_OPTIONS``: META_MODE,
  AUTO_OBJ, ...; src.sys.mk stops with ".error Option X may only be defined
  in ${SRC_ENV_CONF}, environment, or make argument, not ${SRCCONF}.") and
  MAKEOBJDIRPREFIX.

All three are ``?=`` assignments, so a value from the environment wins; the
product puts them in the environment (``env __MAKE_CONF=... SRCCONF=...
SRC_ENV_CONF=... make ...``) rather than on make's command line because the
environment reaches every sub-make unchanged, while Makefile.inc1 rebuilds
MAKEFLAGS for some of its stages.  The settings say what each file holds
(its text, or a host file read when the plan is made); the product writes
them into ``<build_root>/conf/`` and passes those paths, or ``/dev/null``
for a file the settings leave empty, so the guest's own /etc files never
take part.  Their contents are part of every step fingerprint.

Since 15, src.sys.mk (and its copy in sys/conf/kern.pre.mk) also reads a
``src.conf`` at the top of the source tree: ``.if exists(${SRCTOP}/src.conf)
SRCCONF?= ${SRCTOP}/src.conf .else SRCCONF?= /etc/src.conf .endif``.  That
is a ``?=`` too: the SRCCONF passed here (the pinned file or /dev/null)
wins, so a tree's own src.conf never takes part -- the settings' ``src_conf``
is the one src.conf of a build (tests/test_buildconf.py).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from fruix_dagster.errors import ConfigError
from fruix_dagster.guest.fence import check_build_root
from fruix_dagster.guest.transport import Transport

#: variable, file name in <build_root>/conf
FILES = (("__MAKE_CONF", "make.conf"), ("SRCCONF", "src.conf"), ("SRC_ENV_CONF", "src-env.conf"))

_META_MODE = re.compile(r"^\s*WITH_META_MODE\s*[?:!+]?=", re.M)


@dataclass(frozen=True)
class BuildConf:
    """The contents of the three files (empty: the build reads /dev/null)."""

    make_conf: str = ""
    src_conf: str = ""
    src_env_conf: str = ""

    def contents(self) -> dict[str, str]:
        return {"__MAKE_CONF": self.make_conf, "SRCCONF": self.src_conf, "SRC_ENV_CONF": self.src_env_conf}

    def paths(self, build_root: str) -> dict[str, str]:
        """Variable -> the file the build reads: <build_root>/conf/NAME, or /dev/null."""
        root = check_build_root(build_root)
        text = self.contents()
        return {var: (f"{root}/conf/{name}" if text[var] else "/dev/null") for var, name in FILES}

    def env(self, build_root: str) -> list[str]:
        """``VAR=path`` words for ``env`` in front of make."""
        return [f"{var}={path}" for var, path in self.paths(build_root).items()]

    def fingerprint_part(self) -> dict[str, str]:
        """sha256 of each file's contents, for the step fingerprints."""
        return {var: hashlib.sha256(text.encode()).hexdigest() for var, text in self.contents().items()}

    @property
    def meta_mode(self) -> bool:
        """WITH_META_MODE is set (src-env.conf): the build then wants /dev/filemon."""
        return bool(_META_MODE.search(self.src_env_conf))


def resolve(*, make_conf: str | None = None, make_conf_file: str | None = None,
            src_conf: str | None = None, src_conf_file: str | None = None,
            src_env_conf: str | None = None, src_env_conf_file: str | None = None,
            src_env: Sequence[tuple[str, str]] = ()) -> BuildConf:
    """The contents from the settings: each file's text or a host file; the
    ``src_env`` pairs (environment-only knobs) are appended to src-env.conf."""

    def one(key: str, text: str | None, path: str | None) -> str:
        if path is None:
            return text or ""
        try:
            return Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(
                f"build.{key}_file: expected a readable UTF-8 host file, got {path!r} ({exc}); "
                f"fix the path or give the contents in build.{key}") from exc

    env_text = one("src_env_conf", src_env_conf, src_env_conf_file)
    if src_env:
        env_text += ("" if not env_text or env_text.endswith("\n") else "\n")
        env_text += "".join(f"{k}={v}\n" for k, v in src_env)
    return BuildConf(one("make_conf", make_conf, make_conf_file),
                     one("src_conf", src_conf, src_conf_file), env_text)


# $1 conf dir, then pairs NAME CONTENTS: write each file (atomically) and
# remove the files the settings no longer name.
_WRITE = r'''
d=$1; shift
mkdir -p "$d" || exit 1
keep=" "
while [ $# -ge 2 ]; do
  printf '%s' "$2" > "$d/$1.tmp" && mv -f "$d/$1.tmp" "$d/$1" || exit 1
  keep="$keep$1 "
  shift 2
done
for f in make.conf src.conf src-env.conf; do
  case "$keep" in *" $f "*) ;; *) rm -f "$d/$f" ;; esac
done
'''


def write_conf(transport: Transport, build_root: str, conf: BuildConf) -> None:
    """Write the non-empty files into <build_root>/conf on the guest."""
    root = check_build_root(build_root)
    args: list[str] = []
    text = conf.contents()
    for var, name in FILES:
        if text[var]:
            args += [name, text[var]]
    transport.sh(_WRITE, f"{root}/conf", *args).check(
        f"writing the build configuration into {root}/conf")
