"""``fruix-dagster``: check-config, build, report, history, rebuild-check, export, store gc/verify, buildroot gc.

Every ``FruixError`` ends the command with its message on stderr and exit
status 1 — no traceback for a user's mistake.
"""


from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from fruix_dagster.errors import FruixError
from fruix_dagster.graph import ARTIFACTS, NAMES, REQUIRED_FILES, SLICES, STAGES, check_name

DESCRIPTION = ("FreeBSD base builds inside Fruix guests as Dagster assets. Settings come from "
               "$FRUIX_CONFIG (or the embedded default), the Dagster instance from $DAGSTER_HOME.")


def _instance():
    import dagster as dg

    if not os.environ.get("DAGSTER_HOME"):
        raise FruixError("DAGSTER_HOME is not set: expected the directory of the Dagster instance "
                         "holding the build's materializations; set DAGSTER_HOME (make demo uses .dagster)")
    return dg.DagsterInstance.get()


def _target_names(args_target: str | None) -> list[str]:
    from fruix_dagster.settings import load_settings

    settings = load_settings()
    if args_target:
        settings.target(args_target)
        return [args_target]
    return list(settings.target_names)


def cmd_check_config(args: argparse.Namespace) -> int:
    from fruix_dagster.settings import check_config_text

    sys.stdout.write(check_config_text(args.file))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from fruix_dagster.defs.records import checks_passed, latest
    from fruix_dagster.report import build_report, render_report

    instance = _instance()
    status = 0
    targets = _target_names(args.target)
    for i, target in enumerate(targets):
        metas: dict[str, dict | None] = {}
        checks_ok: dict[str, bool] = {}
        for asset in NAMES:
            rec = latest(instance, asset, target)
            metas[asset] = None if rec is None else {**rec.metadata, "_timestamp": rec.timestamp}
            if rec is not None and asset in ARTIFACTS:
                names = [check_name(p) for p in REQUIRED_FILES.get(asset, ())]
                results = checks_passed(instance, rec, names)
                checks_ok[asset] = all(v is True for v in results.values())
        lines, complete = build_report(metas, checks_ok)
        if len(targets) > 1:
            print(f"# target {target}")
        sys.stdout.write(render_report(lines, complete))
        if i + 1 < len(targets):
            print()
        status = status or (0 if complete else 1)
    return status


def cmd_build(args: argparse.Namespace) -> int:
    import dagster as dg

    from fruix_dagster.defs.jobs import BUILD_JOB
    from fruix_dagster.definitions import defs

    instance = _instance()
    if args.queue:
        return _build_through_queue(args, instance)
    selection = [dg.AssetKey(a) for a in args.select] if args.select else None
    failed = False
    for target in _target_names(args.target):
        print(f"fruix-dagster: building {target} in this process, not through the run queue "
              "(the guest's build-root lock keeps it apart from other builds; --queue hands it to "
              "the daemon's queue instead)", file=sys.stderr)
        job = defs.resolve_job_def(BUILD_JOB)
        run_config = {"resources": {"build_options": {"config": {"clean": args.clean, "force": args.force}}},
                      "loggers": {"console": {"config": {"log_level": args.log_level}}}}
        result = job.execute_in_process(instance=instance, partition_key=target,
                                        asset_selection=selection, run_config=run_config,
                                        raise_on_error=False)
        if not result.success:
            failed = True
            for step_key, message in step_failures(result):
                print(f"{step_key} failed for target {target}: {message}", file=sys.stderr)
    return 1 if failed else 0


def step_failures(result) -> list[tuple[str, str]]:
    """(step key, message) of every failed step of an in-process run.

    The message is that of the first ``FruixError`` in the error's cause chain
    (Dagster wraps the exception an asset raised), else of the innermost cause.
    """
    out = []
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data and event.step_failure_data.error:
            cause = event.step_failure_data.error
            while cause.cause is not None and "FruixError" not in str(cause.cls_name):
                cause = cause.cause
            out.append((event.step_key, cause.message.strip()))
    return out


