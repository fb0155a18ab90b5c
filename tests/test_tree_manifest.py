"""Manifests: tar (bsdtar and GNU tar, through real pipes) == disk == an independent walk; JSONL; digest."""

from __future__ import annotations

import hashlib
import io
import json
import grp
import os
import pwd
import shutil
import stat
import subprocess
import tarfile

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fruix_dagster.errors import TreeError
from fruix_dagster.tree import (
    Entry,
    Manifest,
    TreeSink,
    manifest_from_dir,
    manifest_from_tar,
)

BSDTAR = shutil.which("bsdtar")
GNUTAR = shutil.which("tar") if b"GNU tar" in subprocess.run(
    ["tar", "--version"], capture_output=True).stdout else None
# Both are installed by `make test` (libarchive-tools, tar); a missing one fails the test.
TARS = [pytest.param(BSDTAR or "bsdtar", id="bsdtar"), pytest.param(GNUTAR or "gnu-tar-missing", id="gnutar")]

LONG150 = b"n" * 150
LONG300_DIR = b"D" * 200
LONG300 = LONG300_DIR + b"/" + b"F" * 99  # 300-byte path
DEEP = b"/".join(b"lvl%02d" % i for i in range(40))


def build_tree(root: bytes) -> None:
    """A tree with every awkward thing a staged FreeBSD tree can hold."""
    def w(rel: bytes, payload: bytes, mode: int = 0o644) -> None:
        full = os.path.join(root, rel)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "wb") as f:
            f.write(payload)
        os.chmod(full, mode)

    os.makedirs(root, exist_ok=True)
    w(b"plain.txt", b"hello\n")
    w(b"empty", b"")
    w(b"caf\xe9-latin1", b"not utf-8 name")
    w(b"new\nline", b"newline in name")
    w(b"with  spaces and\ttab", b"spaces")
    w(b"\xff\xfe\x80", b"all high bytes")
    w(LONG150, b"150-byte name")
    w(LONG300, b"300-byte path")
    w(DEEP + b"/bottom", b"deep")
    w(b"big.bin", hashlib.sha256(b"seed").digest() * (3 * 1024 * 1024 // 32 + 7))  # > 1 MiB chunk
    w(b"bin/su", b"#!setuid\n", 0o4755)
    w(b"bin/ro", b"read only\n", 0o444)
    w(b"bin/rx", b"r-x\n", 0o555)
    w(b"etc/secret", b"secret\n", 0o600)
    w(b"usr/include/sys/types.h", b"#pragma once\n")
    w(b"boot/loader.efi", b"MZ")
    os.link(os.path.join(root, b"plain.txt"), os.path.join(root, b"bin/hardlink-to-plain"))
    os.symlink(b"../plain.txt", os.path.join(root, b"bin/rel-link"))
    os.symlink(b"does/not/exist", os.path.join(root, b"dangling"))
    os.symlink(b"/etc/passwd", os.path.join(root, b"absolute-link"))
    os.symlink(b"caf\xe9-latin1", os.path.join(root, b"link-to-\xe9"))
    os.makedirs(os.path.join(root, b"empty-dir/nested-empty"))
    os.makedirs(os.path.join(root, b"ro-dir"))
    w(b"ro-dir/inside", b"x")
    os.chmod(os.path.join(root, b"ro-dir"), 0o555)
    os.chmod(os.path.join(root, b"empty-dir"), 0o700)


def independent_walk(root: bytes) -> dict[bytes, tuple]:
    """What the manifest must say, computed another way (os.walk + whole-file reads)."""
    out: dict[bytes, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        rel_dir = os.path.relpath(dirpath, root)
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            rel = os.path.normpath(os.path.join(rel_dir, name))
            st_ = os.lstat(full)
            if stat.S_ISLNK(st_.st_mode):
                out[rel] = ("symlink", 0o777, 0, None, os.readlink(full))
            elif stat.S_ISDIR(st_.st_mode):
                out[rel] = ("dir", stat.S_IMODE(st_.st_mode), 0, None, None)
            else:
                with open(full, "rb") as f:
                    blob = f.read()
                out[rel] = ("file", stat.S_IMODE(st_.st_mode), len(blob), hashlib.sha256(blob).hexdigest(), None)
    return out


def as_dict(m: Manifest) -> dict[bytes, tuple]:
    return {e.path: (e.kind, e.mode, e.size, e.sha256, e.link) for e in m}


def tar_manifest(tool: str, root: bytes, *, bufsize: int = -1, **kw) -> Manifest:
    proc = subprocess.Popen([tool, "cf", "-", "-C", root, "."], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, bufsize=bufsize)
    try:
        manifest = manifest_from_tar(proc.stdout, **kw)
    finally:
        proc.stdout.close()
        stderr = proc.stderr.read()
        proc.stderr.close()
        rc = proc.wait()
    assert rc == 0, stderr
    return manifest


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> bytes:
    root = os.fsencode(tmp_path_factory.mktemp("tree")) + b"/t"
    build_tree(root)
    return root


def test_dir_manifest_matches_independent_walk(tree):
    m = manifest_from_dir(tree)
    expected = independent_walk(tree)
    assert as_dict(m) == expected
    assert [e.path for e in m] == sorted(expected)
    assert m.total_size == sum(v[2] for v in expected.values())
    assert m.file_count == sum(1 for v in expected.values() if v[0] != "dir")
    # spot checks, so a shared bug in both walks cannot hide
    assert m.get(b"bin/su").mode == 0o4755
    assert m.get(b"bin/ro").mode == 0o444
    assert m.get(b"etc/secret").mode == 0o600
    assert m.get(b"ro-dir").mode == 0o555
    assert m.get(b"empty").sha256 == hashlib.sha256(b"").hexdigest()
    assert m.get(b"bin/hardlink-to-plain").sha256 == m.get(b"plain.txt").sha256
    assert m.get(b"dangling").link == b"does/not/exist"
    assert m.get(b"link-to-\xe9").link == b"caf\xe9-latin1"
    assert m.get(LONG300).size == len(b"300-byte path")
    assert m.get(DEEP + b"/bottom") is not None
    assert m.get(b"") is None and m.get(b"nope") is None


@pytest.mark.parametrize("tool", TARS)
def test_tar_manifest_equals_dir_manifest(tool, tree):
    from_dir = manifest_from_dir(tree)
    from_tar = tar_manifest(tool, tree)
    assert as_dict(from_tar) == as_dict(from_dir)
    assert from_tar == from_dir
    assert from_tar.digest() == from_dir.digest()
    assert as_dict(from_tar) == independent_walk(tree)


@pytest.mark.parametrize("tool", TARS)
def test_tar_manifest_with_unbuffered_pipe_and_tiny_chunks(tool, tree):
    # bufsize=0: the raw pipe returns short reads; 512-byte chunks cross every boundary.
    expected = manifest_from_dir(tree)
    assert tar_manifest(tool, tree, bufsize=0, chunk_size=512) == expected
    assert tar_manifest(tool, tree, bufsize=0, chunk_size=512, readahead=0) == expected
    assert tar_manifest(tool, tree, readahead=0) == expected


@pytest.mark.parametrize("tool", TARS)
def test_sink_sees_every_member_and_all_data(tool, tree):
    class Collect(TreeSink):
        def __init__(self):
            self.calls = []
            self.data = {}
            self._open = None

        def begin(self, member):
            assert self._open is None
            self._open = member
            self.calls.append(("begin", member.path, member.kind))
            if member.kind == "file":
                self.data[member.path] = bytearray()

        def write(self, piece):
            assert self._open is not None and self._open.kind == "file"
            self.data[self._open.path] += piece

        def end(self, member, entry):
            assert member is self._open
            self._open = None
            self.calls.append(("end", member.path, None if entry is None else entry.kind))

    sink = Collect()
    m = tar_manifest(tool, tree, sink=sink)
    assert sink.calls[0] == ("begin", b"", "dir") and sink.calls[1] == ("end", b"", None)
    assert len(sink.calls) == 2 * (len(m) + 1)
    for path, blob in sink.data.items():
        with open(os.path.join(tree, path), "rb") as f:
            assert bytes(blob) == f.read()
        assert hashlib.sha256(blob).hexdigest() == m.get(path).sha256
    kinds = {c[1]: c[2] for c in sink.calls if c[0] == "begin"}
    assert "hardlink" in kinds.values()  # both tars store the second name as a hardlink
    ends = {c[1]: c[2] for c in sink.calls if c[0] == "end"}
    assert all(ends[p] == "file" for p, k in kinds.items() if k == "hardlink")


def test_sink_exception_propagates(tree):
    class Boom(TreeSink):
        def write(self, piece):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        tar_manifest(GNUTAR or BSDTAR, tree, sink=Boom())


def test_hardlink_entry_takes_target_data():
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tf:
        ti = tarfile.TarInfo("./a")
        ti.size, ti.mode = 3, 0o640
        tf.addfile(ti, io.BytesIO(b"abc"))
        for name, target in (("./b", "./a"), ("./c", "./b")):
            ti = tarfile.TarInfo(name)
            ti.type, ti.linkname, ti.mode = tarfile.LNKTYPE, target, 0o777
            tf.addfile(ti)
    m = manifest_from_tar(io.BytesIO(buf.getvalue()))
    a = m.get(b"a")
    assert a == Entry(b"a", "file", 0o640, 3, hashlib.sha256(b"abc").hexdigest(), None)
    assert m.get(b"b") == Entry(b"b", "file", 0o640, 3, a.sha256, None)
    assert m.get(b"c") == Entry(b"c", "file", 0o640, 3, a.sha256, None)


def test_hostile_stream_raises_tree_error_from_manifest_builder():
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        ti = tarfile.TarInfo("link")
        ti.type, ti.linkname = tarfile.SYMTYPE, "/etc"
        tf.addfile(ti)
        ti = tarfile.TarInfo("link/passwd")
        ti.size = 4
        tf.addfile(ti, io.BytesIO(b"root"))
    with pytest.raises(TreeError, match="through the symlink"):
        manifest_from_tar(io.BytesIO(buf.getvalue()))


def test_dir_manifest_refuses_fifo_and_non_directory_root(tmp_path):
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(TreeError, match="FIFOs"):
        manifest_from_dir(tmp_path)
    (tmp_path / "fifo").unlink()
    (tmp_path / "f").write_bytes(b"x")
    os.symlink(tmp_path, tmp_path.parent / (tmp_path.name + "-link"))
    with pytest.raises(TreeError, match="not a directory"):
        manifest_from_dir(tmp_path / "f")
    with pytest.raises(TreeError, match="not a directory"):
        manifest_from_dir(tmp_path.parent / (tmp_path.name + "-link"))
    with pytest.raises(TreeError, match="cannot be read"):
        manifest_from_dir(tmp_path / "missing")


def test_dir_manifest_does_not_follow_symlinked_dirs(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "x").write_bytes(b"x")
    os.symlink("real", tmp_path / "alias")
    paths = [e.path for e in manifest_from_dir(tmp_path)]
    assert paths == [b"alias", b"real", b"real/x"]


# ------------------------------------------------------------------ digest


def test_digest_changes_with_content_mode_and_link_but_not_mtime(tmp_path):
    root = os.fsencode(tmp_path) + b"/t"
    build_tree(root)
    base = manifest_from_dir(root).digest()

    def digest():
        return manifest_from_dir(root).digest()

    # mtimes (files, dirs, symlinks) do not matter
    for rel in (b"plain.txt", b"bin", b"dangling"):
        os.utime(os.path.join(root, rel), (1, 1), follow_symlinks=False)
    assert digest() == base
    if GNUTAR:
        assert tar_manifest(GNUTAR, root).digest() == base

    # one byte of content
    big = os.path.join(root, b"big.bin")
    with open(big, "r+b") as f:
        f.seek(2_000_000)
        old = f.read(1)
        f.seek(2_000_000)
        f.write(bytes([old[0] ^ 1]))
    changed = digest()
    assert changed != base
    with open(big, "r+b") as f:
        f.seek(2_000_000)
        f.write(old)
    assert digest() == base

    # one mode bit
    os.chmod(os.path.join(root, b"bin/su"), 0o755)
    assert digest() != base
    os.chmod(os.path.join(root, b"bin/su"), 0o4755)
    assert digest() == base

    # a symlink target
    link = os.path.join(root, b"dangling")
    os.unlink(link)
    os.symlink(b"does/not/exisT", link)
    assert digest() != base
    os.unlink(link)
    os.symlink(b"does/not/exist", link)
    assert digest() == base

    # a name
    os.rename(os.path.join(root, b"empty"), os.path.join(root, b"empty2"))
    assert digest() != base
    os.rename(os.path.join(root, b"empty2"), os.path.join(root, b"empty"))
    assert digest() == base

    # an empty directory appearing
    os.mkdir(os.path.join(root, b"new-empty-dir"))
    assert digest() != base


def test_digest_is_sha256_of_jsonl(tree):
    m = manifest_from_dir(tree)
    assert m.digest() == hashlib.sha256(m.to_jsonl()).hexdigest()
    assert Manifest().to_jsonl() == b"" and Manifest().digest() == hashlib.sha256(b"").hexdigest()


# ------------------------------------------------------------------- jsonl


def test_jsonl_round_trip_and_canonical_form(tree):
    m = manifest_from_dir(tree)
    blob = m.to_jsonl()
    assert blob.endswith(b"\n") and blob.count(b"\n") == len(m)
    assert Manifest.from_jsonl(blob) == m
    assert Manifest.from_jsonl(blob).digest() == m.digest()
    blob.decode("ascii")  # ensure_ascii
    for entry, line in zip(m, blob.split(b"\n")):
        obj = {
            "path": os.fsdecode(entry.path), "type": entry.kind, "mode": entry.mode, "size": entry.size,
            "sha256": entry.sha256, "link": None if entry.link is None else os.fsdecode(entry.link),
            "uname": entry.uname, "gname": entry.gname, "uid": entry.uid, "gid": entry.gid, "flags": entry.flags,
        }
        assert line == json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()
    by_path = {json.loads(line)["path"]: json.loads(line) for line in blob.splitlines()}
    assert by_path["caf\udce9-latin1"]["type"] == "file"
    assert by_path["new\nline"]["size"] == len(b"newline in name")
    st = os.lstat(tree + b"/dangling")
    assert by_path["dangling"] == {"path": "dangling", "type": "symlink", "mode": 0o777, "size": 0,
                                   "sha256": None, "link": "does/not/exist", "uid": st.st_uid, "gid": st.st_gid,
                                   "uname": pwd.getpwuid(st.st_uid).pw_name,
                                   "gname": grp.getgrgid(st.st_gid).gr_name, "flags": ""}
    assert by_path["bin/su"]["mode"] == 0o4755


def _line(**over):
    obj = {"path": "a", "type": "file", "mode": 0o644, "size": 1, "sha256": "0" * 64, "link": None}
    obj.update(over)
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode() + b"\n"


@pytest.mark.parametrize(
    "blob",
    [
        pytest.param(_line()[:-1], id="no-final-newline"),
        pytest.param(_line().replace(b",", b", "), id="spacing"),
        pytest.param(json.dumps({"type": "file", "path": "a", "mode": 420, "size": 1, "sha256": "0" * 64,
                                 "link": None}, separators=(",", ":")).encode() + b"\n", id="key-order"),
        pytest.param(_line(path="b") + _line(path="a"), id="unsorted"),
        pytest.param(_line() + _line(), id="duplicate"),
        pytest.param(_line(extra=1), id="extra-key"),
        pytest.param(_line().replace(b'"link":null,', b""), id="missing-key"),
        pytest.param(_line(type="fifo"), id="bad-type"),
        pytest.param(_line(mode=True), id="bool-mode"),
        pytest.param(_line(mode=0o17777), id="mode-too-big"),
        pytest.param(_line(size=-1), id="negative-size"),
        pytest.param(_line(size=1.0), id="float-size"),
        pytest.param(_line(sha256="A" * 64), id="uppercase-sha"),
        pytest.param(_line(sha256=None), id="file-without-sha"),
        pytest.param(_line(type="dir", size=0, sha256=None, mode=0o755, link="x"), id="dir-with-link"),
        pytest.param(_line(type="symlink", size=0, sha256=None, mode=0o755, link="x"), id="symlink-mode"),
        pytest.param(_line(path="/abs"), id="absolute"),
        pytest.param(_line(path="a/../b"), id="dotdot"),
        pytest.param(_line(path="a//b"), id="empty-component"),
        pytest.param(_line(path="\udce9\udc41"), id="bad-surrogate"),
        pytest.param(_line(path="\udcc3\udca9"), id="non-canonical-escape"),  # would decode back as 'é'
        pytest.param(_line().replace(b'"a"', b'"\\u0061"'), id="needless-escape"),
        pytest.param(b"[]\n", id="not-an-object"),
        pytest.param(b"{\n", id="not-json"),
    ],
)
def test_from_jsonl_refuses_non_canonical_or_invalid(blob):
    with pytest.raises(TreeError):
        Manifest.from_jsonl(blob)


def test_manifest_refuses_duplicates_and_sorts():
    e1 = Entry(b"b", "dir", 0o755, 0, None, None)
    e2 = Entry(b"a", "symlink", 0o777, 0, None, b"b")
    assert [e.path for e in Manifest([e1, e2])] == [b"a", b"b"]
    with pytest.raises(TreeError, match="twice"):
        Manifest([e1, e1])
    # bytes order, not str order: '/' (0x2f) sorts after '.' (0x2e) and before '0'
    paths = [b"a0", b"a/b", b"a.b", b"a", b"\xff", b"Z"]
    m = Manifest(Entry(p, "dir", 0o755, 0, None, None) for p in paths)
    assert [e.path for e in m] == sorted(paths)


_names = st.binary(min_size=1, max_size=40).filter(
    lambda b: b"/" not in b and b"\0" not in b and b not in (b".", b".."))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.lists(_names, min_size=1, max_size=3), st.sampled_from(["file", "dir", "symlink"]),
                          st.integers(0, 0o7777), st.binary(min_size=1, max_size=30).filter(lambda b: b"\0" not in b)),
                max_size=12))
