"""The settings model: frozen pydantic dataclasses, one per TOML table.

Field order is the order in which problems are reported.  A field's type is
a rule from ``rules.py`` (what a single value must be); rules that involve
several keys are ``model_validator`` methods here.  Every table refuses
unknown keys and reports missing required ones through :class:`_Table`.
Guests are a discriminated union on ``kind``: :class:`LocalGuest`,
:class:`SshGuest`, :class:`XcpngGuest`, all subclasses of :class:`Guest`.
"""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import AfterValidator, BeforeValidator, Field, ValidationInfo, model_validator

from fruix_dagster.errors import ConfigError
from fruix_dagster.graph import DEFAULT_KEY_FILES, DEFAULT_SLICES, KERNEL_STEPS, WORLD_STEPS
from fruix_dagster.settings import rules as R
from fruix_dagster.settings import view_rules as V
from fruix_dagster.settings.messages import GUEST_KINDS, bad, expect, show, sub_key
from fruix_dagster.settings.notify import NotifySettings
from fruix_dagster.settings.table import TOP_KEYS, _frozen, _Table, known_keys  # noqa: F401 (known_keys: API)

#: ``Settings.source_file`` of the embedded default.
EMBEDDED_SOURCE = "<embedded default>"

# WORLD_STEPS / KERNEL_STEPS (the make targets ``build.world_make_vars`` /
# ``build.kernel_make_vars`` apply to), DEFAULT_KEY_FILES and the default slice
# globs are the build graph's (fruix_dagster.graph); re-exported from here.


# FreeBSD's own TARGET <-> TARGET_ARCH defaults (src/Makefile) and known pairs.
_ARCHES_OF_TARGET = {
    "amd64": ("amd64",),
    "arm": ("armv7", "armv6"),
    "arm64": ("aarch64",),
    "i386": ("i386",),
    "powerpc": ("powerpc", "powerpc64", "powerpc64le", "powerpcspe"),
    "riscv": ("riscv64",),
}
_TARGET_OF_ARCH = {arch: t for t, arches in _ARCHES_OF_TARGET.items() for arch in arches}