def _build_through_queue(args: argparse.Namespace, instance) -> int:
    """Submit one run per target to the instance's run queue (``dagster job launch``), and return."""
    import json
    import subprocess

    import dagster as dg

    from fruix_dagster.defs.jobs import BUILD_JOB, run_tags
    from fruix_dagster.settings import load_settings

    if not isinstance(instance.run_coordinator, dg.QueuedRunCoordinator):
        raise FruixError(f"--queue needs the run queue, but the instance in {os.environ['DAGSTER_HOME']} "
                         f"uses {type(instance.run_coordinator).__name__}; copy the repository's "
                         "dagster.yaml there, or build in this process without --queue")
    if args.select:
        raise FruixError("--select cannot be combined with --queue: the queued run is the whole "
                         "build_target job (unchanged steps are reused); for a subset, drop --queue or "
                         "select the assets in the UI and Materialize")
    settings = load_settings()
    for target in _target_names(args.target):
        tags = {"dagster/partition": target, **run_tags(settings, target)}
        if args.clean:
            tags["fruix/clean"] = "true"
        if args.force:
            tags["fruix/force"] = "true"
        before = {r.run_id for r in instance.get_runs(dg.RunsFilter(job_name=BUILD_JOB))}
        res = subprocess.run([sys.executable, "-m", "dagster", "job", "launch", "-m", "fruix_dagster.definitions",
                              "-j", BUILD_JOB, "--tags", json.dumps(tags)],
                             capture_output=True, text=True)
        if res.returncode != 0:
            last = (res.stderr.strip().splitlines() or ["(no output)"])[-1]
            raise FruixError(f"could not queue a build of {target}: dagster job launch failed: {last}")
        new = [r for r in instance.get_runs(dg.RunsFilter(job_name=BUILD_JOB)) if r.run_id not in before]
        run_id = new[0].run_id if new else "?"
        print(f"queued {target}: run {run_id} (dagster-daemon starts it when guest "
              f"{tags['fruix/guest']} is free; follow it in the UI)")
    return 0


def cmd_store_gc(args: argparse.Namespace) -> int:
    from fruix_dagster.defs.records import referenced_logs, referenced_paths
    from fruix_dagster.settings import load_settings
    from fruix_dagster.store import ArtifactStore
    from fruix_dagster.store.log_gc import gc_logs

    settings = load_settings()
    instance = _instance()
    store = ArtifactStore(settings.store.root, settings.store.keep)
    referenced = referenced_paths(instance, settings.target_names)
    removed = store.gc(referenced, dry_run=args.dry_run)
    verb = "would remove" if args.dry_run else "removed"
    for path in removed:
        print(f"{verb} {path}")
    remaining = len(store.entries()) - (len(removed) if args.dry_run else 0)
    print(f"{verb} {len(removed)} entries; kept the newest {settings.store.keep} per asset and "
          f"target and every entry the latest materializations reference; {remaining} entries "
          f"remain in {store.root}")
    logs = gc_logs(settings.store.root,
                   referenced_logs(instance, settings.target_names, settings.store.keep),
                   dry_run=args.dry_run, grace_seconds=settings.store.keep_log_days * 86400)
    for path in logs:
        print(f"{verb} {path}")
    print(f"{verb} {len(logs)} log copies; kept every log the newest {settings.store.keep} "
          f"materializations per asset and target name (log_path), and those younger than "
          f"{settings.store.keep_log_days:g} days (store.keep_log_days)")
    return 0


def cmd_store_verify(args: argparse.Namespace) -> int:
    from fruix_dagster.settings import load_settings
    from fruix_dagster.store import ArtifactStore
    from fruix_dagster.store.verify import verify_store

    settings = load_settings()
    if args.target:
        settings.target(args.target)
    store = ArtifactStore(settings.store.root, settings.store.keep)
    checked, problems = verify_store(store, args.target)
    for p in problems:
        print(f"{p.entry.name}: {p.path + ': ' if p.path else ''}{p.what}")
    damaged = len({p.entry for p in problems})
    scope = f"target {args.target}" if args.target else "every target"
    if problems:
        print(f"{len(problems)} mismatches in {damaged} of {checked} entries ({scope}) in {store.root}; "
              "delete each damaged entry and re-materialize its asset", file=sys.stderr)
        return 1
    print(f"verified {checked} entries ({scope}) in {store.root}: every tree matches its manifest")
    return 0


