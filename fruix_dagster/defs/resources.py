"""The guest as a Dagster resource: one session per target for the whole run."""

from __future__ import annotations

from typing import Any, Mapping

import dagster as dg
from pydantic import PrivateAttr

from fruix_dagster.defs.records import referenced_logs, referenced_paths
from fruix_dagster.guest import buildroot_gc
from fruix_dagster.defs.run_launcher import record_run_worker
from fruix_dagster.errors import FruixError
from fruix_dagster.session import GuestSession
from fruix_dagster.store import ArtifactStore
from fruix_dagster.store.log_gc import gc_logs
from fruix_dagster.settings import Settings, load_settings


class BuildOptions(dg.ConfigurableResource):
    """Per-run build options, set in the launchpad or with ``fruix-dagster build``.

    ``clean`` forces a clean build (``WITH_CLEAN=yes``, not ``WITHOUT_CLEAN=yes``); ``force`` re-runs
    make steps even when a finished step with the same fingerprint exists.
    Run config: ``{"resources": {"build_options": {"config": {"clean": true}}}}``, or the
    run tags ``fruix/clean=true`` / ``fruix/force=true`` (backfills carry tags, not config).
    """

    clean: bool = False
    force: bool = False

    def with_run_tags(self, tags: Mapping[str, str]) -> "BuildOptions":
        """These options, plus ``fruix/clean=true`` / ``fruix/force=true`` from the run's tags."""
        clean, force = tags.get("fruix/clean") == "true", tags.get("fruix/force") == "true"
        if not (clean or force):
            return self
        return BuildOptions(clean=self.clean or clean, force=self.force or force)


class FruixResource(dg.ConfigurableResource):
    """Settings plus guest sessions.

    ``config_file`` empty means ``FRUIX_CONFIG`` or the embedded default.
    """

    config_file: str = ""

    _settings: Settings | None = PrivateAttr(default=None)
    _sessions: dict[str, GuestSession] = PrivateAttr(default_factory=dict)
    _published: bool = PrivateAttr(default=False)
    #: the log of the step now using the sessions (the run's own log during teardown), so a
    #: reconnect, a XenAPI re-login or the after-run policy is filed where it happened
    _log: Any = PrivateAttr(default=None)
    _built: bool = PrivateAttr(default=False)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        # the run worker says which process it is, for the launcher's health check (run monitoring)
        if context.instance is not None and context.run is not None:
            record_run_worker(context.instance, context.run.run_id)

    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings(self.config_file or None)
        return self._settings

    def session(self, target_name: str, log: Any = None) -> GuestSession:
        """The guest session of ``target_name``; its messages go to ``log`` from now on."""
        settings = self.settings()
        guest = settings.guest_for(target_name)
        if log is not None:
            self._log = log
        if guest.name not in self._sessions:
            self._sessions[guest.name] = GuestSession(settings, guest, self._route)
        return self._sessions[guest.name]

    def _route(self, message: str) -> None:
        if self._log is not None:
            self._log.info(message)

    def note_published(self) -> None:
        self._published = True

    def note_built(self) -> None:
        """A make step ran or was reused here: the build root gets a gc after a successful run."""
        self._built = True

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        """Close every guest session (the xcpng after-run policy runs here), then the store gc.

        One guest's failure to close never skips another guest or the gc: each
        failure is logged as it happens, and one FruixError naming all of them is
        raised once everything ran.
        """
        self._log = context.log      # after-run policy, logout: the run's messages, not a step's
        failed = False
        run_id = context.run.run_id if context.run is not None else None
        if context.instance is not None and run_id:
            failed = bool(context.instance.get_records_for_run(
                run_id, of_type=dg.DagsterEventType.STEP_FAILURE, limit=1).records)
        sessions, self._sessions = self._sessions, {}
        errors: list[tuple[str, Exception]] = []
        if self._built and not failed:
            self._built = False
            for name, session in sessions.items():
                try:
                    removed = session.gc_build_root()
                except FruixError as exc:  # collected with the guests' failures below
                    errors.append((f"build-root gc on guest {name!r}", exc))
                    _log_error(context, f"build-root gc on guest {name!r} failed: {exc}")
                    continue
                if removed and context.log is not None:
                    context.log.info(f"build-root gc on {name}: removed {buildroot_gc.describe(removed)}")
        for name, session in sessions.items():
            try:
                session.close(failed=failed)
            except Exception as exc:  # noqa: BLE001 - collected: the other guests and the gc still run
                errors.append((f"guest {name!r}", exc))
                _log_error(context, f"closing guest {name!r} after the run failed: {exc}")
        if self._published and context.instance is not None:
            self._published = False
            try:
                self._gc(context)
            except Exception as exc:  # noqa: BLE001 - collected with the guests' failures below
                errors.append(("store gc", exc))
                _log_error(context, f"store gc after the run failed: {exc}")
        if errors:
            raise FruixError(
                f"after the run, {len(errors)} teardown step(s) failed (expected every guest to "
                f"close and the store gc to finish): "
                + "; ".join(f"{what}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
                            for what, exc in errors)
                + " — see the run log for each; fix the cause and check those guests' state"
            ) from next((exc for _, exc in errors if not isinstance(exc, FruixError)), errors[0][1])

    def _gc(self, context: dg.InitResourceContext) -> None:
        settings = self.settings()
        store = ArtifactStore(settings.store.root, settings.store.keep)
        removed = store.gc(referenced_paths(context.instance, settings.target_names))
        if removed and context.log is not None:
            context.log.info(f"store gc: removed {len(removed)} entries no longer kept")
        logs = gc_logs(settings.store.root,
                       referenced_logs(context.instance, settings.target_names, settings.store.keep),
                       grace_seconds=settings.store.keep_log_days * 86400)
        if logs and context.log is not None:
            context.log.info(f"store gc: removed {len(logs)} build log copies no kept "
                             f"materialization names")


def _log_error(context: dg.InitResourceContext, message: str) -> None:
    if context.log is not None:
        context.log.error(message)
