"""XenAPI: find / start / stop / revert the build VM, wait for its address.

``xapi``            — :class:`XapiClient`: SDK sessions, retries, tasks;
``xapi_transport``  — connections with timeouts, TLS contexts;
``xapi_errors``     — what a failed call becomes (one clear HypervisorError);
``vm``              — :class:`BuildVM`: the ``xcpng`` guest's lifecycle and after-run policy;
``power``           — revert, start/unpause/resume, shutdown, and how XAPI answers are retried;
``address``         — the VM's address (static or guest metrics) and waiting for SSH.

Plain Python (the real ``XenAPI`` SDK); no dagster import.
"""

from fruix_dagster.hypervisor.vm import AFTER_POLICIES, FATAL_CODES, RETRY_CODES, BuildVM, pick_address
from fruix_dagster.hypervisor.xapi import (
    ORIGINATOR,
    XapiCallError,
    XapiClient,
    XapiTimeout,
    XapiUnreachable,
    parse_task_result,
)

__all__ = [
    "AFTER_POLICIES",
    "FATAL_CODES",
    "ORIGINATOR",
    "RETRY_CODES",
    "BuildVM",
    "XapiCallError",
    "XapiClient",
    "XapiTimeout",
    "XapiUnreachable",
    "parse_task_result",
    "pick_address",
]