def test_jsonl_round_trip_property(items):
    entries = {}
    for parts, kind, mode, link in items:
        path = b"/".join(parts)
        if kind == "file":
            entries[path] = Entry(path, "file", mode, len(link), hashlib.sha256(link).hexdigest(), None)
        elif kind == "dir":
            entries[path] = Entry(path, "dir", mode, 0, None, None)
        else:
            entries[path] = Entry(path, "symlink", 0o777, 0, None, link)
    m = Manifest(entries.values())
    again = Manifest.from_jsonl(m.to_jsonl())
    assert again == m and again.digest() == m.digest()


def test_from_jsonl_wants_bytes():
    with pytest.raises(TreeError, match="expected bytes"):
        Manifest.from_jsonl('{"link":null}\n')
    assert Manifest.from_jsonl(bytearray(b"")) == Manifest()


def test_golden_jsonl_and_digest():
    """The canonical bytes are a contract (tree_sha256 is stored everywhere): changing them breaks every digest."""
    m = Manifest([
        Entry(b"d", "dir", 0o755, 0, None, None, "root", "wheel", 0, 0),
        Entry(b"d/caf\xe9\n", "file", 0o4554, 3, hashlib.sha256(b"abc").hexdigest(), None,
              "root", "operator", 0, 5, "schg"),
        Entry(b"l", "symlink", 0o777, 0, None, b"../\xff", "root", "wheel", 0, 0),
    ])
    assert m.to_jsonl() == (
        b'{"flags":"","gid":0,"gname":"wheel","link":null,"mode":493,"path":"d","sha256":null,"size":0,'
        b'"type":"dir","uid":0,"uname":"root"}\n'
        b'{"flags":"schg","gid":5,"gname":"operator","link":null,"mode":2412,"path":"d/caf\\udce9\\n",'
        b'"sha256":"ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad","size":3,"type":"file",'
        b'"uid":0,"uname":"root"}\n'
        b'{"flags":"","gid":0,"gname":"wheel","link":"../\\udcff","mode":511,"path":"l","sha256":null,"size":0,'
        b'"type":"symlink","uid":0,"uname":"root"}\n'
    )
    assert m.digest() == hashlib.sha256(m.to_jsonl()).hexdigest()
    assert Manifest.from_jsonl(m.to_jsonl()) == m


