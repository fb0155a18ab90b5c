"""The streaming tar reader: formats it must read and hostile streams it must refuse."""

from __future__ import annotations

import hashlib
import io
import os
import random
import sys
import tarfile

import pytest

from fruix_dagster.errors import TreeError
from fruix_dagster.tree.tarstream import ReadAhead, TarReader, iter_members, widen_pipe

# ----------------------------------------------------------------- raw builders


def _octal(value: int, width: int) -> bytes:
    return b"%0*o\0" % (width - 1, value)


def header(
    name: bytes,
    typeflag: bytes = b"0",
    size: int = 0,
    *,
    link: bytes = b"",
    mode: int = 0o644,
    prefix: bytes = b"",
    magic: bytes = b"ustar\x0000",
    size_field: bytes | None = None,
    checksum: bytes | None = None,
) -> bytes:
    """One 512-byte header with a correct checksum unless ``checksum`` is given."""
    h = bytearray(512)
    h[0:100] = name[:100].ljust(100, b"\0")
    h[100:108] = _octal(mode, 8)
    h[108:116] = _octal(0, 8)
    h[116:124] = _octal(0, 8)
    h[124:136] = size_field if size_field is not None else _octal(size, 12)
    h[136:148] = _octal(1_700_000_000, 12)
    h[156:157] = typeflag
    h[157:257] = link[:100].ljust(100, b"\0")
    h[257:265] = magic
    h[345:500] = prefix.ljust(155, b"\0")
    h[148:156] = b" " * 8
    h[148:156] = checksum if checksum is not None else b"%06o\0 " % sum(h)
    return bytes(h)


def data(payload: bytes) -> bytes:
    return payload + bytes(-len(payload) % 512)


def file_entry(name: bytes, payload: bytes = b"", typeflag: bytes = b"0", **kw) -> bytes:
    return header(name, typeflag, len(payload), **kw) + data(payload)


def pax(records: dict[bytes, bytes], typeflag: bytes = b"x") -> bytes:
    body = b""
    for key, value in records.items():
        rest = b" " + key + b"=" + value + b"\n"
        n = len(rest) + 1
        while len(str(n).encode()) + len(rest) != n:
            n += 1
        body += str(n).encode() + rest
    return header(b"./PaxHeaders/x", typeflag, len(body)) + data(body)


def gnu_long(kind: bytes, name: bytes) -> bytes:
    payload = name + b"\0"
    return header(b"././@LongLink", kind, len(payload), magic=b"ustar  \0") + data(payload)


END = bytes(1024)
ROOT = header(b"./", b"5", mode=0o755)


def archive(*parts: bytes, end: bool = True) -> bytes:
    return ROOT + b"".join(parts) + (END if end else b"")


def members(blob: bytes, **kw):
    """Consume a stream completely; return (path, kind, mode, size, link, data) tuples."""
    out = []
    for m in iter_members(io.BytesIO(blob), **kw):
        out.append((m.path, m.kind, m.mode, m.size, m.link, m.read()))
    return out


class ShortReads:
    """A stream that returns random short reads, like a pipe or an SSH channel."""

    def __init__(self, blob: bytes, seed: int = 0, most: int = 700):
        self._blob = blob
        self._pos = 0
        self._rand = random.Random(seed)
        self._most = most
        self.calls = 0

    def read(self, n: int) -> bytes:
        self.calls += 1
        k = min(n, self._rand.randint(1, self._most))
        piece = self._blob[self._pos : self._pos + k]
        self._pos += len(piece)
        return piece


def refused(blob: bytes, *needles: str, **kw) -> str:
    with pytest.raises(TreeError) as info:
        members(blob, **kw)
    message = str(info.value)
    for needle in needles:
        assert needle in message, message
    return message


# ------------------------------------------------------------------- accepted


