"""A real, Fruix-shaped SSH test guest on loopback.

:class:`SshGuest` runs Debian's OpenSSH server (``/usr/sbin/sshd -D``) on a
``127.0.0.x`` address, inside its own private *mount namespace*, so that a
login over SSH sees the filesystem of a booted, development-enabled Fruix
guest while the host's view of the filesystem stays untouched.  Tests use it
to drive the product's ``ssh`` transport (paramiko) or the system ``ssh``
client against a real server.

Requirements: root (mount namespaces, bind mounts, overlayfs), util-linux
``unshare``/``nsenter``, ``openssh-server`` (``/usr/sbin/sshd``), ``ssh``,
``ssh-keygen``, ``libarchive-tools`` (``bsdtar``), ``dash``, ``openssl`` (only
for the optional password).  The host needs an empty directory ``/frx`` to
serve as mount point; :meth:`SshGuest.start` creates it (once, empty) if it is
missing.  Nothing else on the host is modified: no system ``sshd`` service,
no change to ``/etc/ssh``.

What a login sees (inside the namespace)
========================================

``/run/current-system/metadata/store-layout.scm``
    The system's store layout, a Guix-style S-expression (see
    :func:`render_store_layout`).  Default::

        ;; Fruix system metadata: store layout of the current system.
        (store-layout
          (version 1)
          (store-root "/frx/store")
          (system "/frx/store/<hex40>-fruix-system-fruix-dev")
          (items
            ("/frx/store/<store_hash>-freebsd-source-default"
             "/frx/store/<hex40>-freebsd-kernel-GENERIC"
             "/frx/store/<hex40>-freebsd-world-amd64"
             "/frx/store/<hex40>-fruix-development-profile")))

    Every item is a string ``"/frx/store/<40 lowercase hex>-<name>"``; the
    FreeBSD source store is the item named ``freebsd-source-<source_name>``.
    Replace it with :meth:`SshGuest.set_store_layout` (works while running).

``/frx/store/<store_hash>-freebsd-source-<source_name>/tree``
    A copy of ``source_tree`` (default: the repository's
    ``fruix_dagster/sample_src``).  All of ``/frx/store`` is a *read-only*
    bind mount inside the guest (writes fail with EROFS), as on Fruix; the
    host side (:meth:`SshGuest.guest_path`) stays writable, so a test can
    change the source under a running guest.  :meth:`add_source_store` adds
    further items.  The other items of the default layout exist as empty
    directories.

``/run/current-system/development-profile/usr/include``
    read-only bind mount of the host's ``/usr/include`` (so ``cc`` finds real
    headers);
``/run/current-system/development-profile/usr/share/mk``
    read-only bind mount of ``mk_dir`` (default: the host's ``/usr/share/mk``,
    bmake's mk files);
``/run/current-development``
    a symlink to ``/run/current-system/development-profile``.

``/usr/include``, ``/usr/share/mk``
    *resolve into the profile*, like the compatibility links of a
    development-enabled Fruix system: ``realpath /usr/include`` prints
    ``/run/current-system/development-profile/usr/include``.  Realised with
    an overlayfs mounted over ``/usr`` (lowerdir = the host's ``/usr``; upper
    and work dir in the state directory) whose upper dir holds the symlinks
    ``include -> /run/current-system/development-profile/usr/include`` and
    ``share/mk -> /run/current-system/development-profile/usr/share/mk``.
    Writes to ``/usr`` from inside the guest land in the upper dir, never in
    the host's ``/usr``.

``tar`` is ``bsdtar``
    the overlay's upper dir also holds ``bin/tar -> bsdtar`` (``/bin`` is
    ``usr/bin`` on Debian 12), so ``tar --version`` prints ``bsdtar …``.

login shell ``dash``
    a copy of ``/etc/passwd`` with root's shell set to ``/bin/dash`` is bind
    mounted over ``/etc/passwd``; a copy of ``/etc/shadow`` whose root entry is
    ``*`` (no password, but *not* locked -- with ``UsePAM no`` OpenSSH refuses
    even key logins to a ``!``-locked account) or the SHA-512 hash of
    ``password`` is bind mounted over ``/etc/shadow``.

``/etc``
    an overlayfs over the host's ``/etc`` (upper and work dir in the state
    directory): the guest may write its own ``/etc/src.conf``,
    ``/etc/make.conf``, ``/etc/src-env.conf`` (as root, like any FreeBSD
    machine) without touching the host's ``/etc``.

``cc``, ``make``, ``ld``, ``sha256sum``
    the host's, found on sshd's default ``PATH``.  No ``sha256`` command is
    added (the product falls back to ``sha256sum``).

Private, persistent state
=========================

Everything writable lives under ``state_dir`` on the host and survives
:meth:`stop`/:meth:`start` (keys, port, store, build root)::

    state_dir/
      keys/        ssh_host_ed25519_key[.pub], client_ed25519[.pub],
                   authorized_keys (exactly the client key), known_hosts
      sshd_config  sshd.log (sshd -E)  setup.log (namespace set-up stderr)
      port         the TCP port, reused on restart while it is free
      etc/         passwd, shadow (bound over /etc/passwd, /etc/shadow)
      etc-upper/ etc-work/   the /etc overlay (writes to the guest's /etc, e.g.
                   /etc/src.conf, land here; the host's /etc is never written)
      var-tmp/     bound over /var/tmp   (the build root
                                          /var/tmp/fruix-native-build lives here)
      frx/         bound over /frx       (frx/store/... ; /frx/store read-only)
      run/         bound over /run       (run/sshd = sshd's privsep dir,
                                          run/current-system/..., run/lock)
      var-log/     bound over /var/log   (so sshd's wtmp/lastlog stay private)
      usr-upper/ usr-work/   the /usr overlay

Two guests with different state dirs never see each other's ``/var/tmp``,
``/frx``, ``/run``.  ``/tmp``, ``/root`` and the rest of the filesystem are the
host's (pytest's ``tmp_path`` is therefore visible at the same path inside).
``state_dir`` itself must not lie under ``/var/tmp``, ``/run``, ``/frx``,
``/usr``, ``/etc`` or ``/var/log`` (it would be hidden by the guest's own
mounts) and must not contain ``,``/``:``/whitespace (overlayfs options).

Processes and clean-up
======================

``unshare --mount --propagation private`` runs a small ``sh`` script that
does the mounts above and then ``exec``\\ s ``sshd -D``, so the pid of the
``Popen`` *is* the listening sshd.  After it listens, the guest keeps an open
file descriptor on ``/proc/<pid>/ns/mnt``: this pins the namespace identity
(device, inode) so that :meth:`processes` and :meth:`stop` can find exactly
the processes in *this* guest's namespace (the listener, per-connection sshd
children, shells, detached ``nohup`` jobs, :meth:`exec` commands) and no
others, and :meth:`exec` works even when the listener has died.  :meth:`stop`
SIGKILLs every process in the namespace until none is left, reaps the
listener and closes the descriptor; the kernel then drops the namespace and
all its mounts (they were never visible in the host's ``findmnt`` anyway,
propagation being private).  When started from the main thread the listener
also gets ``PR_SET_PDEATHSIG(SIGKILL)``, and an ``atexit`` hook stops guests
left running, so a crashed test run does not leave an sshd behind.

Namespace inode numbers are reused by the kernel as soon as a namespace is
freed (a restarted guest often gets the very same inode), which is why the
identity is pinned by the open descriptor rather than remembered as a number.

Besides the API in the brief, :class:`SshGuest` offers ``ssh_command()``
(argv for the system ``ssh`` client, strict host-key checking),
``host_public_key()``, ``connection_pids()``, ``pid``, ``running``,
``mount_namespace`` and the module function :func:`render_store_layout`.

Timing: :meth:`start` takes ~0.3 s on the development VM, fresh or warm
(key generation, tree copy, mounts, sshd start and one real ``ssh`` login);
:attr:`SshGuest.last_start_seconds` records it.
"""