def test_a_stage_differing_only_in_one_group_or_flag_has_another_digest():
    base = [Entry(b"sbin", "dir", 0o755, 0, None, None, "root", "wheel", 0, 0),
            Entry(b"sbin/shutdown", "file", 0o4554, 3, hashlib.sha256(b"abc").hexdigest(), None,
                  "root", "operator", 0, 5)]
    other_group = base[:1] + [Entry(b"sbin/shutdown", "file", 0o4554, 3, base[1].sha256, None, "root", "wheel", 0, 0)]
    flagged = base[:1] + [Entry(b"sbin/shutdown", "file", 0o4554, 3, base[1].sha256, None,
                                "root", "operator", 0, 5, "schg")]
    no_setuid = base[:1] + [Entry(b"sbin/shutdown", "file", 0o554, 3, base[1].sha256, None, "root", "operator", 0, 5)]
    digests = {Manifest(x).digest() for x in (base, other_group, flagged, no_setuid)}
    assert len(digests) == 4


def test_manifests_stored_before_owners_were_recorded_still_read_with_their_digest():
    legacy = (
        b'{"link":null,"mode":493,"path":"d","sha256":null,"size":0,"type":"dir"}\n'
        b'{"link":null,"mode":2541,"path":"d/caf\\udce9\\n",'
        b'"sha256":"ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad","size":3,"type":"file"}\n'
    )
    m = Manifest.from_jsonl(legacy)
    assert m.digest() == hashlib.sha256(legacy).hexdigest() and m.to_jsonl() == legacy
    assert m.get(b"d").uname == "" and m.get(b"d/caf\xe9\n").mode == 0o4755
    with pytest.raises(TreeError, match="mixed"):
        Manifest.from_jsonl(legacy.splitlines(keepends=True)[0] + Manifest(
            [Entry(b"e", "dir", 0o755, 0, None, None)]).to_jsonl())
