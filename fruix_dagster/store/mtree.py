"""A manifest in FreeBSD ``mtree(8)`` syntax, with ``sha256digest``.

Full-path form (``./usr/include/sys/param.h type=file …``), readable by
``mtree -f`` on FreeBSD and by NetBSD's mtree (Debian ``mtree-netbsd``).
Names are encoded like ``strsvis(3)`` with ``VIS_OCTAL``: every byte outside
printable ASCII, and the characters mtree treats specially, as ``\\ooo``.
Owners are deliberately absent (see the manifest's docstring).
"""

from __future__ import annotations

from fruix_dagster.tree.manifest import Manifest

_SPECIAL = set(b" \t\n\\#*?[]=")


def encode_name(raw: bytes) -> str:
    out = []
    for b in raw:
        if 0x21 <= b <= 0x7E and b not in _SPECIAL:
            out.append(chr(b))
        else:
            out.append(f"\\{b:03o}")
    return "".join(out)


def render_mtree(manifest: Manifest, root_mode: int = 0o755) -> bytes:
    lines = ["#mtree", f". type=dir mode={root_mode:04o}"]
    for e in manifest:
        name = "./" + encode_name(e.path)
        if e.kind == "dir":
            lines.append(f"{name} type=dir mode={e.mode:04o}")
        elif e.kind == "symlink":
            lines.append(f"{name} type=link mode={e.mode:04o} link={encode_name(e.link or b'')}")
        else:
            lines.append(f"{name} type=file mode={e.mode:04o} size={e.size} sha256digest={e.sha256}")
    return ("\n".join(lines) + "\n").encode("ascii")
