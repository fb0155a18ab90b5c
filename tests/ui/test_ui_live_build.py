"""A running build in the browser: live compiler output, then kernel_stage's asset view.

dagster-webserver and dagster-daemon on a settings file whose buildworld
pauses half-way (the sample tree's ``SAMPLE_SLEEP``), a run launched as the
asset graph's *Materialize* button launches it (implicit asset job, partition
tag only), and Debian's chromium:

1. the run page, *stdout*: compiler lines of buildworld appear while the run
   is still in progress (the instance agrees it has not ended);
2. after the run, ``kernel_stage``'s page shows its kinds (``freebsd``,
   ``make``), the owner from ``[assets]``, the metadata table with the
   instance's ``tree_sha256``, the last builds table, and — behind the
   metadata row's *[Show Markdown]* — the inline history chart (an image
   decoded by the browser).
"""

from __future__ import annotations

import re
import time

import dagster as dg
from playwright.sync_api import Page, expect

from fruix_dagster.defs.records import latest
from tests.conftest import LocalBuild, copy_sample
from tests.support.dagster_servers import dagster_servers, materialize_like_the_ui

ASSETS = ["freebsd_source", "world_build", "kernel_build", "world_stage", "kernel_stage",
          "headers_slice", "bootloader_slice"]
SLEEP_S = 90          # buildworld pauses this long after its first compiler lines
DONE = {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}
COMPILER_LINE = re.compile(r"cc .*-c \S+\.c -o \S+\.o")


def new_tab(browser) -> Page:
    tab = browser.new_page()

    def skip_community_modal() -> None:
        tab.get_by_role("button", name="Skip", exact=True).click()
        tab.mouse.move(0, 0)

    tab.add_locator_handler(tab.get_by_text("Join the Dagster community"), skip_community_modal)
    return tab


def test_live_compiler_output_then_kernel_stage_asset_view(browser, tmp_path, monkeypatch, ui_artifacts):
    home = tmp_path / "dagster-home"
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    copy_sample(tmp_path / "src")
    lb = LocalBuild(tmp_path, tmp_path / "fruix.toml", None)  # type: ignore[arg-type]
    lb.rewrite(build={"world_make_vars": {"SAMPLE_SLEEP": str(SLEEP_S)}}, extra="""
        [assets]
        owners = ["team:build-farm"]
        tags = { os = "freebsd" }
        [schedule]
        enabled = false
        [sensor]
        enabled = false
        """)
    monkeypatch.setenv("FRUIX_CONFIG", str(lb.settings_path))
    with dagster_servers(home, lb.settings_path, tmp_path) as servers:
        instance = dg.DagsterInstance.from_config(str(home))
        servers.wait_ready(instance)
        run_id = materialize_like_the_ui(servers, ASSETS, "amd64")
        page = new_tab(browser)
        try:
            # 1. live output on the run page while buildworld runs
            page.goto(servers.base_url + f"/runs/{run_id}")
            stdout = page.get_by_role("button", name="stdout")
            expect(stdout).to_be_enabled(timeout=240_000)      # once the run worker captures its logs
            stdout.click()
            # the in-process executor captures the whole run under one key ("pid: N (7 steps)")
            page.get_by_placeholder("Select a step…").click()
            page.get_by_role("menuitem").first.click()
            expect(page.get_by_text(COMPILER_LINE).first).to_be_visible(timeout=240_000)
            run = instance.get_run_by_id(run_id)
            assert run is not None and run.status not in DONE, run.status
            page.screenshot(path=str(ui_artifacts / "live-stdout.png"))
            logs = lb.tmp / "store" / "logs" / "amd64"
            # the host copy grows as ….log.partial and gets its name when the step has ended
            assert list(logs.glob("buildworld-*.log.partial")) and not list(logs.glob("buildworld-*.log"))

            deadline = time.monotonic() + 900
            while instance.get_run_by_id(run_id).status not in DONE:
                assert time.monotonic() < deadline, f"run not done after 900 s\n{servers.logs()}"
                time.sleep(1)
            assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.SUCCESS, servers.logs()
            kernel = latest(instance, "kernel_stage", "amd64").metadata

            # 2. kernel_stage's asset view
            page.goto(servers.base_url + "/assets/kernel_stage")
            expect(page.get_by_text("Latest materialization")).to_be_visible(timeout=60_000)
            for kind in ("freebsd", "make"):
                expect(page.get_by_text(kind, exact=True).first).to_be_visible()
            expect(page.get_by_text("build-farm").first).to_be_visible()
            row = page.locator("tr", has=page.locator("td:first-child").get_by_text("tree_sha256", exact=True))
            expect(row.locator("td").nth(2)).to_have_text(kernel["tree_sha256"])
            builds = page.locator("tr", has=page.locator("td:first-child").get_by_text("last_builds", exact=True))
            expect(builds).to_contain_text("size_mb")              # the table, rendered with its schema
            expect(builds).to_contain_text(kernel["tree_sha256"][:16])
            page.screenshot(path=str(ui_artifacts / "kernel-stage-view.png"), full_page=True)
            # the chart: Markdown metadata opens in a dialog, where the image is drawn inline
            md_row = page.locator("tr", has=page.locator("td:first-child").get_by_text("history_chart", exact=True))
            md_row.get_by_text("[Show Markdown]").click()
            chart = page.get_by_role("dialog").locator('img[src^="data:image/png;base64,"]').first
            expect(chart).to_be_visible()
            width = chart.evaluate("img => img.complete ? img.naturalWidth : 0")
            assert width == 576, width
            page.screenshot(path=str(ui_artifacts / "kernel-stage-chart.png"))
            print(f"\nscreenshots: {ui_artifacts}")
        finally:
            page.close()
            instance.dispose()