@_frozen
class BuildSettings(_Table):
    _what, _single = "[build]", "build"
    jobs: R.integer(1) = 8
    build_root: R.guest_path(min_depth=2) = "/var/tmp/fruix-native-build"
    make: R.MakeCommand = "make"
    make_vars: R.MakeVarTable = ()
    kernel_make_vars: R.MakeVarTable = ()
    world_make_vars: R.MakeVarTable = ()
    clean: R.Boolean = False
    timeout_hours: R.number(gt=0) = 12.0
    silent_timeout_minutes: R.number(gt=0) = 120.0
    min_free_gib: R.number(ge=0) = 12.0
    retries: R.integer(0) = 3
    #: make output copied live to the run's captured stdout, per step (0: none); the full log
    #: always goes to <store.root>/logs/
    stdout_max_mib: R.number(ge=0) = 64.0
    #: step records (steps/<name>-<fingerprint>/) kept per step name by the build-root gc
    keep_steps: R.integer(1) = 3
    #: stage installworld/distribution/installkernel as this non-root guest user
    #: with NO_ROOT (-DNO_ROOT) and a METALOG, as FreeBSD's release build does;
    #: "" (the default) installs as the SSH user
    no_root_user: R.pattern(r"|(?!root$)[A-Za-z_][A-Za-z0-9_.-]{0,31}",
                            'must be a non-root user name on the guest ([A-Za-z_][A-Za-z0-9_.-]*, at most '
                            '32 characters) or "" to install as the SSH user') = ""
    # The pinned build configuration (build/buildconf.py): each file's text,
    # or a host file read when the build is planned; neither means an empty
    # file (the build reads /dev/null, never the guest's /etc files).
    make_conf: R.opt(R.ConfText) = None
    make_conf_file: R.opt(R.HostPath) = None
    src_conf: R.opt(R.ConfText) = None
    src_conf_file: R.opt(R.HostPath) = None
    src_env_conf: R.opt(R.ConfText) = None
    src_env_conf_file: R.opt(R.HostPath) = None
    #: environment-only knobs (WITH_META_MODE, ...): written into src-env.conf
    src_env: R.MakeVarTable = ()

    @model_validator(mode="after")
    def _conf_text_or_file(self) -> BuildSettings:
        for name in ("make_conf", "src_conf", "src_env_conf"):
            if getattr(self, name) is not None and getattr(self, f"{name}_file") is not None:
                raise bad(f"cannot be set together with build.{name} (the file's text), got "
                          f"{show(getattr(self, f'{name}_file'))}; give the text or a host file, not both",
                          f".{name}_file")
        return self

    def build_conf(self):
        """The contents of make.conf, src.conf and src-env.conf the build uses."""
        from fruix_dagster.build.buildconf import resolve

        return resolve(make_conf=self.make_conf, make_conf_file=self.make_conf_file,
                       src_conf=self.src_conf, src_conf_file=self.src_conf_file,
                       src_env_conf=self.src_env_conf, src_env_conf_file=self.src_env_conf_file,
                       src_env=self.src_env)

    @model_validator(mode="after")
    def _clean_contradicts_without_clean(self) -> BuildSettings:
        if self.clean:
            for name in ("make_vars", "kernel_make_vars", "world_make_vars"):
                value = dict(getattr(self, name)).get("WITHOUT_CLEAN")
                if value is not None:
                    raise bad("cannot be set together with build.clean = true (clean builds contradict WITHOUT_CLEAN), "
                              f"got {show(value)}; remove one of them", f".{name}.WITHOUT_CLEAN")
        return self

    def make_vars_for(self, step: str) -> R.MakeVars:
        """The ``NAME=value`` pairs for one make target, sorted by name.

        ``make_vars`` apply to every step; ``world_make_vars`` to
        buildworld/installworld/distribution and ``kernel_make_vars`` to
        buildkernel/installkernel, overriding ``make_vars`` on a clash.
        (``WITHOUT_CLEAN`` and the reserved variables are the build layer's
        business, not added here.)
        """
        merged = dict(self.make_vars)
        if step in WORLD_STEPS:
            merged.update(self.world_make_vars)
        elif step in KERNEL_STEPS:
            merged.update(self.kernel_make_vars)
        return tuple(sorted(merged.items()))


@_frozen
class SourceSettings(_Table):
    _what, _single = "[source]", "source"
    from_: R.choice("system-metadata", "path") = Field(default="system-metadata", alias="from")
    metadata: R.guest_path() = "/run/current-system/metadata/store-layout.scm"
    store_root: R.guest_path() = "/frx/store"
    name: R.pattern(r"[A-Za-z0-9][A-Za-z0-9._+-]*") = "default"
    path: R.opt(R.guest_path()) = None

    @model_validator(mode="after")
    def _path_goes_with_from(self) -> SourceSettings:
        if self.from_ == "path" and self.path is None:
            raise bad('required with from = "path" (the guest directory holding the FreeBSD source), got nothing', ".path")
        if self.from_ != "path" and self.path is not None:
            raise bad(f'only allowed with from = "path", got {show(self.path)} with from = "system-metadata"; '
                      'remove it or set from = "path"', ".path")
        return self


@_frozen
class StoreSettings(_Table):
    _what, _single = "[store]", "store"
    root: R.HostPath = "/var/lib/fruix-dagster/artifacts"
    keep: R.integer(1) = 5
    #: a collection whose connection drops is restarted whole this many times
    collect_retries: R.integer(0) = 3
    #: seconds before the first restart, doubled for each further one
    collect_backoff_seconds: R.number(ge=0) = 2.0
    #: host log copies no kept materialization names (a failed step's log,
    #: which its failure message and notification link) are kept this long
    keep_log_days: R.number(ge=0) = 14.0


def _keep_default_key_files(v: tuple[str, ...]) -> tuple[str, ...]:
    # The default key files are a stable metadata interface: always kept, extras appended.
    return tuple(dict.fromkeys(DEFAULT_KEY_FILES + v))