def cmd_buildroot_gc(args: argparse.Namespace) -> int:
    from fruix_dagster.session import GuestSession
    from fruix_dagster.settings import load_settings

    settings = load_settings()
    guests = {}
    for name in _target_names(args.target):
        guest = settings.guest_for(name)
        guests.setdefault(guest.name, guest)
    verb = "would remove" if args.dry_run else "removed"
    root = settings.build.build_root
    for guest in guests.values():
        session = GuestSession(settings, guest)
        try:
            removals = session.gc_build_root(dry_run=args.dry_run)
        finally:
            session.close()
        for r in removals:
            print(f"{verb} {guest.name}:{r.path} ({r.kind}, {r.kib} KiB)")
        print(f"{guest.name}: {verb} {len(removals)} entries ({sum(r.kib for r in removals)} KiB) "
              f"from {root}; kept the object tree and the stages (stage/<target>/) of every current "
              f"target and the newest {settings.build.keep_steps} step records per step")
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    from fruix_dagster.defs.history import load_history
    from fruix_dagster.history.frame import frame_of
    from fruix_dagster.history.render import render
    from fruix_dagster.settings import load_settings

    settings = load_settings()
    instance = _instance()
    frame = load_history(instance, [args.target] if args.target else None,
                         artifacts=[args.asset] if args.asset else ARTIFACTS,
                         key_files=settings.slices.key_files)
    last = args.last if args.last is not None else (20 if args.format == "table" else 0)
    rows = frame_of(frame)
    if rows.empty:
        what = " of ".join(x for x in (args.asset, f"target {args.target!r}" if args.target else None) if x)
        raise FruixError(
            f"history: expected materializations{' of ' + what if what else ''} in the instance at "
            f"{instance.root_directory}, found none (targets in the settings: "
            f"{', '.join(settings.target_names)}); build first (fruix-dagster build) or check "
            f"DAGSTER_HOME and --target")
    sys.stdout.write(render(rows, args.format, last=last or None))
    return 0


def cmd_rebuild_check(args: argparse.Namespace) -> int:
    from fruix_dagster.defs.history import REBUILD_JOB, REBUILD_OP
    from fruix_dagster.defs.jobs import GUEST_TAG
    from fruix_dagster.definitions import defs
    from fruix_dagster.settings import load_settings

    settings = load_settings()
    if args.target:
        settings.target(args.target)
        target = args.target
    elif len(settings.target_names) == 1:
        target = settings.target_names[0]
    else:
        raise FruixError(f"rebuild-check: expected --target (one of {', '.join(settings.target_names)}), "
                         f"found none; name the target to build twice")
    instance = _instance()
    job = defs.resolve_job_def(REBUILD_JOB)
    run_config = {"ops": {REBUILD_OP: {"config": {"target": target, "keep": args.keep}}},
                  "loggers": {"console": {"config": {"log_level": args.log_level}}}}
    result = job.execute_in_process(
        instance=instance, run_config=run_config, raise_on_error=False,
        tags={GUEST_TAG: settings.guest_for(target).name, "fruix/target": target})
    if not result.success:
        for _step, message in step_failures(result):
            print(f"rebuild-check failed for target {target}: {message}", file=sys.stderr)
        return 1
    out = result.output_for_node(REBUILD_OP)
    sys.stdout.write(out["report"])
    return 0 if out["identical"] else 1


def cmd_export(args: argparse.Namespace) -> int:
    from pathlib import Path

    from fruix_dagster.defs.records import latest
    from fruix_dagster.settings import load_settings
    from fruix_dagster.store import ArtifactStore
    from fruix_dagster.store.export import export_sets

    settings = load_settings()
    settings.target(args.target)
    instance = _instance()
    assets = [*STAGES, *(SLICES if args.slices else ())]
    paths = {}
    for asset in assets:
        rec = latest(instance, asset, args.target)
        if rec is None:
            raise FruixError(f"export: {asset} for target {args.target!r} was never materialized; "
                             f"build the target first (fruix-dagster build --target {args.target})")
        paths[asset] = str(rec.metadata["path"])
    store = ArtifactStore(settings.store.root, settings.store.keep)
    for line in export_sets(store, paths, Path(args.dir)):
        print(line)
    return 0


class _OneLineHelp(argparse.HelpFormatter):
    """Every command's help on its own line: room for the longest name ("rebuild-check")."""

    def __init__(self, prog: str):
        super().__init__(prog, max_help_position=24, width=100)
        self._action_max_length = 20   # argparse measures sub-commands one indent short


