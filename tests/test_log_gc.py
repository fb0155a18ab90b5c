"""`fruix-dagster store gc` removes host log copies no kept materialization names (log_path)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from fruix_dagster.defs.records import recent
from fruix_dagster.graph import NAMES
from tests.conftest import make_local_build

OLD = time.time() - 3 * 24 * 3600  # past the store.keep_log_days = 2 the test sets (default 14)


def _named_logs(lb, depth: int) -> set[Path]:
    out = set()
    for asset in NAMES:
        for rec in recent(lb.instance, asset, "amd64", depth):
            out.update(Path(v) for k, v in rec.metadata.items()
                       if k == "log_path" or k.startswith("log_path:"))
    return out


def test_store_gc_removes_log_copies_no_kept_materialization_names(tmp_path, monkeypatch, capsys):
    from fruix_dagster import cli

    store = {"root": str(tmp_path / "store"), "keep": 1, "keep_log_days": 2}
    lb = make_local_build(tmp_path, store=store)
    assert lb.run().success
    first_kernel = {Path(r.metadata["log_path"]) for r in recent(lb.instance, "kernel_build", "amd64", 1)}
    # a different kernel: the first kernel_build's log is no longer named by the newest 1 materialization
    lb.rewrite(store=store, targets=[{"name": "amd64", "guest": "local", "kernconf": "MINIMAL"}])
    assert lb.run(select=["kernel_build", "kernel_stage"]).success
    logs = tmp_path / "store" / "logs" / "amd64"
    named = _named_logs(lb, 1)
    assert named and all(p.is_file() and p.parent == logs for p in named)
    (old_kernel,) = first_kernel
    assert old_kernel.is_file() and old_kernel not in named
    stray_old, stray_new = logs / "buildworld-0000000000000000.log", logs / "buildworld-1111111111111111.log"
    partial = logs / "installworld-2222222222222222.log.partial"
    other_target = tmp_path / "store" / "logs" / "gone-target" / "buildkernel-3333333333333333.log"
    other_target.parent.mkdir()
    for p in (stray_old, stray_new, partial, other_target):
        p.write_text("make output\n")
    for p in [*named, old_kernel, stray_old, partial, other_target]:
        os.utime(p, (OLD, OLD))  # only stray_new is younger than the grace

    monkeypatch.setenv("DAGSTER_HOME", lb.instance.root_directory)
    monkeypatch.setenv("FRUIX_CONFIG", str(lb.settings_path))
    doomed = {old_kernel, stray_old, other_target}
    assert cli.main(["store", "gc", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"would remove {len(doomed)} log copies" in out, out
    assert all(f"would remove {p}" in out for p in doomed), out
    assert all(p.exists() for p in doomed)

    assert cli.main(["store", "gc"]) == 0
    out = capsys.readouterr().out
    assert f"removed {len(doomed)} log copies" in out, out
    assert not any(p.exists() for p in doomed)
    assert not other_target.parent.exists(), "an emptied target directory goes too"
    assert all(p.is_file() for p in named), "every log a kept materialization names stays"
    assert stray_new.is_file() and partial.is_file()
    assert cli.main(["store", "gc"]) == 0
    assert "removed 0 log copies" in capsys.readouterr().out