@_frozen
class SliceSettings(_Table):
    _what, _single = "[slices]", "slices"
    headers: R.globs() = DEFAULT_SLICES["headers"]
    bootloader: R.globs() = DEFAULT_SLICES["bootloader"]
    key_files: Annotated[R.globs(literal=True), AfterValidator(_keep_default_key_files)] = DEFAULT_KEY_FILES


@_frozen
class ScheduleSettings(_Table):
    _what, _single = "[schedule]", "schedule"
    cron: R.Cron = "0 2 * * *"
    timezone: R.TimeZone = "UTC"
    enabled: R.Boolean = True


@_frozen
class SensorSettings(_Table):
    _what, _single = "[sensor]", "sensor"
    interval_seconds: R.integer(10) = 300
    enabled: R.Boolean = True
    #: start a build run of a target when the sensor observes a changed source
    build: R.Boolean = True


@_frozen
class HistorySettings(_Table):
    _what, _single = "[history]", "history"
    size_change_pct: R.number(gt=0) = 10.0


@_frozen
class AssetSettings(_Table):
    """What the Dagster UI shows on every asset: owners and tags."""

    _what, _single = "[assets]", "assets"
    owners: V.Owners = ()
    tags: V.TagTable = ()


@_frozen
class XcpngSettings(_Table):
    _what = "an inline table { url = …, password_env = …, vm_uuid = … }"
    _required = {
        "url": "required (the XAPI URL, http:// or https://), got nothing",
        "password_env": "required (the NAME of an environment variable holding the XAPI password), got nothing",
    }
    url: R.Url
    password_env: R.EnvName
    username: R.text("must be a non-empty user name") = "root"
    vm_uuid: R.opt(R.Uuid) = None
    vm_name: R.opt(R.text("must be a non-empty VM name label without control characters")) = None
    after: R.choice("keep-running", "shutdown", "revert") = "keep-running"
    revert_to: R.opt(R.text("must be a non-empty snapshot name")) = None
    boot_timeout: R.integer(1) = 600
    ca_file: R.opt(R.HostPath) = None
    insecure: R.Boolean = False
    address_cidr: R.opt(R.Cidr) = None
    request_timeout: R.number(gt=0) = 60.0

    @model_validator(mode="after")
    def _one_vm_and_consistent_tls(self) -> XcpngSettings:
        if self.vm_uuid is not None and self.vm_name is not None:
            raise bad(f"needs exactly one of vm_uuid / vm_name, got both (vm_uuid = {show(self.vm_uuid)}, "
                      f"vm_name = {show(self.vm_name)}); remove one")
        if self.vm_uuid is None and self.vm_name is None:
            raise bad("needs exactly one of vm_uuid / vm_name, got neither")
        if self.after == "revert" and self.revert_to is None:
            raise bad('required when after = "revert" (the name of the snapshot to revert to), got nothing', ".revert_to")
        if self.insecure and self.ca_file is not None:
            raise bad("cannot be true together with ca_file (either verify against the CA or not at all), "
                      f"got true with ca_file = {show(self.ca_file)}; remove one", ".insecure")
        return self


_REMOTE_ONLY = ("host", "port", "user", "private_key", "passphrase_env", "password_env", "known_hosts")


@_frozen
class Guest(_Table):
    """What every guest kind has; the remote fields are None on a local guest."""

    _what = "[[guest]]"
    _required = {"name": "required (a name matching [A-Za-z0-9][A-Za-z0-9._-]*), got nothing"}
    name: R.pattern(r"[A-Za-z0-9][A-Za-z0-9._-]*")
    kind: str
    system: R.choice("fruix", "plain") = "fruix"
    host: R.opt(R.Host) = None
    port: R.opt(R.integer(1, 65535)) = None
    user: R.opt(R.pattern(r"[a-z_][a-z0-9_.-]*", "must be a user name matching [a-z_][a-z0-9_.-]*")) = None
    private_key: R.opt(R.HostPath) = None
    passphrase_env: R.opt(R.EnvName) = None
    password_env: R.opt(R.EnvName) = None
    known_hosts: R.opt(R.HostPath) = None
    connect_timeout: R.number(gt=0) = 15.0
    keepalive: R.integer(0) = 30
    io_timeout: R.number(gt=0) = 300.0
    xcpng: Optional[XcpngSettings] = None