def test_basic_kinds_root_and_normalization():
    blob = archive(
        header(b"./d/", b"5", mode=0o555),
        file_entry(b"./d/f", b"hello", mode=0o4755),
        header(b"./d/l", b"2", link=b"../elsewhere/x"),
        header(b"./d/h", b"1", link=b"./d/f"),
        file_entry(b"./d/old", b"abc", typeflag=b"\0"),
        file_entry(b"./d/contig", b"xyz", typeflag=b"7"),
        header(b"./d/olddir/", b"\0", mode=0o700),
    )
    got = members(blob)
    assert got == [
        (b"", "dir", 0o755, 0, None, b""),
        (b"d", "dir", 0o555, 0, None, b""),
        (b"d/f", "file", 0o4755, 5, None, b"hello"),
        (b"d/l", "symlink", 0o644, 0, b"../elsewhere/x", b""),
        (b"d/h", "hardlink", 0o644, 0, b"d/f", b""),
        (b"d/old", "file", 0o644, 3, None, b"abc"),
        (b"d/contig", "file", 0o644, 3, None, b"xyz"),
        (b"d/olddir", "dir", 0o700, 0, None, b""),
    ]


def test_mode_type_bits_are_masked():
    got = members(archive(file_entry(b"f", b"x", mode=0o100644)))
    assert got[1][2] == 0o644


def test_names_are_raw_bytes():
    names = [b"caf\xe9", b"new\nline", b"with space", b"\xff\xfe", b"tab\there"]
    got = members(archive(*(file_entry(n, n) for n in names)))
    assert [g[0] for g in got[1:]] == names
    assert [g[5] for g in got[1:]] == names


def test_ustar_prefix_is_joined():
    blob = archive(
        header(b"p" * 90, b"5"),
        file_entry(b"n" * 100, b"data", prefix=b"p" * 90),
    )
    got = members(blob)
    assert got[2][0] == b"p" * 90 + b"/" + b"n" * 100


def test_gnu_magic_ignores_prefix_area():
    # GNU headers use bytes 345.. for other things: they must not become a path prefix.
    blob = archive(file_entry(b"./f", b"x", magic=b"ustar  \0", prefix=b"junk"))
    assert members(blob)[1][0] == b"f"


def test_gnu_long_name_and_long_link():
    long_dir = b"d" * 200
    long_file = long_dir + b"/" + b"f" * 150
    blob = archive(
        gnu_long(b"L", b"./" + long_dir + b"/"),
        header(b"./" + long_dir[:97] + b"/", b"5", magic=b"ustar  \0"),
        gnu_long(b"L", b"./" + long_file),
        file_entry(long_file[:100], b"payload", magic=b"ustar  \0"),
        gnu_long(b"K", b"t" * 300),
        gnu_long(b"L", b"./" + long_dir + b"/sym"),
        header(b"x", b"2", link=b"t" * 100, magic=b"ustar  \0"),
    )
    got = members(blob)
    assert got[1][:2] == (long_dir, "dir")
    assert got[2][0] == long_file and got[2][5] == b"payload"
    assert got[3][0] == long_dir + b"/sym" and got[3][4] == b"t" * 300


def test_pax_path_linkpath_size_and_global_ignored():
    payload = b"Z" * 1000
    blob = archive(
        pax({b"comment": b"whatever", b"mtime": b"1.5"}, b"g"),
        pax({b"path": b"./long/" + b"x" * 300, b"mtime": b"1234.75", b"hdrcharset": b"BINARY"}),
        header(b"./long", b"5"),
    )
    # the pax header above applies to the directory entry that follows it
    got = members(blob, require_parents=False)
    assert got[1][0] == b"long/" + b"x" * 300
    blob = archive(
        pax({b"path": b"caf\xe9 \n", b"size": str(len(payload)).encode()}),
        header(b"ignored", b"0", 0),  # header size 0, pax says 1000
        data(payload),
        pax({b"linkpath": b"/abs/" + b"y" * 200}),
        header(b"sym", b"2"),
    )
    got = members(blob)
    assert got[1][0] == b"caf\xe9 \n" and got[1][3] == 1000 and got[1][5] == payload
    assert got[2][4] == b"/abs/" + b"y" * 200


