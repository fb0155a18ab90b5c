"""METALOG parsing and application (NO_ROOT stages): what install -M writes is read; anything else is refused."""

from __future__ import annotations

import hashlib

import pytest

from fruix_dagster.errors import TreeError
from fruix_dagster.tree.manifest import Entry, Manifest
from fruix_dagster.tree.metalog import apply_metalog, parse_metalog

GOOD = b"""\
. type=dir uname=root gname=wheel mode=0755
./sbin type=dir uname=root gname=wheel mode=0755
./sbin/shutdown type=file uname=root gname=operator mode=04554 size=3 time=1700000000.000000000
./usr type=dir uname=root gname=wheel mode=0755
./usr/bin type=dir uname=root gname=wheel mode=0755
./usr/bin/su type=file uname=root gname=wheel mode=04555 size=3 sha256digest=abc flags=schg
./usr/bin/caf\\303\\251\\040x type=file uname=root gname=wheel mode=0444 size=3
./usr/bin/link type=link uname=root gname=wheel mode=0755 link=su
# a comment
./usr/bin/su type=file uname=root gname=wheel mode=04555 size=3 flags=schg,uappnd
"""
IDS = {("u", "root"): (0, "root"), ("g", "wheel"): (0, "root"), ("g", "operator"): (37, "operator")}
SHA = hashlib.sha256(b"abc").hexdigest()


def tree() -> Manifest:
    return Manifest([
        Entry(b"sbin", "dir", 0o755, 0, None, None, "nobody", "nogroup", 65534, 65534),
        Entry(b"sbin/shutdown", "file", 0o4554, 3, SHA, None, "nobody", "nogroup", 65534, 65534),
        Entry(b"usr", "dir", 0o755, 0, None, None, "nobody", "nogroup", 65534, 65534),
        Entry(b"usr/bin", "dir", 0o755, 0, None, None, "nobody", "nogroup", 65534, 65534),
        Entry(b"usr/bin/su", "file", 0o4555, 3, SHA, None, "nobody", "nogroup", 65534, 65534),
        Entry("usr/bin/café x".encode(), "file", 0o444, 3, SHA, None, "nobody", "nogroup", 65534, 65534),
        Entry(b"usr/bin/link", "symlink", 0o777, 0, None, b"su", "nobody", "nogroup", 65534, 65534),
    ])


def test_install_m_lines_are_read_and_applied():
    meta = parse_metalog(GOOD)
    assert meta[b""].kind == "dir" and meta[b"sbin/shutdown"].mode == 0o4554
    assert meta["usr/bin/café x".encode()].mode == 0o444  # strsvis \ooo escapes decoded
    assert meta[b"usr/bin/su"].flags == "schg,uappnd"  # the later line wins
    m = apply_metalog(tree(), meta, IDS)
    shutdown = m.get(b"sbin/shutdown")
    assert (shutdown.uname, shutdown.gname, shutdown.uid, shutdown.gid, shutdown.mode) == ("root", "operator", 0, 37,
                                                                                           0o4554)
    assert m.get(b"usr/bin/su").flags == "schg,uappnd"
    assert m.get(b"usr/bin/link").mode == 0o777 and m.get(b"usr/bin/link").gname == "root"


@pytest.mark.parametrize("line, message", [
    (b"/set type=file uname=root\n", "mtree /set command"),
    (b"usr/bin/x type=file uname=root gname=wheel mode=0555\n", "does not start with './'"),
    (b"./../etc/passwd type=file uname=root gname=wheel mode=0644\n", "not a normalized path"),
    (b"./a//b type=file uname=root gname=wheel mode=0644\n", "not a normalized path"),
    (b"./a\\000b type=file uname=root gname=wheel mode=0644\n", "not a normalized path"),
    (b"./dev/mem type=char uname=root gname=kmem mode=0640\n", "type='char'"),
    (b"./x type=file uname=root gname=wheel mode=0644 evil=1\n", "unknown keyword"),
    (b"./x type=file uname=root gname=wheel mode=0644 mode=0755\n", "given twice"),
    (b"./x type=file uname=root gname=wheel mode=9999\n", "mode='9999'"),
    (b"./x type=file uname=root gname=wheel mode=017777\n", "mode='017777'"),
    (b"./x type=file uname=ro;ot gname=wheel mode=0644\n", "not a user or group name"),
    (b"./x type=file gname=wheel mode=0644\n", "no uname="),
    (b"./x type=file uname=root gname=wheel mode=0644 flags=schg,rm\n", "unknown file flag 'rm'"),
    (b"./x type=file uname=root gname=wheel mode=0644 size=-1\n", "size='-1'"),
    (b"./x type=link uname=root gname=wheel mode=0755\n", "without link="),
    (b"./x type=dir uname=root gname=wheel mode=0755 link=y\n", "link= on a dir"),
    (b"./x type=file uname=root gname=wheel mode=0644 \\q\n", "unknown keyword"),
    (b"./x\\9 type=file uname=root gname=wheel mode=0644\n", "unknown escape"),
    (b"./caf\xc3\xa9 type=file uname=root gname=wheel mode=0644\n", "non-ASCII byte"),
])
def test_hostile_or_malformed_lines_are_one_clear_error(line, message):
    with pytest.raises(TreeError, match=message) as exc:
        parse_metalog(b". type=dir uname=root gname=wheel mode=0755\n" + line)
    assert "METALOG" in str(exc.value)