@_frozen
class LocalGuest(Guest):
    _absent = (_REMOTE_ONLY + ("xcpng",),
               "must be absent for kind 'local' (a local guest is this host), got {found}; "
               'remove it or use kind = "ssh"')
    kind: Literal["local"] = "local"
    system: R.choice("fruix", "plain") = "plain"


@_frozen
class SshGuest(Guest):
    _absent = (("xcpng",), "only allowed for kind 'xcpng', got {found}; remove it or use kind = \"xcpng\"")
    _required = {**Guest._required,
                 "host": "required for kind 'ssh' (the guest's address or DNS name), got nothing"}
    kind: Literal["ssh"] = "ssh"
    port: R.opt(R.integer(1, 65535)) = 22
    user: R.opt(R.pattern(r"[a-z_][a-z0-9_.-]*", "must be a user name matching [a-z_][a-z0-9_.-]*")) = "root"
    known_hosts: R.opt(R.HostPath) = Field(default="~/.ssh/known_hosts", validate_default=True)

    @model_validator(mode="after")
    def _credentials(self) -> SshGuest:
        if self.private_key is None and self.password_env is None:
            raise bad(f"required for kind {self.kind!r} unless password_env is set, got neither private_key nor "
                      "password_env; set private_key to a key file or password_env to the NAME of an environment "
                      "variable holding the password", ".private_key")
        if self.passphrase_env is not None and self.private_key is None:
            raise bad(f"only meaningful with private_key, got {show(self.passphrase_env)} without a private_key",
                      ".passphrase_env")
        return self


@_frozen
class XcpngGuest(SshGuest):
    _absent = ((), "")
    _required = {**Guest._required, "xcpng": "required for kind 'xcpng' (an inline table "
                 "{ url = …, password_env = …, vm_uuid = … }), got nothing"}
    kind: Literal["xcpng"] = "xcpng"
    xcpng: Optional[XcpngSettings] = None  # required, see _required


def _guest_kind(v: Any) -> Any:
    if isinstance(v, dict):
        if "name" not in v:
            raise bad(Guest._required["name"], ".name")
        if "kind" not in v:
            raise bad(f"required (one of {', '.join(GUEST_KINDS)}), got nothing", ".kind")
        if not isinstance(v["kind"], str) or v["kind"] not in GUEST_KINDS:
            raise expect(f"must be one of {', '.join(GUEST_KINDS)}", v["kind"], typed=not isinstance(v["kind"], str), sub=".kind")
    elif not isinstance(v, Guest):
        raise expect("must be a table", v, typed=True)
    return v


AnyGuest = Annotated[Union[LocalGuest, SshGuest, XcpngGuest], Field(discriminator="kind"), BeforeValidator(_guest_kind)]


def _pair_defaults(data: dict[str, Any]) -> dict[str, Any]:
    """TARGET / TARGET_ARCH with FreeBSD's own defaulting of one from the other."""
    t, a = data.get("target"), data.get("target_arch")
    if isinstance(t, str) and a is None:
        return {**data, "target_arch": _ARCHES_OF_TARGET.get(t, (t,))[0]}
    if isinstance(a, str) and t is None:
        return {**data, "target": _TARGET_OF_ARCH.get(a, a)}
    return data


