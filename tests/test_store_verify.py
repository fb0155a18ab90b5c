"""``fruix-dagster store verify``: a flipped byte, a changed mode, a removed or added file are named; exit 1."""

from __future__ import annotations

import os

from fruix_dagster import cli
from fruix_dagster.guest.local import LocalTransport
from fruix_dagster.store import ArtifactStore
from tests.conftest import write_settings
from tests.test_store import odd_tree


def setup(tmp_path, monkeypatch):
    store = ArtifactStore(tmp_path / "store")
    src = odd_tree(tmp_path / "src")
    world = store.collect(LocalTransport(), str(src), asset="world_stage", target="amd64")
    other = store.collect(LocalTransport(), str(src / "bin"), asset="kernel_stage", target="arm64")
    settings = write_settings(tmp_path / "fruix.toml", store={"root": str(tmp_path / "store")},
                              guests=[{"name": "local", "kind": "local"}],
                              targets=[{"name": "amd64", "guest": "local"}, {"name": "arm64", "guest": "local"}])
    monkeypatch.setenv("FRUIX_CONFIG", str(settings))
    return world, other


def test_a_clean_store_verifies(tmp_path, monkeypatch, capsys):
    setup(tmp_path, monkeypatch)
    assert cli.main(["store", "verify"]) == 0
    assert "verified 2 entries (every target)" in capsys.readouterr().out


def test_a_flipped_byte_and_every_other_mismatch_are_named(tmp_path, monkeypatch, capsys):
    world, other = setup(tmp_path, monkeypatch)
    big = world.tree / "big"
    os.chmod(big, 0o644)
    with open(big, "r+b") as f:
        f.seek(1 << 20)
        byte = f.read(1)
        f.seek(1 << 20)
        f.write(bytes([byte[0] ^ 0x01]))
    os.chmod(world.tree / "bin" / "su", 0o755)  # lost its setuid bit
    os.chmod(world.tree / "ro", 0o755)
    os.unlink(world.tree / "ro" / "f")
    (world.tree / "intruder").write_bytes(b"x")
    assert cli.main(["store", "verify"]) == 1
    captured = capsys.readouterr()
    lines = [x for x in captured.out.splitlines() if x.startswith(world.path.name)]
    assert any(": big: content changed: sha256 " in x for x in lines)
    assert any(": bin/su: mode 0755, the manifest says 4555" in x for x in lines)
    assert any(": ro/f: missing" in x for x in lines)
    assert any(": intruder: not in the manifest" in x for x in lines)
    assert not any(x.startswith(other.path.name) for x in captured.out.splitlines())
    assert "mismatches in 1 of 2 entries" in captured.err
    # one target only: the other target's intact entry passes
    assert cli.main(["store", "verify", "--target", "arm64"]) == 0
    assert cli.main(["store", "verify", "--target", "amd64"]) == 1


def test_a_damaged_manifest_is_named(tmp_path, monkeypatch, capsys):
    world, _ = setup(tmp_path, monkeypatch)
    data = (world.path / "manifest.jsonl").read_bytes()
    (world.path / "manifest.jsonl").write_bytes(data.replace(b'"mode":365', b'"mode":511', 1))
    assert cli.main(["store", "verify", "--target", "amd64"]) == 1
    assert "manifest.jsonl:" in capsys.readouterr().out


def test_an_unknown_target_is_one_clear_error(tmp_path, monkeypatch, capsys):
    setup(tmp_path, monkeypatch)
    assert cli.main(["store", "verify", "--target", "sparc"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("fruix-dagster: ") and "sparc" in err and "Traceback" not in err
