"""The tar format as the staged-tree reader parses it: header blocks, numbers, checksums, pax records.

No stream and no tree state here (``tarstream`` frames the stream,
``tarrules`` decides what a staged tree may hold): only what the bytes of
one header block, one GNU long name or one pax extended header mean.

* ustar headers (POSIX.1-1988, with the 155-byte ``prefix`` joined to the
  name when the magic is ``ustar\\0``) and GNU headers (magic ``ustar  \\0``,
  whose prefix area is something else and is ignored);
* numbers: octal, space/NUL terminated, or GNU base-256 (high bit set);
* checksums: the unsigned sum, or the historic signed sum;
* pax ``x`` records ``<len> <key>=<value>\\n``: ``path``, ``linkpath``,
  ``size`` and ``mtime`` are applied, ``GNU.sparse.*`` is refused, other keys
  are ignored (``g`` global headers are the reader's business).

Every refusal is a ``TreeError`` built by :func:`refusal`, naming the entry
and its stream offset.
"""

from __future__ import annotations

import re

from fruix_dagster.errors import TreeError

BLOCK_SIZE = 512
ZERO_BLOCK = bytes(BLOCK_SIZE)
MAX_NAME_SIZE = 64 * 1024  # GNU L/K payload (FreeBSD PATH_MAX is 1024)
MAX_PAX_SIZE = 1 << 20  # one pax extended header

HOW_TO_FIX = "re-create the stream on the guest with `tar cf - -C DIR .` from a clean staged tree"

# Type flags (one byte at offset 156).
TYPE_PAX = 0x78  # 'x': pax extended header for the next entry
TYPE_PAX_GLOBAL = 0x67  # 'g'
TYPE_GNU_LONG_NAME = 0x4C  # 'L'
TYPE_GNU_LONG_LINK = 0x4B  # 'K'
TYPE_HARDLINK = 0x31  # '1'
TYPE_SYMLINK = 0x32  # '2'
TYPE_DIR = 0x35  # '5'
FILE_TYPES = frozenset(b"07\0")  # regular ('0', '7' contiguous, '\0' pre-POSIX)
TYPE_NAMES = {
    0x33: "a character device", 0x34: "a block device", 0x36: "a FIFO",
    0x53: "a GNU sparse file", 0x4D: "a GNU multi-volume continuation",
    0x56: "a GNU volume label", 0x44: "a GNU dump directory", 0x4E: "an old GNU long name",
}

_OCTAL = b"01234567"
_DIGITS = b"0123456789"
# An octal number field: optional spaces, octal digits, optional spaces, then NUL and anything (or the end).
_OCTAL_FIELD = re.compile(rb" *([0-7]*) *(?:\0.*)?", re.DOTALL).fullmatch


def show(name: bytes | None) -> str:
    """A readable, escaped, bounded rendering of a raw name for messages."""
    if name is None:
        return "<none>"
    text = name.decode("utf-8", "backslashreplace")
    if len(text) > 200:
        text = text[:120] + "..." + text[-60:]
    return repr(text)


def refusal(offset: int, name: bytes | None, found: str, expected: str, todo: str = HOW_TO_FIX) -> TreeError:
    """The one error shape for a refused entry: where, what was found, what was expected, what to do."""
    entry = f"entry {show(name)}" if name is not None else "entry"
    return TreeError(f"tar stream {entry} at byte {offset}: {found}; expected {expected}; {todo}")


def number(field: bytes, what: str, offset: int, name: bytes) -> int:
    """A numeric header field: octal (space/NUL terminated) or GNU base-256."""
    m = _OCTAL_FIELD(field)
    if m is not None:
        digits = m.group(1)
        return int(digits, 8) if digits else 0
    if field and field[0] & 0x80:
        if field[0] == 0xFF:
            raise refusal(offset, name, f"negative base-256 {what}", f"a non-negative {what}")
        return int.from_bytes(field[1:], "big") + ((field[0] & 0x7F) << (8 * (len(field) - 1)))
    raise refusal(offset, name, f"{what} field {field!r} is not octal", f"an octal {what}", HOW_TO_FIX)


