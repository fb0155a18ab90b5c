"""Where a build VM can be reached: its address, and an SSH server answering there.

:class:`AddressDiscovery` is the part of :class:`~fruix_dagster.hypervisor.vm.BuildVM`
that waits, under the caller's deadline, for the static ``host`` or the
first ``N/ip`` / ``N/ipv4/M`` address of the VM's guest metrics (optionally
inside ``address_cidr``), and then for an SSH banner on the port.  It uses
the VM's ``client``, ``ref``, ``xs``, ``label``, ``guest_name``,
``boot_timeout``, ``poll``, ``log`` and ``power_state()``.

Plain Python; no dagster import.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import time
from typing import Any, Callable

from fruix_dagster.errors import HypervisorError
from fruix_dagster.hypervisor.xapi import XapiCallError, XapiClient

NULL_REF = "OpaqueRef:NULL"

_NET_KEY = re.compile(r"(\d+)/(?:ip|ipv4/(\d+))")


def pick_address(networks: dict[str, str], cidr: str | None = None) -> str | None:
    """The first ``N/ip`` or ``N/ipv4/M`` address (lowest N, then ``ip``, then lowest M).

    Only addresses inside ``cidr`` count when it is given; link-local and
    unspecified addresses never count.
    """
    net = ipaddress.ip_network(cidr, strict=False) if cidr else None
    found: list[tuple[tuple[int, int], str]] = []
    for key, value in (networks or {}).items():
        m = _NET_KEY.fullmatch(str(key))
        if not m:
            continue
        try:
            ip = ipaddress.ip_address(str(value).strip())
        except ValueError:
            continue
        if ip.is_link_local or ip.is_unspecified:
            continue
        if net is not None and (ip.version != net.version or ip not in net):
            continue
        found.append(((int(m.group(1)), -1 if m.group(2) is None else int(m.group(2))), str(ip)))
    return min(found)[1] if found else None


def ssh_banner(host: str, port: int, timeout: float) -> str | None:
    """``None`` when an SSH server answers on host:port; else what happened instead."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            data = sock.recv(4)
            if data.startswith(b"SSH-"):
                return None
            return f"a connection, but no SSH banner (got {data!r})"
    except OSError as exc:
        return f"{type(exc).__name__}: {exc.strerror or exc}"


class AddressDiscovery:
    """Address discovery of a :class:`~fruix_dagster.hypervisor.vm.BuildVM` (see the module docstring)."""

    client: XapiClient
    ref: str | None
    xs: Any
    guest_name: str
    boot_timeout: float
    poll: float
    log: Callable[[str], None]
    label: str
    power_state: Callable[[], str]

    def wait_for_address(self, static_host: str | None, port: int, deadline: float, *,
                         ssh_timeout: float = 5.0) -> str:
        """The static host, or the guest-metrics address; then an SSH banner on ``port``."""
        limit = f"boot_timeout = {self.boot_timeout:g} s"
        t0 = time.monotonic()
        if static_host:
            address = static_host
            self.log(f"xcpng: using the static address {address} of guest {self.guest_name!r}")
        else:
            address = self._address_from_metrics(deadline, limit)
            self.log(f"xcpng: {self.label} reports address {address} "
                     f"(after {time.monotonic() - t0:.1f} s)")
        last = "nothing tried yet"
        pause = min(0.2, self.poll)
        while True:
            problem = ssh_banner(address, port, timeout=max(0.2, min(ssh_timeout, deadline - time.monotonic())))
            if problem is None:
                self.log(f"xcpng: SSH answers on {address}:{port}")
                return address
            last = problem
            if time.monotonic() >= deadline:
                raise HypervisorError(
                    f"{self.label}: expected an SSH server on {address}:{port} within {limit}, waited "
                    f"{time.monotonic() - t0:.0f} s and got {last}; check that sshd runs in the guest, "
                    f"that port {port} is right and that no firewall is in the way")
            pause = self._nap(pause, deadline)

    def _address_from_metrics(self, deadline: float, limit: str) -> str:
        assert self.ref is not None
        cidr = self.xs.address_cidr
        t0 = time.monotonic()
        seen = "guest metrics: none (VM.guest_metrics is OpaqueRef:NULL)"
        pause = min(0.2, self.poll)
        next_note = t0 + 30
        while True:
            gm = self.client.call("VM.get_guest_metrics", self.ref)
            if gm and gm != NULL_REF:
                try:
                    nets = dict(self.client.call("VM_guest_metrics.get_networks", gm) or {})
                except XapiCallError as exc:
                    if exc.code != "HANDLE_INVALID":  # metrics replaced while we looked: look again
                        raise
                    nets = None
                if nets is not None:
                    address = pick_address(nets, cidr)
                    if address:
                        return address
                    shown = ", ".join(f"{k}={v}" for k, v in sorted(nets.items())) or "no addresses"
                    seen = (f"guest metrics networks: {shown}"
                            + (f" — none inside address_cidr {cidr}" if cidr and nets else ""))
            waited = time.monotonic() - t0
            if time.monotonic() >= deadline:
                state = self.power_state()
                raise HypervisorError(
                    f"{self.label}: expected an IPv4 address in its guest metrics (N/ip or N/ipv4/M"
                    f"{f' inside {cidr}' if cidr else ''}) within {limit}, waited {waited:.0f} s and saw "
                    f"{seen}; the VM is {state}. FreeBSD guests without xe-guest-utilities never "
                    f"report an address: install xe-guest-utilities in the guest, or set a static "
                    f"host = \"<address>\" in the [[guest]] named {self.guest_name!r}")
            if time.monotonic() >= next_note:
                self.log(f"xcpng: still waiting for an address of {self.label} ({waited:.0f} s; {seen})")
                next_note = time.monotonic() + 30
            state_check = self.power_state()
            if state_check not in ("Running",):
                raise HypervisorError(
                    f"{self.label}: expected it to stay Running while waiting for its address, found it "
                    f"{state_check} after {waited:.0f} s; check the VM's console (did the guest power "
                    f"itself off or crash?)")
            pause = self._nap(pause, deadline)

    def _nap(self, pause: float, deadline: float) -> float:
        """Sleep ``pause`` seconds (never past ``deadline``); returns the next, longer pause (up to ``poll``)."""
        time.sleep(min(pause, max(0.0, deadline - time.monotonic())))
        return min(pause * 1.5, self.poll)