def test_python_tarfile_formats_round_trip():
    for fmt in (tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT):
        buf = io.BytesIO()
        expected = {}
        with tarfile.open(fileobj=buf, mode="w", format=fmt, encoding="utf-8", errors="surrogateescape") as tf:
            def add(name, kind=tarfile.REGTYPE, payload=b"", link=""):
                ti = tarfile.TarInfo(name)
                ti.type = kind
                ti.size = len(payload)
                ti.mode = 0o640
                ti.linkname = link
                tf.addfile(ti, io.BytesIO(payload))
            add(".", tarfile.DIRTYPE)
            add("./a", tarfile.DIRTYPE)
            depth = "./a/" + "/".join(["sub"] * 20)
            for i in range(1, 21):
                add("./a/" + "/".join(["sub"] * i), tarfile.DIRTYPE)
            add(depth + "/file", payload=b"x" * 5000)
            expected[(depth + "/file")[2:].encode()] = b"x" * 5000
            if fmt != tarfile.USTAR_FORMAT:
                add("./a/" + "q" * 180, payload=b"long")
                expected[("a/" + "q" * 180).encode()] = b"long"
                add("./a/caf\udce9", payload=b"latin1")
                expected[b"a/caf\xe9"] = b"latin1"
        got = {m[0]: m[5] for m in members(buf.getvalue()) if m[1] == "file"}
        assert got == expected, fmt


def test_base256_size():
    field = b"\x80" + (5).to_bytes(11, "big")
    blob = archive(header(b"f", b"0", size_field=field) + data(b"12345"))
    assert members(blob)[1][5] == b"12345"


def test_signed_checksum_is_accepted():
    h = bytearray(header(b"caf\xe9\xff", b"0", 0))
    h[148:156] = b" " * 8
    signed = sum(b - 256 if b >= 128 else b for b in h)
    h[148:156] = b"%06o\0 " % signed
    assert members(archive(bytes(h)))[1][0] == b"caf\xe9\xff"


@pytest.mark.parametrize("chunk_size", [512, 1000, 4096, 1 << 20])
def test_chunk_boundaries_and_short_reads(chunk_size):
    rnd = random.Random(chunk_size)
    files = {b"f%03d" % i: rnd.randbytes(rnd.choice([0, 1, 511, 512, 513, 3000, 70_000])) for i in range(60)}
    blob = archive(*(file_entry(name, payload) for name, payload in files.items()))
    for stream in (io.BytesIO(blob), ShortReads(blob, seed=chunk_size)):
        got = {}
        for m in iter_members(stream, chunk_size=chunk_size):
            pieces = list(m.chunks())
            assert all(isinstance(p, memoryview) for p in pieces)
            if m.kind == "file":
                got[m.path] = b"".join(pieces)
        assert got == files


def test_unconsumed_and_partly_consumed_data_is_skipped():
    files = [(b"a", b"A" * 3000), (b"b", b"B" * 7000), (b"c", b"C" * 10)]
    blob = archive(*(file_entry(n, p) for n, p in files))
    seen = []
    for m in iter_members(ShortReads(blob, seed=3, most=300), chunk_size=512):
        if m.path == b"a":
            continue  # never touched
        if m.path == b"b":
            next(iter(m.chunks()))  # one piece, then abandoned
            continue
        seen.append((m.path, m.read()))
    assert seen == [(b"", b""), (b"c", b"C" * 10)]


def test_pieces_stay_valid_but_chunks_cannot_be_resumed_after_moving_on():
    blob = archive(file_entry(b"a", b"A" * 5000), file_entry(b"b", b"B" * 10))
    it = iter_members(io.BytesIO(blob), chunk_size=1024)
    next(it)  # root
    a = next(it)
    gen = a.chunks()
    first = bytes(next(gen))
    b = next(it)
    assert b.read() == b"B" * 10
    assert first == b"A" * len(first)
    with pytest.raises(TreeError, match="resumed after the reader moved on"):
        next(gen)
    with pytest.raises(TreeError, match="called twice"):
        b.chunks()


def test_chunks_started_late_raise():
    blob = archive(file_entry(b"a", b"A" * 5000), file_entry(b"b", b"B"))
    it = iter_members(io.BytesIO(blob))
    next(it)
    a = next(it)
    next(it)
    with pytest.raises(TreeError, match="after the reader moved on"):
        a.read()


def test_trailing_zero_padding_is_fine_and_drain_can_be_disabled():
    blob = archive() + bytes(9 * 1024)
    assert len(members(blob)) == 1
    refused(archive() + b"garbage", "after its end-of-archive")
    assert len(members(archive() + b"garbage", drain=False)) == 1


def test_reader_is_single_pass():
    reader = TarReader(io.BytesIO(archive()))
    list(reader)
    with pytest.raises(TreeError):
        iter(reader)


