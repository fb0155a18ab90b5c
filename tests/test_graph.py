"""The asset registry is consistent with itself, the settings and the Dagster definitions."""

from __future__ import annotations

import dataclasses

from fruix_dagster import graph as G
from fruix_dagster.settings import SliceSettings, load_settings


def test_every_dep_is_an_earlier_asset_and_roles_are_known():
    seen: set[str] = set()
    for a in G.ASSETS:
        assert a.role in G.ROLES
        assert set(a.deps) <= seen, f"{a.name} depends on an asset that is not listed before it"
        seen.add(a.name)
    assert G.names(G.SOURCE) == (G.SOURCE_ASSET,)


def test_each_make_step_belongs_to_exactly_one_asset_and_one_step_group():
    owned = [step for a in G.ASSETS for step in a.steps]
    assert sorted(owned) == sorted(G.STEP_NAMES)
    assert sorted(G.WORLD_STEPS + G.KERNEL_STEPS) == sorted(G.STEP_NAMES)
    for a in G.ASSETS:
        if a.role == G.STAGE:
            build, step = a.installs_from
            assert build in a.deps and step in G.spec(build).steps and a.stage_dir
        else:
            assert a.installs_from is None and not a.stage_dir


def test_slices_match_the_settings_and_key_files_have_one_home():
    fields = {f.name for f in dataclasses.fields(SliceSettings)}
    defaults = SliceSettings()
    for name in G.SLICES:
        s = G.spec(name)
        assert s.slice_key in fields and getattr(defaults, s.slice_key) == s.default_globs
        assert G.spec(s.deps[0]).role == G.STAGE
    assert defaults.key_files == G.DEFAULT_KEY_FILES
    for path in G.DEFAULT_KEY_FILES:
        assert [a.name for a in G.ASSETS if path in a.key_files] == [G.key_file_home(path)]


def test_the_definitions_are_built_from_the_registry():
    import dagster as dg

    from fruix_dagster.definitions import make_definitions

    from fruix_dagster.defs.view import code_version

    settings = load_settings()
    defs = make_definitions(settings)
    ag = defs.resolve_asset_graph()
    for a in G.ASSETS:
        node = ag.get(dg.AssetKey(a.name))
        # plus guest_source (the cheap observation) on every asset that reads the source tree
        reads_source = a.role in (G.SOURCE, G.BUILD, G.STAGE)
        assert sorted(k.to_user_string() for k in node.parent_keys) == \
            sorted(a.deps + ((G.GUEST_SOURCE,) if reads_source else ()))
        # the registry's code revision, with the output-changing settings folded in (defs/view.py)
        assert node.group_name == G.GROUP
        assert node.code_version == code_version(settings, a.name, a.code_version)
        assert node.code_version.split("-")[0] == a.code_version
        assert {G.check_name(p) for p in a.required_files} <= {k.name for k in node.check_keys}
