"""The development-environment check on this host (a plain guest, local transport)."""

from __future__ import annotations

import time
from pathlib import Path

from fruix_dagster.fruix.devenv import BUILD_PATH, check_development_environment
from fruix_dagster.guest.local import LocalTransport


def check(tmp_path: Path, **kw):
    return check_development_environment(LocalTransport(), system="plain", build_root=str(tmp_path / "root"),
                                         min_free_gib=0.001, **kw)


def test_this_host_has_what_the_build_needs(tmp_path):
    assert check(tmp_path, make="bmake").problems == ()


def test_each_missing_piece_is_named(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "Makefile.inc1").write_text("# a FreeBSD tree\n")
    r = check(tmp_path, make="make", source_root=str(src), meta_mode=True,
              tools=("cc", "no-such-cc-xyz"), host_now=time.time() + 10 * 86400)
    problems = "\n".join(r.problems)
    assert f"tool no-such-cc-xyz on the build's PATH ({BUILD_PATH}" in problems
    assert "tool cc " not in problems
    assert "bmake as make (FreeBSD's Makefile needs bmake" in problems      # GNU make here
    assert "/dev/filemon for WITH_META_MODE" in problems
    assert "a clock that is not in the past" in problems
    assert len(r.problems) == 4


def test_sample_tree_builds_with_gnu_make_and_bmake_must_be_new_enough(tmp_path):
    # the sample tree has no Makefile.inc1: GNU make is fine for it
    assert check(tmp_path, make="make", source_root=str(tmp_path)).problems == ()
    src = tmp_path / "src"
    src.mkdir()
    (src / "Makefile.inc1").write_text("")
    assert check(tmp_path, make="bmake", source_root=str(src)).problems == ()  # Debian's bmake 20200710
    assert "tool no-such-make (build.make) on PATH" in check(tmp_path, make="no-such-make").problems
