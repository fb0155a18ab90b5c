"""FreeBSD's ``>>>`` header sequences, written down from the real makefiles.

Each function returns the lines a real build prints that are ``>>> `` lines,
the 62-dash box lines or empty lines, in order, with dates replaced by
``DATE`` and figures by ``N`` (see :func:`skeleton`).  Sources (read with the
search tool):

* main / 15.0: ``Makefile.inc1`` of hitmoon/fb16-loongarch (a 16.0-CURRENT
  tree): buildworld_prologue, _cleanworldtmp, _worldtmp, _legacy,
  _bootstrap-tools (``_cleanobj_fast_depend_hack`` when not cleaning),
  _cleanobj, _build-tools, _cross-tools, _build-metadata, _includes,
  _libraries, build${libcompat} ("stage 4.3.1", as a 16.0-CURRENT build log
  shows), everything, buildworld_epilogue; buildkernel; _installcheck_world,
  reinstall; installkernel.  ``NO_OBJWALK``/``NO_KERNELOBJ`` under
  WITH_AUTO_OBJ (the default) drop both "stage 2.2" headers.
* 14.x: ``Makefile.inc1`` of sobomax/freebsd14_vendor (_worldtmp cleans,
  no "Cleaning up the temporary build tree"; "Install check world" without
  a date; stage 4.4 everything) and freebsd-src ``Makefile.libcompat``
  ("stage 4.3: building lib${libcompat} shim libraries").
* 13.x: freebsd-src ``Makefile.inc1`` of 13-CURRENT ("stage 4.3: building
  everything", build${libcompat} after everything) and HardenedBSD-stable
  ``Makefile.libcompat`` ("stage 5.1: building lib${libcompat} shim
  libraries").
"""

from __future__ import annotations

import re

HR = "-" * 62
_DATE = re.compile(r" on [A-Z][a-z]{2} [A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d \S+ \d{4}$")
_FIGURES = re.compile(r"\d+ seconds, ncpu: \d+")


def skeleton(log: str) -> list[str]:
    """The header skeleton of a log: '>>> ' lines, box lines and empty lines."""
    out = []
    for line in log.splitlines():
        if line.startswith(">>> ") or line == HR or line == "":
            out.append(_FIGURES.sub("N seconds, ncpu: N", _DATE.sub(" on DATE", line)))
    return out


def _box(text: str, blank: bool = True) -> list[str]:
    return ([""] if blank else []) + [HR, f">>> {text}", HR]


def world(release: str, *, clean: bool, rebuild: bool = False, jobs: int | None = 2) -> list[str]:
    """buildworld.  ``rebuild``: WORLDTMP exists already (an earlier build)."""
    j = f", make -j{jobs}" if jobs else ""
    out = _box("World build started on DATE", blank=False)
    if release == "15":
        if clean:
            out += _box("Cleaning up the temporary build tree")
        elif rebuild:
            out.append(">>> Deleting stale files in build tree...")
        out += _box("Rebuilding the temporary build tree")
    else:
        out += _box("Rebuilding the temporary build tree")
        if not clean and rebuild:
            out.append(">>> Deleting stale files in build tree...")
    out += _box("stage 1.1: legacy release compatibility shims")
    out += _box("stage 1.2: bootstrap tools")
    if release == "15" and not clean:
        out.append(">>> Deleting stale dependencies...")
    if clean:
        out += _box("stage 2.1: cleaning up the object tree")
    else:
        out.append(">>> Deleting stale dependencies...")
    for stage in ("stage 2.3: build tools", "stage 3: cross tools",
                  "stage 3.1: recording build metadata", "stage 4.1: building includes",
                  "stage 4.2: building libraries"):
        out += _box(stage)
    lib32 = _box({"15": "stage 4.3.1", "14": "stage 4.3", "13": "stage 5.1"}[release]
                 + ": building lib32 shim libraries")
    if not clean and rebuild:
        lib32.append(">>> Deleting stale files in build32 tree...")
    if release != "13":
        out += lib32
    out += _box("stage 4.3: building everything" if release == "13" else "stage 4.4: building everything")
    if release == "13":
        out += lib32
    out += ["", HR, ">>> World build completed on DATE", f">>> World built in N seconds, ncpu: N{j}", HR]
    return out


def kernel(release: str, *, clean: bool, kernfast: bool = False, conf: str = "GENERIC",
           jobs: int | None = 2) -> list[str]:
    j = f", make -j{jobs}" if jobs else ""
    out = _box(f"Kernel build for {conf} started on DATE")  # "@echo" before the .for
    if not kernfast:
        out += _box("stage 1: configuring the kernel")
        if clean:
            out += _box("stage 2.1: cleaning up the object tree")
    out += _box("stage 2.3: build tools") + _box("stage 3.1: building everything")
    out += _box(f"Kernel build for {conf} completed on DATE", blank=False)
    out += [f">>> Kernel(s)  {conf} built in N seconds, ncpu: N{j}", HR]
    return out


def installworld(release: str) -> list[str]:
    if release == "15":
        out = _box("Install check world started on DATE", blank=False)
    else:
        out = _box("Install check world", blank=False)
    out += _box("Making hierarchy", blank=False)
    out += _box("Installing everything started on DATE")
    out += [HR, ">>> Installing everything completed on DATE"]
    if release == "15":
        out.append(">>> Install world completed in N seconds, ncpu: N")
    return out + [HR]


def distribution(release: str) -> list[str]:
    return []


def installkernel(release: str, conf: str = "GENERIC") -> list[str]:
    if release == "15":
        out = _box("Install check kernel started on DATE", blank=False)
    else:
        out = _box("Install check kernel", blank=False)
    out += _box(f"Installing kernel {conf} on DATE", blank=False)
    out += _box(f"Installing kernel {conf} completed on DATE", blank=False)
    if release == "15":
        out += [f">>> Install kernel(s) {conf} completed in N seconds, ncpu: N", HR]
    return out