from __future__ import annotations

import atexit
import ctypes
import hashlib
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import weakref
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_SOURCE_TREE = REPO_ROOT / "fruix_dagster" / "sample_src"
#: The source store hash of the Phase 20.2 reference run.
DEFAULT_STORE_HASH = "12d7704362e95afc2697db63f168b878e082b372"
DEFAULT_MK_DIR = Path("/usr/share/mk")

SSHD = "/usr/sbin/sshd"
STORE_ROOT = "/frx/store"
CURRENT_SYSTEM = "/run/current-system"
DEV_PROFILE = f"{CURRENT_SYSTEM}/development-profile"
CURRENT_DEVELOPMENT = "/run/current-development"
STORE_LAYOUT = f"{CURRENT_SYSTEM}/metadata/store-layout.scm"
GUEST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# guest directory -> subdirectory of the state dir bound over it
_PRIVATE_DIRS = {"/var/tmp": "var-tmp", "/frx": "frx", "/run": "run", "/var/log": "var-log"}
_FORBIDDEN_STATE_PARENTS = ("/var/tmp", "/run", "/frx", "/usr", "/etc", "/var/log")

_PR_SET_PDEATHSIG = 1


class SshGuestError(RuntimeError):
    """The test guest could not be set up, started or stopped."""


def _hex40(seed: str) -> str:
    return hashlib.sha1(seed.encode()).hexdigest()