def build_parser() -> argparse.ArgumentParser:
    from importlib.metadata import version

    parser = argparse.ArgumentParser(
        prog="fruix-dagster", description=DESCRIPTION,
        formatter_class=_OneLineHelp)
    parser.add_argument("--version", action="version",
                        version=f"fruix-dagster {version('fruix_dagster')} (dagster {version('dagster')})")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", title="commands")

    p = sub.add_parser("check-config", help="validate a settings file and print it resolved")
    p.add_argument("file", nargs="?", help="settings file (default: $FRUIX_CONFIG or the embedded default)")
    p.set_defaults(func=cmd_check_config)

    p = sub.add_parser("report", help="print the harness-compatible summary from the instance")
    p.add_argument("--target", help="one target (default: every target)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("build", help="build targets' assets, in this process or through the queue (--queue)")
    p.add_argument("--target", help="one target (default: every target, one run each)")
    p.add_argument("--select", action="append", choices=NAMES, help="only these assets (repeatable)")
    p.add_argument("--clean", action="store_true", help="clean build (WITH_CLEAN=yes instead of WITHOUT_CLEAN=yes)")
    p.add_argument("--force", action="store_true", help="re-run make steps even if reusable")
    p.add_argument("--queue", action="store_true",
                   help="submit one run per target to the run queue (one run per guest at a time, "
                        "started by dagster-daemon) and return, instead of building in this process")
    p.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"),
                   help="console log level of the run (default INFO: '>>>' markers and steps)")
    p.set_defaults(func=cmd_build)

    p = sub.add_parser("history", help="every past materialization of the stages and slices")
    p.add_argument("--target", help="one target (default: every target)")
    p.add_argument("--asset", choices=ARTIFACTS,
                   help="one artifact (default: all four)")
    p.add_argument("--last", type=_count, metavar="N",
                   help="only the newest N rows (default: 20 for table, all for csv/json; 0: all)")
    p.add_argument("--format", default="table", choices=("table", "csv", "json"),
                   help="table for people; csv or json (every column) for scripts")
    p.set_defaults(func=cmd_history)

    p = sub.add_parser("rebuild-check", help="build a target's source twice from scratch, compare the trees")
    p.add_argument("--target", help="the target (needed when the settings name several)")
    p.add_argument("--keep", action="store_true",
                   help="keep both build roots (<build_root>-rebuild-a/-b) afterwards")
    p.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"),
                   help="console log level of the run (default INFO)")
    p.set_defaults(func=cmd_rebuild_check)

    p = sub.add_parser("export", help="write base.txz, kernel.txz, MANIFEST, CHECKSUM.SHA256 of a target")
    p.add_argument("--target", required=True)
    p.add_argument("--slices", action="store_true", help="also headers.txz and bootloader.txz")
    p.add_argument("dir", help="destination directory")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("store", help="the host artifact store: gc (retention policy), verify (stored trees)")
    store_sub = p.add_subparsers(dest="store_command", required=True)
    g = store_sub.add_parser("gc", help="remove old store entries and build log copies (keeps store.keep per asset and target)")
    g.add_argument("--dry-run", action="store_true", help="list what would be removed, remove nothing")
    g.set_defaults(func=cmd_store_gc)
    v = store_sub.add_parser("verify", help="re-hash stored trees against their manifests; exit 1 on any mismatch")
    v.add_argument("--target", help="only this target's entries (default: every entry)")
    v.set_defaults(func=cmd_store_verify)

    p = sub.add_parser("buildroot", help="the guests' build roots")
    br_sub = p.add_subparsers(dest="buildroot_command", required=True)
    g = br_sub.add_parser("gc", help="remove object trees, stage dirs and step records no current "
                                     "target needs (runs after every successful build run)")
    g.add_argument("--dry-run", action="store_true", help="list what would be removed, remove nothing")
    g.add_argument("--target", help="only the guest of this target (default: every target's guest)")
    g.set_defaults(func=cmd_buildroot_gc)
    return parser


def _count(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected a whole number ≥ 0, got {text!r}")
    return int(text)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except FruixError as exc:
        print(f"fruix-dagster: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