def test_a_metalog_that_does_not_describe_the_tree_is_refused():
    meta = parse_metalog(GOOD + b"./usr/bin/ghost type=file uname=root gname=wheel mode=0555 size=1\n")
    with pytest.raises(TreeError, match="1 METALOG entries are not in the stage .*ghost"):
        apply_metalog(tree(), meta, IDS)
    meta = parse_metalog(b"\n".join(x for x in GOOD.split(b"\n") if not x.startswith(b"./usr/bin/link")))
    with pytest.raises(TreeError, match="1 staged entries are not in the METALOG .*link"):
        apply_metalog(tree(), meta, IDS)
    meta = parse_metalog(GOOD.replace(b"./usr/bin/link type=link", b"./usr/bin/link type=file").replace(
        b"mode=0755 link=su", b"mode=0755"))
    with pytest.raises(TreeError, match="says file, the stage has a symlink"):
        apply_metalog(tree(), meta, IDS)
    meta = parse_metalog(GOOD.replace(b"link=su", b"link=/etc/passwd"))
    with pytest.raises(TreeError, match="link="):
        apply_metalog(tree(), meta, IDS)
    meta = parse_metalog(GOOD.replace(b"mode=04554 size=3", b"mode=04554 size=4"))
    with pytest.raises(TreeError, match="size=4"):
        apply_metalog(tree(), meta, IDS)


def test_collecting_with_a_hostile_metalog_publishes_nothing(tmp_path):
    from fruix_dagster.errors import StoreError
    from fruix_dagster.guest.local import LocalTransport
    from fruix_dagster.store import ArtifactStore

    stage = tmp_path / "stage-world"
    (stage / "sbin").mkdir(parents=True)
    (stage / "sbin" / "init").write_bytes(b"init")
    metalog = tmp_path / "stage-world.METALOG"
    metalog.write_bytes(b". type=dir uname=root gname=wheel mode=0755\n"
                        b"./sbin type=dir uname=root gname=wheel mode=0755\n"
                        b"./sbin/init type=file uname=root gname=wheel mode=0555 size=4\n"
                        b"./../../etc/shadow type=file uname=root gname=wheel mode=04777\n")
    store = ArtifactStore(tmp_path / "store")
    with pytest.raises(StoreError, match=r"METALOG .*not a normalized path inside DESTDIR.*nothing was published"):
        store.collect(LocalTransport(), str(stage), asset="world_stage", target="amd64",
                      metalog=str(metalog), id_etc=str(tmp_path / "etc"))
    assert list((tmp_path / "store").iterdir()) == []
    # an owner neither the system nor the source tree's etc/ knows
    metalog.write_bytes(b"./sbin type=dir uname=root gname=wheel mode=0755\n"
                        b"./sbin/init type=file uname=nosuchuser gname=wheel mode=0555 size=4\n")
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "master.passwd").write_text("root:*:0:0::0:0:Charlie &:/root:/bin/sh\n")
    (tmp_path / "etc" / "group").write_text("wheel:*:0:root\n")
    with pytest.raises(StoreError, match="user nosuchuser"):
        store.collect(LocalTransport(), str(stage), asset="world_stage", target="amd64",
                      metalog=str(metalog), id_etc=str(tmp_path / "etc"))
    assert list((tmp_path / "store").iterdir()) == []
    # and a good one: wheel resolves through the tree's etc/group when the system lacks it
    metalog.write_bytes(b". type=dir uname=root gname=wheel mode=0755\n"
                        b"./sbin type=dir uname=root gname=wheel mode=0755\n"
                        b"./sbin/init type=file uname=root gname=wheel mode=0555 size=4 flags=schg\n")
    stored = store.collect(LocalTransport(), str(stage), asset="world_stage", target="amd64",
                           metalog=str(metalog), id_etc=str(tmp_path / "etc"))
    init = stored.manifest.get(b"sbin/init")
    assert (init.uid, init.gid, init.mode, init.flags) == (0, 0, 0o555, "schg")