@_frozen
class Target(_Table):
    _what = "[[target]]"
    _required = {"name": "required (a partition key matching [A-Za-z0-9][A-Za-z0-9_-]*), got nothing"}
    name: R.pattern(r"[A-Za-z0-9][A-Za-z0-9_-]*")
    guest: R.opt(R.text("must name a [[guest]]")) = None  # required; Settings names the known guests
    target: R.pattern(r"[a-z0-9_]+") = "amd64"
    target_arch: R.pattern(r"[a-z0-9_]+") = "amd64"
    kernconf: R.pattern(r"[A-Za-z0-9_.-]+") = "GENERIC"

    @classmethod
    def _prepare(cls, data: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        return _pair_defaults(data)

    @model_validator(mode="after")
    def _known_pair(self) -> Target:
        known = _ARCHES_OF_TARGET.get(self.target)
        if known is not None and self.target_arch not in known:
            allowed = known[0] if len(known) == 1 else "one of " + ", ".join(known)
            raise bad(f"must be {allowed} for target {self.target!r}, got {show(self.target_arch)}", ".target_arch")
        return self


def _array_of_tables(name: str) -> Any:
    def check(v: Any) -> Any:
        if isinstance(v, tuple):
            return v
        if isinstance(v, dict):
            raise expect(f"must be an array of tables ([[{name}]])", v, f"write [[{name}]] instead of [{name}]", typed=True)
        if not isinstance(v, list):
            raise expect(f"must be an array of tables ([[{name}]])", v, typed=True)
        if not v:
            raise expect(f"must have at least one [[{name}]] table", v)
        return v

    return BeforeValidator(check)


@_frozen
class Settings(_Table):
    _top = True
    build: BuildSettings = Field(default_factory=BuildSettings)
    source: SourceSettings = Field(default_factory=SourceSettings)
    store: StoreSettings = Field(default_factory=StoreSettings)
    slices: SliceSettings = Field(default_factory=SliceSettings)
    schedule: ScheduleSettings = Field(default_factory=ScheduleSettings)
    sensor: SensorSettings = Field(default_factory=SensorSettings)
    history: HistorySettings = Field(default_factory=HistorySettings)
    notify: NotifySettings = Field(default_factory=NotifySettings)
    assets: AssetSettings = Field(default_factory=AssetSettings)
    guests: Annotated[tuple[AnyGuest, ...], _array_of_tables("guest")] = Field(default=(), alias="guest")
    targets: Annotated[tuple[Target, ...], _array_of_tables("target")] = Field(default=(), alias="target")
    #: "<embedded default>" or the absolute path of the file; not part of equality.
    source_file: str = dataclasses.field(default=EMBEDDED_SOURCE, compare=False)

    @classmethod
    def _prepare(cls, data: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        ctx = info.context
        return {**data, "source_file": ctx.label} if isinstance(ctx, R.LoadContext) else data

    @model_validator(mode="after")
    def _names_unique_and_known(self) -> Settings:
        for table, items in (("guest", self.guests), ("target", self.targets)):
            if not items:  # checked here, after the other tables, as the file reads
                raise bad(f"at least one [[{table}]] table is required, got nothing", table)
            seen: dict[str, int] = {}
            for i, item in enumerate(items):
                if item.name in seen:
                    raise bad(f"must be unique ({table}[{seen[item.name]}] already uses it), got {show(item.name)}",
                              f"{table}[{i}].name")
                seen[item.name] = i
        for i, t in enumerate(self.targets):
            if t.guest is None:
                raise bad(f"required (the name of a [[guest]]; known guests: {', '.join(self.guest_names)}), "
                          "got nothing", f"target[{i}].guest")
            if t.guest not in self.guest_names:
                raise bad(f"names no [[guest]] (known guests: {', '.join(self.guest_names)}), got {show(t.guest)}",
                          f"target[{i}].guest")
        return self

    @property
    def guest_names(self) -> tuple[str, ...]:
        return tuple(g.name for g in self.guests)

    @property
    def target_names(self) -> tuple[str, ...]:
        """The partition keys, in file order."""
        return tuple(t.name for t in self.targets)

    def guest(self, name: str) -> Guest:
        for g in self.guests:
            if g.name == name:
                return g
        raise ConfigError(f"{self.source_file}: guest: no [[guest]] named {name!r} "
                          f"(known guests: {', '.join(self.guest_names)})")

    def target(self, name: str) -> Target:
        for t in self.targets:
            if t.name == name:
                return t
        raise ConfigError(f"{self.source_file}: target: no [[target]] named {name!r} "
                          f"(known targets: {', '.join(self.target_names)})")

    def guest_for(self, target_name: str) -> Guest:
        return self.guest(self.target(target_name).guest)
