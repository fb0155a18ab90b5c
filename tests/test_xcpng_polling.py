"""Schedules and sensors never boot an xcpng VM just to look at it."""

from __future__ import annotations

import datetime as dt

import dagster as dg

from fruix_dagster.defs.schedules import SCHEDULE, SENSOR
from tests.conftest import make_ssh_build
from tests.support.xapi_fake import xapi_server  # noqa: F401
from tests.test_xcpng_common import stopped_guest, use_password, wire_vm, xcpng_guest_table


def test_sensor_and_schedule_do_not_touch_a_halted_vm(xapi_server, ssh_guest_factory, tmp_path, monkeypatch):
    use_password(xapi_server, monkeypatch)
    guest = stopped_guest(ssh_guest_factory)
    vm = wire_vm(xapi_server, guest)
    sb = make_ssh_build(tmp_path, guest, guests=[xcpng_guest_table(guest, vm, xapi_server)])
    defs = sb.defs()
    calls_before = len(xapi_server.calls)
    with dg.build_sensor_context(instance=sb.instance, definitions=defs) as ctx:
        assert isinstance(defs.resolve_sensor_def(SENSOR)(ctx), dg.SkipReason)
    at = dt.datetime(2026, 11, 28, 2, 0, tzinfo=dt.timezone.utc)
    with dg.build_schedule_context(scheduled_execution_time=at, instance=sb.instance,
                                   repository_def=defs.get_repository_def()) as ctx:
        [request] = defs.resolve_schedule_def(SCHEDULE).evaluate_tick(ctx).run_requests
    assert request.asset_selection is None  # the run itself boots the VM and reuses what it can
    assert len(xapi_server.calls) == calls_before
    assert vm.power_state == "Halted" and not guest.running