def test_missing_parents_allowed_when_not_required():
    blob = archive(file_entry(b"x/y/z", b"1"), header(b"x", b"5"))
    assert [m[0] for m in members(blob, require_parents=False)] == [b"", b"x/y/z", b"x"]
    refused(archive(file_entry(b"x/y/z", b"1"), header(b"x", b"2", link=b"/etc")), "duplicate",
            require_parents=False)
    refused(archive(header(b"s", b"2", link=b"/etc"), file_entry(b"s/a/b", b"1")), "through the symlink",
            require_parents=False)


# -------------------------------------------------------------------- refused


@pytest.mark.parametrize(
    "blob, needles",
    [
        pytest.param(archive(file_entry(b"../x", b"1")), ["'..'", "../x"], id="dotdot"),
        pytest.param(archive(header(b"a", b"5"), file_entry(b"a/../../x", b"1")), ["'..'"], id="inner-dotdot"),
        pytest.param(archive(file_entry(b"/etc/x", b"1")), ["absolute", "/etc/x"], id="absolute"),
        pytest.param(archive(pax({b"path": b"/etc/passwd"}), file_entry(b"ok", b"1")), ["absolute"], id="pax-abs"),
        pytest.param(archive(gnu_long(b"L", b"../../" + b"e" * 120), file_entry(b"ok", b"1")), ["'..'"],
                     id="gnu-long-dotdot"),
        pytest.param(archive(header(b"link", b"2", link=b"/etc"), file_entry(b"link/passwd", b"root::0:0")),
                     ["through the symlink", "link/passwd", "'link'"], id="through-symlink"),
        pytest.param(archive(header(b"d", b"5"), header(b"d/l", b"2", link=b".."), header(b"d/l/x", b"5")),
                     ["through the symlink"], id="through-symlink-dir"),
        pytest.param(archive(file_entry(b"f", b"1"), file_entry(b"f/x", b"1")), ["is a file"], id="under-file"),
        pytest.param(archive(header(b"h", b"1", link=b"nothere")), ["not seen earlier", "'h'"], id="hardlink-unseen"),
        pytest.param(archive(header(b"h", b"1", link=b"later"), file_entry(b"later", b"1")), ["not seen earlier"],
                     id="hardlink-forward"),
        pytest.param(archive(header(b"h", b"1", link=b"../outside")), ["'..'"], id="hardlink-outside"),
        pytest.param(archive(header(b"h", b"1", link=b"/etc/shadow")), ["absolute"], id="hardlink-absolute"),
        pytest.param(archive(header(b"d", b"5"), header(b"h", b"1", link=b"d")), ["hardlink to a dir"],
                     id="hardlink-dir"),
        pytest.param(archive(header(b"s", b"2", link=b"x"), header(b"h", b"1", link=b"s")),
                     ["hardlink to a symlink"], id="hardlink-symlink"),
        pytest.param(archive(header(b"h", b"1", link=b"./")), ["hardlink to a dir"], id="hardlink-root"),
        pytest.param(archive(header(b"h", b"1", link=b"")), ["empty target"], id="hardlink-empty"),
        pytest.param(archive(header(b"tty", b"3")), ["character device", "'tty'"], id="chardev"),
        pytest.param(archive(header(b"disk", b"4")), ["block device"], id="blockdev"),
        pytest.param(archive(header(b"pipe", b"6")), ["FIFO", "'pipe'"], id="fifo"),
        pytest.param(archive(file_entry(b"sp", b"1", typeflag=b"S")), ["sparse"], id="gnu-sparse"),
        pytest.param(archive(file_entry(b"mv", b"1", typeflag=b"M")), ["multi-volume"], id="multivolume"),
        pytest.param(archive(file_entry(b"v", b"", typeflag=b"V")), ["volume label"], id="volume-label"),
        pytest.param(archive(file_entry(b"u", b"", typeflag=b"Z")), ["unknown entry type 'Z'"], id="unknown"),
        pytest.param(archive(pax({b"GNU.sparse.major": b"1", b"GNU.sparse.minor": b"0"}), file_entry(b"s", b"1")),
                     ["sparse"], id="pax-sparse"),
        pytest.param(archive(file_entry(b"f", b"1"), file_entry(b"./f", b"2")), ["duplicate", "'./f'"],
                     id="duplicate-file"),
        pytest.param(archive(header(b"d", b"5"), header(b"d/", b"5")), ["duplicate"], id="duplicate-dir"),
        pytest.param(archive(header(b"./", b"5")), ["root appears twice"], id="duplicate-root"),
        pytest.param(archive(header(b"s", b"2", link=b"a"), header(b"s", b"5")), ["duplicate"],
                     id="symlink-then-dir"),
        pytest.param(archive(file_entry(b"a/b", b"1")), ["parent directory 'a' did not appear"], id="no-parent"),
        pytest.param(archive(pax({b"path": b"bad\0name"}), file_entry(b"ok", b"1")), ["NUL"], id="nul-pax"),
        pytest.param(archive(gnu_long(b"L", b"bad\0name"), file_entry(b"ok", b"1")), ["NUL"], id="nul-gnu"),
        pytest.param(archive(header(b"s", b"2", link=b"")), ["empty target"], id="symlink-empty"),
        pytest.param(archive(header(b"s", b"2", 5) + data(b"12345")), ["size 5"], id="symlink-with-size"),
        pytest.param(archive(header(b"d", b"5", 512) + data(b"x" * 512)), ["size 512"], id="dir-with-size"),
        pytest.param(archive(header(b"h0", b"0"), header(b"h", b"1", 3, link=b"h0") + data(b"abc")), ["size 3"],
                     id="hardlink-with-size"),
        pytest.param(archive(header(b"f", b"0", size_field=b"\xff" * 12)), ["negative"], id="negative-size"),
        pytest.param(archive(header(b"f", b"0", size_field=b"\x80" + b"\x7f" * 11)), ["size"], id="absurd-size"),
        pytest.param(archive(header(b"f", b"0", size_field=b"12x45\0     ")), ["not octal"], id="garbage-size"),
        pytest.param(archive(pax({b"size": b"-5"}), file_entry(b"f", b"1")), ["not a decimal"], id="pax-neg-size"),
        pytest.param(archive(pax({b"path": b"x"}, b"g"), file_entry(b"f", b"1")), ["global pax header"],
                     id="global-path"),
        pytest.param(archive(pax({b"size": b"1"}, b"g"), file_entry(b"f", b"1")), ["global pax header"],
                     id="global-size"),
        pytest.param(archive(pax({b"path": b"a"}), pax({b"path": b"b"}), file_entry(b"f", b"1")),
                     ["two pax headers"], id="two-pax"),
        pytest.param(archive(pax({b"path": b"a"})), ["not followed by any entry"], id="dangling-pax"),
        pytest.param(archive(header(b"./PaxHeaders/x", b"x", 10) + data(b"garbage!!\n")), ["pax record"],
                     id="bad-pax-record"),
        pytest.param(archive(header(b"./PaxHeaders/x", b"x", 2 << 20) + bytes(2 << 20)), ["pax header of"],
                     id="huge-pax"),
        pytest.param(archive(file_entry(b"f", b"1", checksum=b"0000000\0")), ["checksum", "'f'"], id="bad-checksum"),
        pytest.param(archive(file_entry(b"x/", b"1")), ["ends in '/'"], id="file-with-slash"),
        pytest.param(archive(header(b"", b"0")), ["empty name"], id="empty-name"),
        pytest.param(ROOT[:0] + header(b"./", b"2", link=b"/"), ["root is a symlink"], id="root-symlink"),
        pytest.param(b"", ["empty"], id="empty-stream"),
        pytest.param(archive(end=False), ["end-of-archive", "truncated"], id="no-end-blocks"),
        pytest.param(archive(end=False) + bytes(512), ["second end-of-archive block"], id="one-end-block"),
        pytest.param(archive(end=False) + bytes(512) + file_entry(b"f", b"1") + END, ["lone zero block"],
                     id="lone-zero-block"),
        pytest.param(archive(file_entry(b"big", b"Q" * 5000), end=False)[:512 + 512 + 3000], ["big", "truncated"],
                     id="truncated-mid-file"),
        pytest.param(archive(file_entry(b"big", b"Q" * 100), end=False)[:512 + 512 + 512 + 100],
                     ["truncated"], id="truncated-in-padding"),
        pytest.param(archive(file_entry(b"f", b"1"), end=False) + header(b"g", b"0", 10)[:300],
                     ["truncated", "header"], id="truncated-header"),
    ],
)
def test_hostile_streams_are_refused(blob, needles):
    msg = refused(blob, *needles)
    assert "expected" in msg