def check_checksum(header: bytes, offset: int) -> None:
    """Refuse a header block whose stored checksum matches neither the unsigned nor the signed sum."""
    stored = header[148:156]
    digits = stored.split(b"\0", 1)[0].strip(b" ")
    unsigned = sum(header) - sum(stored) + 8 * 32
    if not digits or digits.translate(None, _OCTAL) or int(digits, 8) != unsigned:
        signed = unsigned - 256 * (sum(1 for b in header if b >= 0x80) - sum(1 for b in stored if b >= 0x80))
        if not digits or digits.translate(None, _OCTAL) or int(digits, 8) != signed:
            raise refusal(
                offset, header[:100].split(b"\0", 1)[0],
                f"header checksum {stored!r} does not match the computed {unsigned:o}",
                "a valid tar header (data corrupted or the stream is out of step)",
            )


def header_name(header: bytes) -> bytes:
    """The raw name of a header block, with the ustar prefix joined (GNU headers have none)."""
    raw_name = header[:100].split(b"\0", 1)[0]
    if header[257:263] == b"ustar\0":
        prefix = header[345:500].split(b"\0", 1)[0]
        if prefix:
            raw_name = prefix + b"/" + raw_name
    return raw_name


def header_link(header: bytes) -> bytes:
    """The raw link name of a header block (symlink target or hardlink path)."""
    return header[157:257].split(b"\0", 1)[0]


def header_mode(header: bytes, offset: int, name: bytes) -> int:
    """The permission bits of a header block (file-type bits masked off)."""
    return number(header[100:108], "mode", offset, name) & 0o7777


def parse_pax(data: bytes, offset: int) -> dict[bytes, bytes]:
    """The records of one pax extended header; later records win."""
    records: dict[bytes, bytes] = {}
    pos, n = 0, len(data)
    while pos < n:
        if data[pos] == 0 and not data[pos:].strip(b"\0"):
            break  # NUL padding after the last record
        sp = data.find(b" ", pos, pos + 21)
        length_s = data[pos:sp] if sp > pos else b""
        if not length_s or length_s.translate(None, _DIGITS):
            raise refusal(offset, None, f"malformed pax record at byte {pos} of the extended header",
                          "records of the form '<len> <key>=<value>\\n'")
        end = pos + int(length_s)
        if end <= sp + 1 or end > n or data[end - 1] != 0x0A:
            raise refusal(offset, None, f"pax record at byte {pos} has a bad length {int(length_s)}",
                          "a length that covers the record up to its newline")
        key, eq, value = data[sp + 1 : end - 1].partition(b"=")
        if not eq or not key:
            raise refusal(offset, None, f"pax record at byte {pos} has no key=value",
                          "records of the form '<len> <key>=<value>\\n'")
        records[key] = value
        pos = end
    return records


def check_global_pax(records: dict[bytes, bytes], offset: int) -> None:
    """Refuse a global header that would change how every following entry is read."""
    bad = sorted(k for k in records if k in (b"path", b"linkpath", b"size"))
    if bad:
        raise refusal(offset, None, f"a global pax header setting {bad!r}",
                      "global headers without path, linkpath or size")


def apply_pax(
    pax: dict[bytes, bytes], raw_name: bytes, link_raw: bytes, size: int, mtime: int, offset: int
) -> tuple[bytes, bytes, int, int]:
    """The entry's (name, link, size, mtime) with the pax records for it applied."""
    if b"path" in pax and pax[b"path"]:
        raw_name = pax[b"path"]
    if b"linkpath" in pax and pax[b"linkpath"]:
        link_raw = pax[b"linkpath"]
    if b"size" in pax and pax[b"size"]:
        s = pax[b"size"]
        if s.translate(None, _DIGITS) or len(s) > 20:
            raise refusal(offset, raw_name, f"pax size {s[:40]!r} is not a decimal number "
                          "of at most 20 digits", "a non-negative decimal size")
        size = int(s)
    if b"mtime" in pax:
        try:
            mtime = int(float(pax[b"mtime"]))
        except (ValueError, OverflowError):  # not a number, or nan / inf
            pass  # informational only: an unreadable pax mtime keeps the header's mtime
    if any(k.startswith(b"GNU.sparse.") for k in pax):
        raise refusal(
            offset, raw_name, "a GNU sparse file (pax GNU.sparse.* keys)", "plain regular files",
            "make the file non-sparse on the guest (or create the stream with bsdtar --no-read-sparse)",
        )
    return raw_name, link_raw, size, mtime