def render_store_layout(items: list[str], system: str | None = None, version: int = 1) -> str:
    """Render a store layout S-expression listing ``items`` (absolute store paths)."""
    lines = [
        ";; Fruix system metadata: store layout of the current system.",
        ";; Written by tests/support/sshguest.py for the SSH test guest.",
        "(store-layout",
        f"  (version {version})",
        f'  (store-root "{STORE_ROOT}")',
    ]
    if system is not None:
        lines.append(f'  (system "{system}")')
    if items:
        quoted = [f'"{item}"' for item in items]
        body = ("\n" + " " * 5).join(quoted)
        lines.append(f"  (items\n    ({body})))")
    else:
        lines.append("  (items ()))")
    return "\n".join(lines) + "\n"


def _ns_identity(pid: int | str) -> tuple[int, int] | None:
    try:
        st = os.stat(f"/proc/{pid}/ns/mnt")
    except OSError:  # gone, zombie, or kernel thread
        return None
    return (st.st_dev, st.st_ino)


def _cmdline(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    if not raw:
        try:
            return "[" + Path(f"/proc/{pid}/comm").read_text().strip() + "]"
        except OSError:
            return ""
    return " ".join(part.decode(errors="replace") for part in raw.rstrip(b"\0").split(b"\0"))


def _exe_name(pid: int) -> str:
    try:
        return os.path.basename(os.readlink(f"/proc/{pid}/exe"))
    except OSError:
        return ""


def _port_free(address: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as sshd does
        try:
            s.bind((address, port))
        except OSError:
            return False
    return True


def _free_port(address: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((address, 0))
        return s.getsockname()[1]


def _set_pdeathsig() -> None:  # runs in the child between fork and exec
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


_running: "weakref.WeakSet[SshGuest]" = weakref.WeakSet()


@atexit.register
def _stop_all() -> None:
    for guest in list(_running):
        try:
            guest.stop()
        except (SshGuestError, OSError, subprocess.SubprocessError) as exc:  # pragma: no cover
            print(f"SshGuest {guest.name}: stop at interpreter exit failed: {exc}", file=sys.stderr)


class SshGuest:
    """A real ``sshd`` on ``address`` in a private mount namespace shaped like a Fruix guest.

    See the module docstring for what the guest looks like and how it is
    realised.  Typical use::

        with SshGuest(tmp_path / "guest-a", address="127.0.0.2") as guest:
            subprocess.run(guest.ssh_command("uname -a"), check=True)
            guest.exec(["test", "-d", "/var/tmp/fruix-native-build"], check=False)
            settings = guest.ssh_settings(name="fruix-amd64")

    Attributes (valid after construction; ``port`` and ``host_key_fingerprint``
    after key creation / :meth:`start`): ``host``, ``port``, ``user``
    (``"root"``), ``client_key`` (private key path), ``known_hosts`` (path),
    ``host_key_fingerprint`` (``"SHA256:…"``, as ``ssh-keygen -lf`` prints),
    ``source_store`` (guest path of the source store item), ``source_root``
    (its ``/tree``), ``last_start_seconds``.
    """

    user = "root"

    def __init__(
        self,
        state_dir: str | os.PathLike,
        address: str = "127.0.0.2",
        source_tree: str | os.PathLike = DEFAULT_SOURCE_TREE,
        store_hash: str = DEFAULT_STORE_HASH,
        source_name: str = "default",
        *,
        password: str | None = None,
        mk_dir: str | os.PathLike = DEFAULT_MK_DIR,
        name: str | None = None,
        start_timeout: float = 20.0,
    ) -> None:
        self.state_dir = Path(state_dir).absolute()
        self._check_state_dir()
        parts = address.split(".")
        if len(parts) != 4 or parts[0] != "127" or not all(p.isdigit() and 0 <= int(p) <= 255 for p in parts):
            raise SshGuestError(f"address must be a loopback IPv4 address 127.x.y.z, got {address!r}")
        _check_hash(store_hash)
        self.host = address
        self.address = address
        self.source_tree = Path(source_tree)
        self.store_hash = store_hash
        self.source_name = source_name
        self.password = password
        self.mk_dir = Path(mk_dir)
        self.name = name or self.state_dir.name
        self.start_timeout = start_timeout

        self.keys_dir = self.state_dir / "keys"
        self.host_key = self.keys_dir / "ssh_host_ed25519_key"
        self.client_key = self.keys_dir / "client_ed25519"
        self.authorized_keys = self.keys_dir / "authorized_keys"
        self.known_hosts = self.keys_dir / "known_hosts"
        self.sshd_config = self.state_dir / "sshd_config"
        self.sshd_log = self.state_dir / "sshd.log"
        self.setup_log = self.state_dir / "setup.log"
        self._port_file = self.state_dir / "port"

        self.source_store = f"{STORE_ROOT}/{store_hash}-freebsd-source-{source_name}"
        self.source_root = f"{self.source_store}/tree"

        self.port: int = int(self._port_file.read_text()) if self._port_file.exists() else 0
        self.host_key_fingerprint: str = ""
        self.last_start_seconds: float | None = None

        self._proc: subprocess.Popen | None = None
        self._ns_fd: int | None = None
        self._ns: tuple[int, int] | None = None
        self._lock = threading.RLock()

    # ------------------------------------------------------------------ setup

    def _check_state_dir(self) -> None:
        text = str(self.state_dir)
        if any(c in text for c in ",:\\") or any(c.isspace() for c in text):
            raise SshGuestError(f"state_dir {text!r} must not contain ',', ':', '\\' or whitespace (overlayfs options)")
        resolved = os.path.realpath(text)
        for parent in _FORBIDDEN_STATE_PARENTS:
            if resolved == parent or resolved.startswith(parent + "/"):
                raise SshGuestError(
                    f"state_dir {text!r} lies under {parent}, which the guest shadows with its own mounts; "
                    "use a directory such as pytest's tmp_path"
                )

    def _prepare(self) -> None:
        if os.geteuid() != 0:
            raise SshGuestError("SshGuest needs root (mount namespaces, bind mounts, overlayfs)")
        for tool in (SSHD, shutil.which("unshare"), shutil.which("nsenter"), shutil.which("ssh-keygen"), "/usr/bin/bsdtar", "/bin/dash"):
            if not tool or not os.path.exists(tool):
                raise SshGuestError(
                    f"missing tool {tool!r}: install openssh-server, openssh-client, util-linux, libarchive-tools, dash"
                )
        if not self.source_tree.is_dir() and not self._source_dir_host().exists():
            raise SshGuestError(f"source tree {self.source_tree} does not exist (pass source_tree=...)")
        if not self.mk_dir.is_dir():
            raise SshGuestError(f"mk directory {self.mk_dir} does not exist (install bmake or pass mk_dir=...)")
        if not os.path.isdir("/frx"):
            os.mkdir("/frx", 0o755)  # empty mount point; the guest's own /frx is bound over it

        s = self.state_dir
        for sub in ("keys", "etc", "etc-upper", "etc-work", "var-tmp", "frx/store", "var-log", "usr-upper/bin",
                    "usr-upper/share", "usr-work",
                    "run/sshd", "run/lock", "run/current-system/metadata",
                    "run/current-system/development-profile/usr/include",
                    "run/current-system/development-profile/usr/share/mk"):
            (s / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(s / "var-tmp", 0o1777)
        os.chmod(s / "run" / "sshd", 0o755)  # sshd's privsep chroot must not be group/world-writable
        os.chmod(s / "run" / "lock", 0o1777)
        _force_symlink(DEV_PROFILE, s / "run" / "current-development")

        # /etc overlay upper: files the host has bind mounted onto /etc (a container's
        # hosts, resolv.conf, hostname) would show their underlying copies through the
        # overlay; their current contents go into the upper dir instead.
        for name in ("hosts", "resolv.conf", "hostname"):
            if os.path.isfile(f"/etc/{name}"):
                shutil.copyfile(f"/etc/{name}", s / "etc-upper" / name)
        # /usr overlay upper: the Fruix compatibility links and tar -> bsdtar
        _force_symlink(f"{DEV_PROFILE}/usr/include", s / "usr-upper" / "include")
        _force_symlink(f"{DEV_PROFILE}/usr/share/mk", s / "usr-upper" / "share" / "mk")
        _force_symlink("bsdtar", s / "usr-upper" / "bin" / "tar")

        # store: source item (copied once) and the other items of the default layout
        src = self._source_dir_host()
        if not (src / "tree").exists():
            tmp = src / "tree.partial"
            shutil.rmtree(tmp, ignore_errors=True)
            src.mkdir(parents=True, exist_ok=True)
            shutil.copytree(self.source_tree, tmp, symlinks=True)
            tmp.rename(src / "tree")
        layout = self.guest_path(STORE_LAYOUT)
        if not layout.exists():
            for item in self._default_items()[1:] + [self._default_system()]:
                self.guest_path(item).mkdir(parents=True, exist_ok=True)
            layout.write_text(render_store_layout(self._default_items(), system=self._default_system()))

        self._write_accounts()
        self._make_keys()
        self._choose_port()
        self._write_known_hosts()
        self._write_sshd_config()

    def _source_dir_host(self) -> Path:
        return self.guest_path(self.source_store)

    def _default_items(self) -> list[str]:
        h = self.store_hash
        return [
            self.source_store,
            f"{STORE_ROOT}/{_hex40(h + ':kernel')}-freebsd-kernel-GENERIC",
            f"{STORE_ROOT}/{_hex40(h + ':world')}-freebsd-world-amd64",
            f"{STORE_ROOT}/{_hex40(h + ':profile')}-fruix-development-profile",
        ]

    def _default_system(self) -> str:
        return f"{STORE_ROOT}/{_hex40(self.store_hash + ':system')}-fruix-system-fruix-dev"

    def _write_accounts(self) -> None:
        passwd_lines = []
        for line in Path("/etc/passwd").read_text().splitlines():
            fields = line.split(":")
            if len(fields) == 7 and fields[0] == "root":
                fields[6] = "/bin/dash"
                line = ":".join(fields)
            passwd_lines.append(line)
        (self.state_dir / "etc" / "passwd").write_text("\n".join(passwd_lines) + "\n")

        if self.password is not None:
            crypted = subprocess.run(
                ["openssl", "passwd", "-6", "-stdin"], input=self.password.encode(),
                capture_output=True, check=True,
            ).stdout.decode().strip()
        else:
            crypted = "*"  # no password, but not "!"-locked (UsePAM no refuses locked accounts)
        shadow_lines = []
        for line in Path("/etc/shadow").read_text().splitlines():
            fields = line.split(":")
            if len(fields) >= 2 and fields[0] == "root":
                fields[1] = crypted
                line = ":".join(fields)
            shadow_lines.append(line)
        shadow = self.state_dir / "etc" / "shadow"
        shadow.write_text("\n".join(shadow_lines) + "\n")
        os.chmod(shadow, 0o640)

    def _make_keys(self) -> None:
        for key, comment in ((self.host_key, f"fruix-test-guest-{self.name}"), (self.client_key, "fruix-dagster-tests")):
            if not key.exists():
                _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(key)])
        self.authorized_keys.write_text(Path(f"{self.client_key}.pub").read_text())
        out = _run(["ssh-keygen", "-l", "-E", "sha256", "-f", f"{self.host_key}.pub"]).stdout.decode()
        self.host_key_fingerprint = out.split()[1]

    def host_public_key(self) -> str:
        """``ssh-ed25519 AAAA…`` of the guest's host key (no comment)."""
        kind, blob = Path(f"{self.host_key}.pub").read_text().split()[:2]
        return f"{kind} {blob}"

    def _write_known_hosts(self) -> None:
        key = self.host_public_key()
        lines = [f"[{self.host}]:{self.port} {key}"]
        if self.port == 22:
            lines.append(f"{self.host} {key}")
        self.known_hosts.write_text("\n".join(lines) + "\n")

    def _write_sshd_config(self) -> None:
        config = f"""\
# sshd_config of the SshGuest test guest {self.name} (tests/support/sshguest.py)
ListenAddress {self.host}:{self.port}
AddressFamily inet
HostKey {self.host_key}
AuthorizedKeysFile {self.authorized_keys}
PubkeyAuthentication yes
PasswordAuthentication {"yes" if self.password is not None else "no"}
KbdInteractiveAuthentication no
PermitEmptyPasswords no
PermitRootLogin {"yes" if self.password is not None else "prohibit-password"}
UsePAM no
StrictModes no
PidFile none
LogLevel VERBOSE
UseDNS no
PrintMotd no
PrintLastLog no
X11Forwarding no
MaxSessions 100
MaxStartups 100:30:200
LoginGraceTime 30
Subsystem sftp internal-sftp
"""
        self.sshd_config.write_text(config)

    def _setup_script(self) -> str:
        s = self.state_dir
        q = shlex.quote
        profile = DEV_PROFILE
        return "\n".join([
            "set -eu",
            "mount --make-rprivate /",
            f"mount --bind {q(str(s / 'run'))} /run",
            f"mount --bind {q(str(s / 'var-tmp'))} /var/tmp",
            f"mount --bind {q(str(s / 'var-log'))} /var/log",
            f"mount --bind {q(str(s / 'frx'))} /frx",
            f"mount --bind {STORE_ROOT} {STORE_ROOT}",
            f"mount -o remount,bind,ro {STORE_ROOT}",
            # the profile's contents, bound before /usr is overlaid (host headers, mk files)
            f"mount -o bind,ro /usr/include {profile}/usr/include",
            f"mount -o bind,ro {q(os.path.realpath(self.mk_dir))} {profile}/usr/share/mk",
            "mount -t overlay fruix-usr -o " + q(
                f"lowerdir=/usr,upperdir={s / 'usr-upper'},workdir={s / 'usr-work'}") + " /usr",
            # a private, writable /etc: the guest's /etc/src.conf, /etc/make.conf... are its own
            "mount -t overlay fruix-etc -o " + q(
                f"lowerdir=/etc,upperdir={s / 'etc-upper'},workdir={s / 'etc-work'}") + " /etc",
            f"mount --bind {q(str(s / 'etc' / 'passwd'))} /etc/passwd",
            f"mount --bind {q(str(s / 'etc' / 'shadow'))} /etc/shadow",
            f"{SSHD} -t -f {q(str(self.sshd_config))}",
            f"exec {SSHD} -D -f {q(str(self.sshd_config))} -E {q(str(self.sshd_log))}",
        ]) + "\n"

    # ------------------------------------------------------------- lifecycle

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        """Pid of the listening sshd (``None`` when not started)."""
        return self._proc.pid if self._proc is not None else None

    @property
    def mount_namespace(self) -> tuple[int, int] | None:
        """``(st_dev, st_ino)`` of the guest's mount namespace while started."""
        return self._ns

    def start(self) -> None:
        """Start the guest; idempotent.  Returns once a real ``ssh`` login works."""
        with self._lock:
            if self.running and self._ns is not None:
                return
            if self._proc is not None or self._ns_fd is not None:
                self.stop()  # a listener that died: clean up what is left first
            t0 = time.monotonic()
            self._prepare()
            for attempt in range(3):
                log_offset = self.sshd_log.stat().st_size if self.sshd_log.exists() else 0
                self._spawn()
                try:
                    self._wait_listening(t0 + self.start_timeout)
                    self._wait_login(t0 + self.start_timeout)
                    break
                except SshGuestError:
                    self.stop()
                    if attempt < 2 and "Address already in use" in _tail(self.sshd_log, offset=log_offset):
                        # someone took the port between choosing and binding it: choose again
                        self._choose_port(force_new=True)
                        self._write_known_hosts()
                        self._write_sshd_config()
                        continue
                    raise
                except BaseException:
                    self.stop()
                    raise
            self.last_start_seconds = time.monotonic() - t0

    def _spawn(self) -> None:
        script = self._setup_script()
        (self.state_dir / "setup.sh").write_text(script)
        preexec = _set_pdeathsig if threading.current_thread() is threading.main_thread() else None
        with open(self.setup_log, "ab") as err:
            self._proc = subprocess.Popen(
                ["unshare", "--mount", "--propagation", "private", "--", "/bin/sh", "-c", script],
                stdin=subprocess.DEVNULL, stdout=err, stderr=err,
                start_new_session=True, preexec_fn=preexec, env=_guest_env(),
            )
        _running.add(self)

    def _choose_port(self, force_new: bool = False) -> None:
        if force_new or not (self.port and _port_free(self.address, self.port)):
            self.port = _free_port(self.address)
            self._port_file.write_text(f"{self.port}\n")

    def _fail(self, what: str) -> SshGuestError:
        return SshGuestError(
            f"SshGuest {self.name} at {self.host}:{self.port}: {what}\n"
            f"--- {self.setup_log} ---\n{_tail(self.setup_log)}\n--- {self.sshd_log} ---\n{_tail(self.sshd_log)}"
        )

    def _wait_listening(self, deadline: float) -> None:
        assert self._proc is not None
        host_ns = _ns_identity("self")
        while True:
            if self._proc.poll() is not None:
                raise self._fail(f"namespace set-up or sshd exited with status {self._proc.returncode}")
            ns = _ns_identity(self._proc.pid)
            if ns is not None and ns != host_ns and _exe_name(self._proc.pid) == "sshd":
                try:
                    with socket.create_connection((self.host, self.port), timeout=1):
                        break
                except OSError:
                    pass
            if time.monotonic() > deadline:
                raise self._fail("sshd did not start listening in time")
            time.sleep(0.01)
        fd = os.open(f"/proc/{self._proc.pid}/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != ns or self._proc.poll() is not None:
            os.close(fd)
            raise self._fail("sshd exited while its namespace was being recorded")
        self._ns_fd, self._ns = fd, ns

    def _wait_login(self, deadline: float) -> None:
        while True:
            r = subprocess.run(self.ssh_command("true", "-o", "ConnectTimeout=5"),
                               capture_output=True, stdin=subprocess.DEVNULL)
            if r.returncode == 0:
                return
            if self._proc is not None and self._proc.poll() is not None or time.monotonic() > deadline:
                raise self._fail(f"ssh login failed: {r.stderr.decode(errors='replace').strip()}")
            time.sleep(0.05)

    def stop(self) -> None:
        """Kill every process in the guest's namespace (only those), reap sshd.

        The state dir stays; :meth:`start` brings the same guest back (same
        keys, same port if still free, same /var/tmp, /frx, /run).
        """
        with self._lock:
            if self._ns is not None:
                deadline = time.monotonic() + 15
                while True:
                    pids = self._namespace_pids()
                    if not pids:
                        break
                    for pid in pids:
                        try:
                            os.kill(pid, signal.SIGKILL)
                        except ProcessLookupError:
                            pass
                    if self._proc is not None:
                        self._proc.poll()
                    if time.monotonic() > deadline:
                        raise SshGuestError(f"SshGuest {self.name}: processes survive SIGKILL: {pids}")
                    time.sleep(0.02)
            if self._proc is not None:
                if self._proc.poll() is None:  # died before its namespace was recorded? kill it directly
                    self._proc.kill()
                self._proc.wait(timeout=15)
                self._proc = None
            if self._ns_fd is not None:
                os.close(self._ns_fd)  # last reference: the kernel frees the namespace and its mounts
                self._ns_fd = None
            self._ns = None
            _running.discard(self)

    def __enter__(self) -> "SshGuest":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------ processes

    def _namespace_pids(self) -> list[int]:
        if self._ns is None:
            return []
        pids = []
        for entry in os.scandir("/proc"):
            if entry.name.isdigit() and _ns_identity(entry.name) == self._ns:
                pids.append(int(entry.name))
        return sorted(pids)

    def processes(self) -> list[tuple[int, str]]:
        """``(pid, cmdline)`` of every process in the guest's namespace except the listening sshd."""
        listener = self.pid
        return [(pid, _cmdline(pid)) for pid in self._namespace_pids() if pid != listener]

    def connection_pids(self) -> list[int]:
        """Pids of the per-connection sshd processes (monitor, privsep children); not the listener."""
        listener = self.pid
        return [pid for pid in self._namespace_pids()
                if pid != listener and _exe_name(pid) in ("sshd", "sshd-session")]

    def kill_connections(self) -> int:
        """SIGKILL the per-connection sshd processes, as a dropped TCP connection would end them.

        The listener keeps running and accepts new connections; processes the
        sessions started (shells, ``nohup … &`` jobs) are not signalled (a
        shell on a pty still gets SIGHUP from the kernel when its terminal
        goes away, as on a real drop).  Returns how many sshd processes were
        killed, after they are gone.
        """
        with self._lock:
            pids = self.connection_pids()
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + 10
            while any(_ns_identity(pid) == self._ns for pid in pids) and time.monotonic() < deadline:
                time.sleep(0.01)
            return len(pids)

    # ---------------------------------------------------------------- access

    def exec(self, argv: list[str], input: bytes | None = None, check: bool = True,
             timeout: float | None = 120) -> subprocess.CompletedProcess:
        """Run ``argv`` inside the guest's mount namespace (``nsenter``), not via ssh.

        Environment: like an ssh session (``PATH`` = sshd's default, ``HOME=/root``).
        Returns a ``CompletedProcess`` with bytes ``stdout``/``stderr``;
        ``check=True`` raises ``CalledProcessError`` on a non-zero exit.
        """
        if self._ns_fd is None:
            raise SshGuestError(f"SshGuest {self.name} is not started")
        cmd = ["nsenter", f"--mount=/proc/{os.getpid()}/fd/{self._ns_fd}", "--", *argv]
        r = subprocess.run(cmd, input=input, capture_output=True, env=_guest_env(), timeout=timeout,
                           stdin=None if input is not None else subprocess.DEVNULL)
        r.args = list(argv)
        if check and r.returncode != 0:
            raise subprocess.CalledProcessError(r.returncode, list(argv), r.stdout, r.stderr)
        return r

    def guest_path(self, path: str) -> Path:
        """Host path of a guest path under ``/var/tmp``, ``/frx``, ``/run`` (or ``/var/log``).

        Note: mount points inside the guest (the profile's ``usr/include`` and
        ``usr/share/mk``) are empty directories on the host side.
        """
        norm = os.path.normpath(path)
        if not norm.startswith("/"):
            raise ValueError(f"guest path must be absolute: {path!r}")
        for guest_dir, sub in _PRIVATE_DIRS.items():
            if norm == guest_dir or norm.startswith(guest_dir + "/"):
                return self.state_dir / sub / norm[len(guest_dir):].lstrip("/")
        raise ValueError(f"{path!r} is not under a private guest directory ({', '.join(_PRIVATE_DIRS)})")

    def set_store_layout(self, text: str | bytes) -> None:
        """Replace ``/run/current-system/metadata/store-layout.scm`` (also while running)."""
        target = self.guest_path(STORE_LAYOUT)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".tmp")
        tmp.write_bytes(text.encode() if isinstance(text, str) else text)
        tmp.replace(target)

    def add_source_store(self, store_hash: str, name: str = "default", tree: str | os.PathLike | None = None) -> str:
        """Create store item ``/frx/store/<store_hash>-freebsd-source-<name>/tree`` (copy of ``tree``,
        default: this guest's ``source_tree``); returns the item's guest path.  Does not change the
        store layout (use :meth:`set_store_layout` / :func:`render_store_layout`)."""
        _check_hash(store_hash)
        item = f"{STORE_ROOT}/{store_hash}-freebsd-source-{name}"
        host = self.guest_path(item)
        host.mkdir(parents=True, exist_ok=True)
        if not (host / "tree").exists():
            shutil.copytree(Path(tree) if tree is not None else self.source_tree, host / "tree", symlinks=True)
        return item

    def ssh_settings(self, **overrides) -> dict:
        """A ``[[guest]]`` settings table for the product's ``ssh`` transport."""
        settings = {
            "name": self.name,
            "kind": "ssh",
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "private_key": str(self.client_key),
            "known_hosts": str(self.known_hosts),
        }
        settings.update(overrides)
        return settings

    def ssh_command(self, command: str | list[str] | None = None, *options: str) -> list[str]:
        """argv for the system ``ssh`` client with strict host-key checking against :attr:`known_hosts`.

        ``command`` is a shell string (run by the guest's login shell, dash) or
        an argv list (joined with ``shlex.join``); ``options`` (e.g. ``"-o",
        "UserKnownHostsFile=…"``) come first and so override the defaults, since
        ``ssh`` keeps the first value it sees for an option (``-i`` adds an
        identity instead).
        """
        argv = [
            "ssh", "-F", "/dev/null",
            *options,  # first: for ssh the first value given for an option wins
            "-o", "BatchMode=yes",
            "-o", "StrictHostKeyChecking=yes",
            "-o", f"UserKnownHostsFile={self.known_hosts}",
            "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", "IdentitiesOnly=yes",
            "-o", "LogLevel=ERROR",
            "-i", str(self.client_key),
            "-p", str(self.port),
            "-l", self.user,
            self.host,
        ]
        if command is not None:
            argv.append(command if isinstance(command, str) else shlex.join(command))
        return argv

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<SshGuest {self.name} {self.host}:{self.port} {state} state_dir={self.state_dir}>"


def _check_hash(store_hash: str) -> None:
    if len(store_hash) != 40 or any(c not in "0123456789abcdef" for c in store_hash):
        raise SshGuestError(f"store hash must be 40 lowercase hex digits, got {store_hash!r}")


def _force_symlink(target: str, link: Path) -> None:
    if link.is_symlink() and os.readlink(link) == target:
        return
    if link.is_symlink() or link.is_file():
        link.unlink()
    elif link.exists():
        shutil.rmtree(link)
    link.symlink_to(target)


def _run(argv: list[str]) -> subprocess.CompletedProcess:
    r = subprocess.run(argv, capture_output=True, stdin=subprocess.DEVNULL)
    if r.returncode != 0:
        raise SshGuestError(f"{shlex.join(argv)} failed ({r.returncode}): {r.stderr.decode(errors='replace').strip()}")
    return r


def _guest_env() -> dict[str, str]:
    return {"PATH": GUEST_PATH, "HOME": "/root", "USER": "root", "LOGNAME": "root",
            "SHELL": "/bin/dash", "LANG": "C.UTF-8"}


def _tail(path: Path, limit: int = 4000, offset: int = 0) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")[-limit:]
    except OSError:
        return "(missing)"