def test_hostile_streams_are_refused_with_short_reads_too():
    blob = archive(header(b"link", b"2", link=b"/etc"), file_entry(b"link/passwd", b"x"))
    with pytest.raises(TreeError, match="through the symlink"):
        for m in iter_members(ShortReads(blob, seed=9, most=7), chunk_size=512):
            m.read()
    blob = archive(file_entry(b"big", b"Q" * 5000), end=False)[:3000]
    with pytest.raises(TreeError, match="truncated"):
        for m in iter_members(ShortReads(blob, seed=1, most=100), chunk_size=512):
            hashlib.sha256(m.read())


def test_truncation_inside_unconsumed_data_is_detected():
    blob = archive(file_entry(b"big", b"Q" * 5000), end=False)[:3000]
    with pytest.raises(TreeError, match="truncated"):
        for _ in iter_members(io.BytesIO(blob)):
            pass  # never read the data: the reader's skip must notice the cut


# ------------------------------------------------------------ read-ahead helpers


def test_readahead_delivers_the_same_bytes_and_honours_n():
    blob = bytes(range(256)) * 5000
    ahead = ReadAhead(ShortReads(blob, seed=5, most=5000), chunk_size=4096, depth=3)
    got = bytearray()
    sizes = [1, 7, 512, 100_000, 3]
    i = 0
    while piece := ahead.read(sizes[i % len(sizes)]):
        assert 0 < len(piece) <= sizes[i % len(sizes)]
        got += piece
        i += 1
    assert bytes(got) == blob
    assert ahead.read(10) == b""
    ahead.close()


