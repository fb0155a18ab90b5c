"""The asset view through the GraphQL API the UI uses: kinds, owners, tags, and staleness.

A settings change that changes what an asset builds (here ``kernel_make_vars``)
changes that asset's code version: after the code location reloads, the UI's
``staleStatus`` of ``kernel_build`` and ``kernel_stage`` is STALE with a code
version cause, before any run, while ``world_build`` stays FRESH.  A change
that does not change the output (``build.jobs``) marks nothing stale.
"""

from __future__ import annotations

import dagster as dg

from tests.conftest import LocalBuild, copy_sample
from tests.support.dagster_servers import dagster_servers, reload_location

NODES = """
query Nodes($partition: String) {
  assetNodes(assetKeys: [{path: ["world_build"]}, {path: ["kernel_build"]}, {path: ["kernel_stage"]},
                         {path: ["build_history"]}]) {
    assetKey { path }
    kinds
    owners { __typename ... on TeamAssetOwner { team } ... on UserAssetOwner { email } }
    tags { key value }
    staleStatus(partition: $partition)
    staleCauses(partition: $partition) { key { path } category reason }
  }
}"""
ASSETS_TOML = """
[assets]
owners = ["team:build-farm", "ops@example.org"]
tags = { tier = "base" }
[schedule]
enabled = false
[sensor]
enabled = false
"""


def nodes(servers) -> dict[str, dict]:
    data = servers.graphql(NODES, {"partition": "amd64"})["assetNodes"]
    return {n["assetKey"]["path"][0]: n for n in data}


def test_kinds_owners_tags_and_a_settings_change_marks_assets_stale(tmp_path, monkeypatch):
    home = tmp_path / "dagster-home"
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    copy_sample(tmp_path / "src")
    lb = LocalBuild(tmp_path, tmp_path / "fruix.toml", None)  # type: ignore[arg-type]
    lb.rewrite(extra=ASSETS_TOML)
    monkeypatch.setenv("FRUIX_CONFIG", str(lb.settings_path))
    with dagster_servers(home, lb.settings_path, tmp_path, daemon=False) as servers:
        instance = dg.DagsterInstance.from_config(str(home))
        lb.instance = instance
        assert lb.run(select=["freebsd_source", "world_build", "kernel_build", "kernel_stage"]).success
        servers.wait_ready(instance)

        before = nodes(servers)
        assert sorted(before["kernel_stage"]["kinds"]) == ["freebsd", "make"]
        assert before["build_history"]["kinds"] == ["pandas"]
        assert {o.get("team") or o.get("email") for o in before["kernel_stage"]["owners"]} == \
            {"build-farm", "ops@example.org"}
        assert {"key": "tier", "value": "base"} in before["kernel_stage"]["tags"]
        assert {n: before[n]["staleStatus"] for n in ("world_build", "kernel_build", "kernel_stage")} == \
            {"world_build": "FRESH", "kernel_build": "FRESH", "kernel_stage": "FRESH"}

        # -jN does not change the output: nothing turns stale
        lb.rewrite(build={"jobs": 1}, extra=ASSETS_TOML)
        reload_location(servers)
        assert {n: s["staleStatus"] for n, s in nodes(servers).items() if n != "build_history"} == \
            {"world_build": "FRESH", "kernel_build": "FRESH", "kernel_stage": "FRESH"}

        # a kernel make variable does: kernel_build (code version) and kernel_stage (its upstream)
        lb.rewrite(build={"kernel_make_vars": {"WITH_SAMPLE_OPTION": "yes"}}, extra=ASSETS_TOML)
        reload_location(servers)
        after = nodes(servers)
        assert after["world_build"]["staleStatus"] == "FRESH", after["world_build"]
        assert after["kernel_build"]["staleStatus"] == "STALE", after["kernel_build"]
        assert after["kernel_stage"]["staleStatus"] == "STALE", after["kernel_stage"]
        causes = after["kernel_build"]["staleCauses"]
        assert any(c["category"] == "CODE" and "code version" in c["reason"] for c in causes), causes
        instance.dispose()