def test_readahead_reraises_the_stream_error():
    class Broken:
        calls = 0

        def read(self, n):
            self.calls += 1
            if self.calls > 2:
                raise ConnectionResetError("peer went away")
            return b"x" * 10

    ahead = ReadAhead(Broken(), chunk_size=10)
    assert ahead.read(10) == b"x" * 10
    assert ahead.read(10) == b"x" * 10
    with pytest.raises(ConnectionResetError, match="peer went away"):
        ahead.read(10)
    assert ahead.read(10) == b""


def test_readahead_thread_stops_after_close():
    class Endless:
        def read(self, n):
            return b"y" * n

    ahead = ReadAhead(Endless(), chunk_size=1024, depth=2)
    assert ahead.read(1024) == b"y" * 1024
    ahead.close()
    ahead._thread.join(5)
    assert not ahead._thread.is_alive()


def test_readahead_parses_like_direct_reads():
    blob = archive(*(file_entry(b"f%d" % i, bytes([i]) * (i * 977)) for i in range(40)))
    direct = members(blob)
    with ReadAhead(ShortReads(blob, seed=2, most=3000), chunk_size=2048, depth=2) as ahead:
        via = [(m.path, m.kind, m.mode, m.size, m.link, m.read()) for m in iter_members(ahead, chunk_size=2048)]
    assert via == direct


def test_widen_pipe():
    r, w = os.pipe()
    try:
        size = widen_pipe(r, 1 << 20)
        if sys.platform.startswith("linux"):
            assert size is not None and size >= 1 << 16
        else:
            assert size is None
    finally:
        os.close(r)
        os.close(w)
    with open(__file__, "rb") as f:
        assert widen_pipe(f) is None  # not a pipe: refused quietly


def test_huge_pax_size_is_refused_cleanly():
    refused(archive(pax({b"size": b"9" * 5000}), file_entry(b"f", b"1")), "decimal number")


def test_duplicate_of_implied_directory_is_named_as_such():
    refused(archive(file_entry(b"x/y", b"1"), file_entry(b"x", b"2")), "directory implied by an earlier path",
            require_parents=False)


@pytest.mark.parametrize("value", [b"inf", b"-inf", b"1e999", b"nan", b"soon", b"1700000123.75"])
def test_pax_mtime_is_informational_and_never_breaks_the_reader(value):
    """An unusable pax mtime keeps the header's; `inf` used to escape as a bare OverflowError."""
    [m] = [m for m in iter_members(io.BytesIO(archive(pax({b"mtime": value}), file_entry(b"f", b"1")))) if m.path]
    assert m.mtime == (1_700_000_123 if value == b"1700000123.75" else 1_700_000_000)
