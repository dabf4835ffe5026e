"""commonstack: give a community group its own Nextcloud, Matrix and Discourse.

Click commands only: parse arguments, call the library, print results. Heavy libraries
(pydantic, pyinfra) are imported inside commands so that `--help` stays instant.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from commonstack.stacks.layers import LAYER_NAMES  # the registry alone: no pydantic, no pyinfra

HOST_OPTION = {"multiple": True, "metavar": "HOST", "help": "Only this host of the group (repeatable)."}
ONLY_OPTION = {
    "multiple": True,
    "metavar": "LAYER",
    "type": click.Choice(LAYER_NAMES),
    "help": f"Only this layer (repeatable): {', '.join(LAYER_NAMES)}.",
}


class _Commands(click.Group):
    """Turns the kit's own errors into one clear line on stderr and exit status 2."""

    def invoke(self, ctx: click.Context):
        from commonstack.errors import CommonstackError

        try:
            result = super().invoke(ctx)
            sys.stdout.flush()  # here, so that a reader gone away is caught below, not at exit
            return result
        except BrokenPipeError:
            # The reader of the output went away (`commonstack presets | head -1`): stop quietly,
            # as cat does, with nothing more written to the closed pipe.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(1)
        except CommonstackError as exc:
            click.secho(f"error: {' '.join(str(exc).split())}", fg="red", err=True)
            sys.exit(exc.exit_code)
        except (click.exceptions.Exit, click.ClickException, click.Abort, SystemExit, KeyboardInterrupt):
            raise
        except Exception as exc:  # a bug: still one line, the traceback only on request
            if os.environ.get("COMMONSTACK_DEBUG"):
                raise
            said = " ".join(str(exc).split())
            click.secho(
                f"internal error: {type(exc).__name__}: {said[:300]} "
                "(please report it; COMMONSTACK_DEBUG=1 shows the traceback)",
                fg="red",
                err=True,
            )
            sys.exit(1)


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--inventories",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="COMMONSTACK_INVENTORIES",
    default=Path("inventories"),
    show_default=True,
    help="Folder holding one folder per group.",
)
@click.pass_context
def main(ctx: click.Context, inventories: Path) -> None:
    """Deploy and look after a community group's own stack: files and calendars
    (Nextcloud), chat and calls (Matrix) and a forum (Discourse), on a VPS or a
    Raspberry Pi.

    \b
    A first evening:
      commonstack presets                      # which stack fits the group?
      commonstack init tenants --preset small-group \\
          --domain tenants.example.org --host root@203.0.113.7
      commonstack validate tenants             # offline: profile, sizing, secrets
      commonstack render tenants --out /tmp/review   # read every config first

    Everything about a group lives in INVENTORIES/GROUP/: stack.yaml (its
    choices), secrets.yaml (generated, mode 0600, never printed) and known_hosts.
    """
    ctx.obj = inventories


def _group(ctx: click.Context, name: str):
    from commonstack.inventories.groups import group

    return group(name, ctx.obj)


@main.command()
def presets() -> None:
    """List the preset stacks, who each is for and the smallest host it fits.

    \b
    Example:
      commonstack presets
    """
    from commonstack.stacks.loader import load_preset, preset_names

    for name in preset_names():
        preset = load_preset(name)
        click.secho(name, bold=True, nl=False)
        click.echo(f"  (smallest host: {preset.smallest_host})")
        click.echo(f"    {preset.description}")


@main.command()
@click.argument("group_name", metavar="GROUP")
@click.option("--preset", help="Preset to start from (see `commonstack presets`).")
@click.option("--domain", help="The group's domain, e.g. tenants.example.org.")
@click.option(
    "--host",
    "hosts",
    multiple=True,
    help="[NAME=][USER@]ADDRESS[:PORT]; repeat for several hosts (split: home=..., vps=...).",
)
@click.option("--admin-email", help="Where certificates and services send admin mail. Default: admin@DOMAIN.")
@click.option("--smtp-host", help="The mail relay the services send through, e.g. smtp.example.org.")
@click.option("--smtp-port", type=click.IntRange(1, 65535), help="Its port. Default: 587 (STARTTLS).")
@click.option("--smtp-user", help="The login at the relay, if it needs one.")
@click.option("--smtp-from", help="The sender address of the services' mail. Default: noreply@DOMAIN.")
@click.option(
    "--smtp-password-file",
    type=click.File("r"),
    help="A file holding the relay password ('-': standard input); it is copied into secrets.yaml "
    "(mode 0600). Without it the password is asked, hidden.",
)
@click.option("--no-email", is_flag=True, help="No outgoing email (not for the forum preset: see below).")
@click.option("--force", is_flag=True, help="Replace an existing stack.yaml (secrets are kept).")
@click.pass_context
def init(ctx, group_name, preset, domain, hosts, admin_email, smtp_host, smtp_port, smtp_user, smtp_from,
         smtp_password_file, no_email, force) -> None:
    """Create inventories/GROUP/ with a stack profile and freshly generated secrets.

    Missing options are asked for when run in a terminal. An existing group is
    never overwritten without --force, and its secrets are always kept. A failed
    init leaves nothing behind.

    Email: Discourse cannot work without it (sign-ups, password resets), so the
    forum preset needs an SMTP relay. With --no-email, full and split leave the
    forum out (written disabled in stack.yaml, with why); Nextcloud and Matrix
    work without email (no notifications or password resets by mail). The relay
    password never goes on a command line: it is asked hidden or read from
    --smtp-password-file, and stored only in secrets.yaml.

    \b
    Examples:
      commonstack init tenants --preset small-group --domain tenants.example.org \\
          --host root@203.0.113.7
      commonstack init neighbours --preset forum --domain neighbours.example.org \\
          --host root@203.0.113.8 --smtp-host smtp.example.org \\
          --smtp-user forum@neighbours.example.org --smtp-password-file ~/relay-password
      commonstack init coop --preset split --domain coop.example.org \\
          --host home=pi@192.168.1.20 --host vps=root@203.0.113.7 --no-email
    """
    from commonstack.errors import GroupError
    from commonstack.inventories.groups import (
        NEEDS_EMAIL,
        create_group,
        parse_host,
        preset_services,
        required_host_names,
        services_needing_email,
        stack_document,
    )
    from commonstack.inventories.secrets import read_secrets
    from commonstack.stacks.loader import load_preset, preset_names

    group = _group(ctx, group_name)
    if group.stack_file.exists() and not force:
        raise GroupError(f"{group.stack_file} already exists; edit it, or pass --force to replace it")
    interactive = sys.stdin.isatty()

    def ask(value, option, prompt, **kwargs):
        if value:
            return value
        if not interactive:
            raise GroupError(f"{option} is required (no terminal to ask on)")
        return click.prompt(prompt, **kwargs)

    preset = ask(preset, "--preset", "Preset", type=click.Choice(preset_names()), default="small-group")
    load_preset(preset)  # unknown preset: a clear error before anything else
    domain = ask(domain, "--domain", "The group's domain (e.g. tenants.example.org)")
    names = required_host_names(preset) or ["server"]
    if not hosts:
        hosts = tuple(
            f"{name}={ask(None, '--host', f'SSH address of host {name!r} (USER@ADDRESS[:PORT])')}"
            for name in names
        )
    entries = [parse_host(spec, default_name=names[min(i, len(names) - 1)]) for i, spec in enumerate(hosts)]
    admin_email = admin_email or f"admin@{domain}"

    # Email: what the preset's services need, what the volunteer gave, and what to ask.
    given = {"--smtp-port": smtp_port, "--smtp-user": smtp_user, "--smtp-from": smtp_from,
             "--smtp-password-file": smtp_password_file}
    if no_email and (smtp_host or any(given.values())):
        option = "--smtp-host" if smtp_host else next(o for o, v in given.items() if v)
        raise GroupError(f"--no-email and {option} exclude each other: give a relay, or no email")
    if not smtp_host and any(given.values()):
        raise GroupError(f"{next(o for o, v in given.items() if v)} needs --smtp-host (the relay it belongs to)")
    if smtp_password_file and not smtp_user:
        raise GroupError("--smtp-password-file needs --smtp-user (the login that password is for)")
    needing = services_needing_email(preset)
    why = "; ".join(NEEDS_EMAIL[s] for s in needing)
    alone = bool(needing) and set(needing) == set(preset_services(preset))
    if no_email and alone:
        raise GroupError(
            f"--no-email: the {preset} preset cannot run without email ({why}); give --smtp-host "
            "(and --smtp-user with --smtp-password-file if the relay needs a login)"
        )
    wants_email = bool(smtp_host)
    if not wants_email and not no_email:
        if interactive:
            if alone:
                wants_email = True
            elif needing:
                wants_email = click.confirm(f"{why}. Set up an SMTP relay now (no: the forum is left out)?", default=True)
            else:
                wants_email = click.confirm("Send email (notifications, password resets) through an SMTP relay?",
                                            default=False)
        elif needing:
            hint = "" if alone else ", or --no-email to leave the forum out"
            raise GroupError(f"--smtp-host is required: {why} (no terminal to ask on{hint})")
    smtp, smtp_password = None, None
    if wants_email:
        if not smtp_host:  # on a terminal, without SMTP options: ask for each
            smtp_host = click.prompt("SMTP relay (e.g. smtp.example.org)")
            smtp_port = click.prompt("SMTP port", type=click.IntRange(1, 65535), default=587)
            smtp_user = click.prompt("SMTP login (blank if the relay needs none)", default="", show_default=False)
            smtp_from = click.prompt("Sender address", default=f"noreply@{domain}")
        smtp = {"host": smtp_host}
        smtp.update({k: v for k, v in (("port", smtp_port), ("username", smtp_user or None),
                                      ("from_address", smtp_from)) if v})
        if smtp_user:
            if smtp_password_file:
                smtp_password = smtp_password_file.read().rstrip("\r\n")
                if not smtp_password:
                    raise GroupError(f"--smtp-password-file {smtp_password_file.name}: the file is empty")
            elif interactive:
                smtp_password = click.prompt(f"Password of {smtp_user} at {smtp_host} (hidden)", hide_input=True,
                                             confirmation_prompt=True)
            elif not read_secrets(group.secrets_file).get("smtp_password"):
                raise GroupError(
                    f"--smtp-password-file is required with --smtp-user (a file holding the password of "
                    f"{smtp_user}; it is copied into secrets.yaml, mode 0600)"
                )
    left_out = {}
    if not smtp:
        left_out = {s: f"{s} is left out: {NEEDS_EMAIL[s]}, and this group was set up without an SMTP relay. "
                       "To add it: give smtp (host, username) here, smtp_password in secrets.yaml, and set "
                       "enabled: true." for s in needing}

    document = stack_document(group_name, preset, domain, admin_email, entries, smtp, left_out)
    create_group(group, document, {"smtp_password": smtp_password} if smtp_password else None)
    click.echo(f"Created {group.stack_file} (preset {preset}) and {group.secrets_file} (mode 0600).")
    for service in left_out:
        click.secho(f"Left out {service}: it cannot work without email (see stack.yaml).", fg="yellow")
    click.echo(f"Next: commonstack validate {group_name}")


@main.command()
@click.argument("group_name", metavar="GROUP")
@click.pass_context
def validate(ctx, group_name) -> None:
    """Check a group's profile, sizing and secrets offline; nothing is contacted.

    \b
    Example:
      commonstack validate tenants
    """
    from commonstack.inventories.secrets import read_secrets, redacted, require_provided
    from commonstack.plan import plan_group

    group = _group(ctx, group_name)
    profile = group.load()
    require_provided(group.secrets_file, profile, read_secrets(group.secrets_file))
    plans = plan_group(group, profile, redacted(profile))
    for plan in plans:
        services = ", ".join(sorted(profile.services_on(plan.host))) or "base only"
        memory = plan.release.facts.memory_mb
        click.echo(f"{plan.host.name} ({plan.host.address}): {services}; sized for {memory} MB, "
                   f"{len(plan.files)} config files")
    click.secho(f"{group.stack_file}: valid", fg="green")


@main.command()
@click.argument("group_name", metavar="GROUP")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder to write into: OUT/HOST/etc/...")
@click.option("--force", is_flag=True, help="Write into a folder that is not empty.")
@click.pass_context
def render(ctx, group_name, out: Path, force: bool) -> None:
    """Write every config file of every host into a folder, for review.

    Offline: sized from the profile's hints (memory_mb, cpus, arch) or, without
    them, for the smallest host that fits. Secrets appear as <secret:NAME>.

    \b
    Example:
      commonstack render tenants --out /tmp/review && less /tmp/review/*/etc/caddy/Caddyfile
    """
    from commonstack.errors import GroupError
    from commonstack.inventories.secrets import redacted
    from commonstack.plan import plan_group

    group = _group(ctx, group_name)
    if out.exists() and any(out.iterdir()) and not force:
        raise GroupError(f"{out} is not empty; choose another --out or pass --force")
    profile = group.load()
    plans = plan_group(group, profile, redacted(profile))
    count = 0
    for plan in plans:
        for config in plan.files:
            target = out / plan.host.name / config.path.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(config.content)
            count += 1
    click.echo(f"Wrote {count} files for {len(plans)} host(s) into {out}")


@main.command()
def schema() -> None:
    """Print the JSON Schema of stack.yaml, for completion in your editor.

    \b
    Example (VS Code with the YAML extension):
      commonstack schema > stack.schema.json
      # then put `# yaml-language-server: $schema=stack.schema.json` atop stack.yaml
    """
    import json

    from commonstack.stacks.model import StackProfile

    click.echo(json.dumps(StackProfile.model_json_schema(), indent=2))


@main.command("pin-keys")
@click.argument("group_name", metavar="GROUP")
@click.option("-y", "--yes", is_flag=True, help="Pin without asking (only on a network you trust).")
@click.pass_context
def pin_keys(ctx, group_name, yes) -> None:
    """Record each host's SSH key in inventories/GROUP/known_hosts, and that
    of the SFTP backup repository's server (which the hosts connect to).

    Every later connection checks the host against this file, so a swapped or
    intercepted server is refused. Compare each fingerprint shown with the one
    your provider's console (or `ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub`
    on the host) shows before you say yes. A key that changed is never replaced.

    \b
    Example:
      commonstack pin-keys tenants
    """
    from commonstack.inventories.known_hosts import fingerprint, pin, scan_host_key

    from commonstack.stacks.repository import parse_repository

    group = _group(ctx, group_name)
    profile = group.load()
    servers = [(host.name, host.address, host.port) for host in profile.hosts]
    if profile.backup.enabled and profile.backup.repository:
        repository = parse_repository(profile.backup.repository)
        if repository.kind == "sftp":  # the hosts reach it with this key pinned, never trusting blindly
            servers.append(("backup repository", repository.server, repository.port))
    for name, address, port in servers:
        key_type, key = scan_host_key(address, port)
        click.echo(f"{name} ({address}:{port}): {key_type} {fingerprint(key)}")
        if yes or click.confirm("  Is this the right fingerprint?", default=False):
            added = pin(group.known_hosts, address, port, key_type, key)
            click.echo("  pinned" if added else "  already pinned")
        else:
            click.echo("  not pinned")


def _converge(ctx, group_name: str, hosts, only, apply_changes: bool, assume_yes: bool, checks: bool = True,
              purge: bool = False) -> None:  # fmt: skip
    """plan, and for deploy: confirm, apply, summarise, check."""
    from commonstack.deploys.early_batch import early_batches

    group = _group(ctx, group_name)
    with early_batches(group, hosts, only, purge) as early:  # sent while pyinfra loads
        from commonstack.deploys.converge import GroupConverger  # imports pyinfra: only here

        converger = GroupConverger(group, hosts, on_progress=_progress, only=frozenset(only),
                                   generate_secrets=apply_changes, purge=purge, early=early)  # fmt: skip
        click.echo(f"Planning {len(converger.targets)} host(s) of {group_name}...")
        planned = converger.plan()
    _converged(ctx, group_name, converger, planned, apply_changes, assume_yes, checks, purge)


def _converged(ctx, group_name: str, converger, planned, apply_changes: bool, assume_yes: bool, checks: bool,
               purge: bool) -> None:  # fmt: skip
    """After the first plan: print it, and for deploy: confirm, apply, summarise, check."""
    _print_results(planned, planned=True)
    _print_pending_upgrades(planned, group_name)
    interrupted = {name: outcome.unfinished for name, outcome in planned.outcomes.items() if outcome.unfinished}
    if interrupted and apply_changes:
        if not _resume_upgrades(ctx, group_name, interrupted, assume_yes):
            click.secho("Nothing was deployed: an interrupted upgrade must be resumed or rolled back first.", fg="red")
            sys.exit(1)
        click.echo(f"Planning {len(converger.targets)} host(s) of {group_name} again...")
        planned = converger.plan()
        _print_results(planned, planned=True)
    if not apply_changes:
        sys.exit(1 if planned.failed else 0)
    if len(planned.failed) == len(planned.results):
        click.secho("Nothing was deployed: no host could be reached or planned.", fg="red")
        sys.exit(1)
    if planned.failed and not assume_yes and not click.confirm("Some hosts cannot be deployed. Deploy the others?"):
        sys.exit(1)
    failed = {r.name for r in planned.failed}
    if not planned.pending:
        click.secho("Nothing to change" + (" on the other hosts." if failed else "."), fg="green")
    else:
        if purge and not _confirm_purge(planned, assume_yes):
            click.echo("Nothing changed.")
            sys.exit(1)
        if not assume_yes and not click.confirm(f"Apply these changes to {len(planned.pending)} host(s)?"):
            click.echo("Nothing changed.")
            sys.exit(1)
        applied = converger.apply(planned.pending)
        _print_results(applied, planned=False)
        failed |= {r.name for r in applied.failed}
    # Every deploy ends with the health checks of what it deployed. Their verdict is printed, not
    # folded into the exit status: right after a deploy, Caddy may still be obtaining certificates.
    deployed = {name: plan for name, plan in planned.plans.items() if name not in failed}
    if deployed and checks:
        from commonstack.errors import CommonstackError

        click.echo("Health checks:")
        try:
            if not _print_checks(_check(converger.group, converger.targets, converger.secrets, deployed, converger.only)):
                click.secho(f"Fix what failed, then `commonstack check {group_name}`.", fg="red")
        except CommonstackError as exc:
            click.secho(f"error: {exc}", fg="red", err=True)
    if failed:
        sys.exit(1)


def _print_pending_upgrades(planned, group_name: str) -> None:
    """A deploy keeps the release each service runs: say where the profile wants another."""
    for name, outcome in planned.outcomes.items():
        for layer_name, (running, wanted) in outcome.pending.items():
            click.secho(
                f"{name}: {layer_name} {running[:12]} runs and the profile asks for {wanted[:12]}: the deploy keeps "
                f"{running[:12]}; `commonstack upgrade {group_name} --host {name} --only {layer_name}` upgrades it "
                "(backup, health gate, rollback)",
                fg="yellow",
            )


def _resume_upgrades(ctx, group_name: str, interrupted: dict[str, dict[str, str]], assume_yes: bool) -> bool:
    """Resume (or roll back) the interrupted upgrades of these hosts, as `upgrade` would; True when
    each ended with its layer serving."""
    from commonstack.upgrades.upgrader import Upgrader

    for name, layers in interrupted.items():
        for what in layers.values():
            click.secho(f"{name}: {what}", fg="red")
    if not assume_yes and not click.confirm("Resume it now (or roll it back if its health gate fails)?", default=True):
        return False
    upgrader = Upgrader(_group(ctx, group_name), tuple(interrupted), on_progress=click.echo)
    upgrader.survey()
    resumed = [task for task in upgrader.tasks() if task.resume is not None]
    for task in resumed:
        if task.refusals:
            click.secho(f"{task.host}: {task.what}: {'; '.join(task.refusals)}", fg="red")
            return False
        click.secho(f"{task.host}: resuming {task.what}", bold=True)
        verdict = upgrader.run(task)
        _print_verdict(verdict)
        if verdict.outcome not in ("upgraded", "rolled back", "updated") or verdict.down:
            return False
    return True


def _confirm_purge(planned, assume_yes: bool) -> bool:
    """--purge deletes data: name everything that goes, and ask (--yes says yes for the volunteer)."""
    doomed = [(r.name, op.name) for r in planned.results for op in r.operations
              if op.changed and "Purge " in op.name and ": delete " in op.name]  # fmt: skip
    if not doomed:
        return True
    click.secho("--purge deletes, for good:", fg="red", bold=True)
    for host_name, what in doomed:
        click.secho(f"  {host_name}: {what.split(': ', 1)[-1]}", fg="red")
    return assume_yes or click.confirm("Delete these? There is no undo (a backup is the only way back)", default=False)


def _check(group, targets, secrets, plans, only=frozenset(), unreachable=None, started=None):
    """The health checks of a group's planned hosts; their verdicts and hints are kept on this
    machine for the runbook (without secrets, and not in the group's folder)."""
    import shlex
    from dataclasses import asdict

    from commonstack.checks.group import check_group
    from commonstack.inventories.last_check import save_last_check

    results = check_group(targets, plans, secrets, only, unreachable, started=started)
    save_last_check(group.last_check_file, [asdict(r) for r in results],
                    "commonstack " + shlex.join(sys.argv[1:]), secrets.values())  # fmt: skip
    return results


def _progress(message: str) -> None:
    click.secho(f"  {message}", dim=True, err=True)


def _print_results(run, planned: bool) -> None:
    verb = "would change" if planned else "changed"
    for result in run.results:
        plan = run.plans.get(result.name)
        sized = f" [{plan.release.codename}, {plan.release.facts.memory_mb} MB, {plan.release.facts.arch}]" if plan else ""
        changes = [op for op in result.operations if op.changed]
        colour = {"changed": "yellow", "unchanged": "green"}.get(result.status, "red")
        summary = result.error or f"{len(changes)} of {len(result.operations)} operations {verb}"
        click.secho(f"{result.name}{sized}: {result.status} — {summary}", fg=colour)
        for op in changes:
            click.echo(f"    {op.name}")
            if planned and op.diff:
                click.echo("".join(f"      {line}\n" for line in op.diff.splitlines()), nl=False)
    for name, layers in run.undeployable_layers().items():
        click.secho(f"{name}: not deployed by this version yet: {', '.join(layers)}", fg="yellow")
    for name, reasons in run.unavailable.items():
        for layer_name, reason in reasons.items():
            click.secho(f"{name}: skipped {layer_name}: {reason}", fg="yellow")
    _print_turned_off(run, planned)


def _print_turned_off(run, planned: bool) -> None:
    """Where the data of a layer that was just turned off stays (nothing is said once it is off)."""
    from commonstack.stacks.layers import layer

    for result in run.results:
        outcome = run.outcomes.get(result.name)
        for name in outcome.turned_off if outcome else ():
            if not any(op.changed and f"Turn off {name}:" in op.name for op in result.operations):
                continue
            data = layer(name).data
            kept = f"; its data stays in {', '.join(data)} (`deploy --purge` deletes it)" if data else ""
            verb = "would be stopped" if planned else "is stopped"
            click.secho(f"{result.name}: {name} is off in the profile and {verb}{kept}", fg="yellow")


@main.command()
@click.argument("group_name", metavar="GROUP")
@click.option("--host", "--limit", "hosts", **HOST_OPTION)
@click.option("--only", **ONLY_OPTION)
@click.pass_context
def plan(ctx, group_name, hosts, only) -> None:
    """Show what a deploy would change on each host, with file diffs; change nothing.

    Connects over SSH (host keys checked against inventories/GROUP/known_hosts),
    reads each host's facts (RAM, CPUs, architecture, Debian release), sizes and
    renders its configs, and compares them with what is there. Secrets in diffs
    are shown as ********. Exit status 1 if any host cannot be planned.

    \b
    Examples:
      commonstack plan tenants
      commonstack plan coop --host home
      commonstack plan tenants --only caddy      # after changing TLS settings
    """
    _converge(ctx, group_name, hosts, only, apply_changes=False, assume_yes=False)


@main.command()
@click.argument("group_name", metavar="GROUP")
@click.option("--host", "--limit", "hosts", **HOST_OPTION)
@click.option("-y", "--yes", is_flag=True, help="Apply without asking.")
@click.option("--no-check", is_flag=True, help="Skip the health checks at the end (run `commonstack check` later).")
@click.option("--only", **ONLY_OPTION)
@click.option("--purge", is_flag=True,
              help="Also delete the data and databases of the layers the profile turned off (asks first).")
@click.pass_context
def deploy(ctx, group_name, hosts, yes, only, no_check, purge) -> None:
    """Converge every host of a group to its profile, in parallel.

    Plans first (like `commonstack plan`), asks before changing anything (unless
    --yes), applies, then prints a summary per host: changed / unchanged / failed,
    and ends with the health checks. A second deploy reports zero changes. Exit
    status 1 if any host failed.

    A service the profile turns off (or moves to another host) is stopped and
    disabled, its site and ports closed; its data stays where it was, and the
    deploy says where. `--purge` deletes that data too, after listing it.

    \b
    Examples:
      commonstack deploy tenants
      commonstack deploy coop --host vps --yes
      commonstack deploy tenants --purge        # after turning matrix.turn off
    """
    _converge(ctx, group_name, hosts, only, apply_changes=True, assume_yes=yes, checks=not no_check, purge=purge)


def _print_checks(results) -> bool:
    """A table by host and service: pass/FAIL/skip per check, under each failure what to look at
    (skips say why); returns whether everything passed."""
    marks = {"passed": ("pass", "green"), "failed": ("FAIL", "red"), "skipped": ("skip", "yellow")}
    width = max((len(r.layer) for r in results), default=0)
    for host in dict.fromkeys(r.host for r in results):
        rows = [r for r in results if r.host == host]
        failed = sum(r.outcome == "failed" for r in rows)
        click.secho(host, bold=True, nl=False)
        click.secho(f"  {failed} failed" if failed else "  all passed", fg="red" if failed else "green")
        shown = None
        for r in rows:
            word, colour = marks.get(r.outcome, (r.outcome, "red"))
            label = r.layer if r.layer != shown else ""
            shown = r.layer
            why = click.style(f" — {r.message}", dim=True) if r.outcome == "skipped" and r.message else ""
            click.echo(f"  {label:{width}}  {click.style(word, fg=colour, bold=r.outcome == 'failed')}  {r.check}{why}")
            if r.outcome == "failed":
                click.secho(f"  {'':{width}}        -> {r.message}", fg="red")
    counts = {o: sum(r.outcome == o for r in results) for o in ("passed", "failed", "skipped")}
    summary = ", ".join(f"{count} {outcome}" for outcome, count in counts.items())
    click.secho(f"{len(results)} checks: {summary}", fg="red" if counts["failed"] else "green", bold=True)
    return not counts["failed"]


@main.command()
@click.argument("group_name", metavar="GROUP")
@click.option("--host", "--limit", "hosts", **HOST_OPTION)
@click.option("--only", **ONLY_OPTION)
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON, for scripts.")
@click.option("--junit", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
              help="Also write the results as JUnit XML (for CI).")
@click.pass_context
def check(ctx, group_name, hosts, only, as_json, junit) -> None:
    """Run the health checks of every host: inside it (testinfra) and from outside.

    Run it after every upgrade (deploy runs it at its end). Inside each host,
    over SSH with its pinned key: every service is up, tuned and reachable
    only where it should be; disks have 15% free, memory is available, no
    process was killed for lack of memory, no unit failed, security updates
    run, no reboot is pending, the clock is synchronised. From this machine:
    every hostname resolves to its host, the declared ports answer (80/443,
    TURN), no other port does, certificates are valid and fresh, HTTPS
    answers with the security headers. Hosts are checked in parallel.

    Each failure says what to look at. Exit status 1 if any check failed.
    Nothing secret is printed. The checks are plain testinfra tests
    (commonstack/checks/*.py): `pytest --hosts=ssh://HOST` runs them too.

    \b
    This machine's view (environment):
      COMMONSTACK_CHECK_HOSTS_FILE  a hosts file (ADDRESS NAME...) consulted
                                    before DNS: split-horizon DNS, test domains
      COMMONSTACK_CHECK_CA_FILE     extra CA certificates to trust (a private CA)

    \b
    Examples:
      commonstack check tenants
      commonstack check coop --host home --only nextcloud
      commonstack check tenants --json > health.json
      commonstack check tenants --junit reports/health.xml
    """
    import json
    from dataclasses import asdict

    from commonstack.checks.runner import CheckRun

    # pytest imports what the checks need (0.2 s) while the profile loads, then
    # collects them while each host's connection opens and says what it is.
    with CheckRun() as started:
        from commonstack.checks.group import sized_plans, start_group_checks
        from commonstack.inventories.secrets import current_secrets
        from commonstack.inventories.targets import host_targets

        group = _group(ctx, group_name)
        profile = group.load()
        targets, secrets = host_targets(group, profile, hosts), current_secrets(group.secrets_file, profile)
        start_group_checks(targets, secrets, frozenset(only), started)
        plans, unusable = sized_plans(group, profile, secrets, started)
        results = _check(group, targets, secrets, plans, frozenset(only), unusable, started)
    if junit:
        from commonstack.checks.report import write_junit  # the pytest plugin's module: it imports pytest

        junit.parent.mkdir(parents=True, exist_ok=True)
        write_junit(results, junit, name=f"commonstack check {group_name}")
    if as_json:
        click.echo(json.dumps([asdict(r) for r in results], indent=2))
        ok = all(r.outcome != "failed" for r in results)
    else:
        ok = _print_checks(results)
    sys.exit(0 if ok else 1)


@main.command()
@click.argument("group_name", metavar="GROUP")
@click.option("--host", "--limit", "hosts", **HOST_OPTION)
@click.option("--only", **ONLY_OPTION)
@click.option("--to", "to", metavar="VERSION", help="Stop at this known release (one layer, with --only).")
@click.option("--list", "listing", is_flag=True, help="Show what each host runs and what the kit would install.")
@click.option("--dry-run", is_flag=True, help="Show the plan and every refusal; change nothing.")
@click.option("-y", "--yes", is_flag=True, help="Upgrade without asking.")
@click.option("--force", is_flag=True, help="Upgrade even though health checks fail now.")
@click.option("--reboot", is_flag=True, help="Reboot after Debian's updates when they need it (--only base).")
@click.pass_context
def upgrade(ctx, group_name, hosts, only, to, listing, dry_run, yes, force, reboot) -> None:
    """Upgrade a group's services, one at a time, with a backup, a health gate and
    an automatic rollback.

    For each layer of each host (Debian's own updates are the base layer's):
    a preflight that changes nothing (a lock; no unfinished upgrade; the checks
    green now, unless --force; room for the dump and the new code; Nextcloud one
    major at a time; the host's PHP, Python and PostgreSQL suit the target); the
    pre-upgrade backup (the backup layer's, when the host has it) and always a
    pg_dump of the service's database; the new code beside the old, switched
    over, migrated; the service's health checks, expecting the new release. If
    they fail, the old code, database and config come back and are checked
    again; if even that fails, nothing is deleted and the exact way back is
    printed. Every step is recorded on the host: an interrupted upgrade is
    resumed or rolled back by the next `upgrade` (or `deploy`).

    The release to reach is what the profile holds the service at
    (matrix.version, nextcloud.version) or else the kit's current one; --to stops
    at a known release before it. A deploy never changes a running service's
    release: it says an upgrade is pending. Exit status 1 if anything was refused,
    rolled back or failed; 2 for a request no host could do.

    \b
    Examples:
      commonstack upgrade tenants --list
      commonstack upgrade tenants --only synapse --dry-run
      commonstack upgrade tenants --only nextcloud --to 32.0.15
      commonstack upgrade tenants --only base --reboot
    """
    from commonstack.upgrades.preflight import listing as host_listing
    from commonstack.upgrades.upgrader import Upgrader

    upgrader = Upgrader(_group(ctx, group_name), hosts, frozenset(only), to, force, reboot, on_progress=click.echo)
    click.echo(f"Reading {len(upgrader.converger.targets)} host(s) of {group_name}...")
    unreachable = upgrader.survey()
    for name, why in unreachable.items():
        click.secho(f"{name}: {why}", fg="red")
    if listing:
        for name, survey in upgrader.surveys.items():
            plan = survey.plan
            click.secho(f"{name} [{plan.release.codename}, {plan.host.address}]", bold=True)
            for layer_name, text in host_listing(survey, group_name):
                colour = "red" if text.startswith(("UNFINISHED", "DOWN")) else "yellow" if "would install" in text else None
                click.secho(f"  {layer_name:10} {text}", fg=colour)
        sys.exit(1 if unreachable else 0)
    tasks = upgrader.tasks()
    upgrader.refuse_red_checks(tasks)
    _print_upgrade_plan(tasks, upgrader)
    ready = [t for t in tasks if t.ready]
    refused = [t for t in tasks if t.refusals]
    if not ready:
        click.secho("Nothing to upgrade." if not refused else "Nothing was changed.", fg="red" if refused else "green")
        sys.exit(1 if refused or unreachable else 0)
    if dry_run:
        click.echo("Nothing changed (--dry-run).")
        sys.exit(1 if refused or unreachable else 0)
    if not yes and not click.confirm(f"Go ahead with {len(ready)} upgrade(s), one at a time?"):
        click.echo("Nothing changed.")
        sys.exit(1)
    verdicts = []
    for task in ready:
        click.secho(f"{'Resuming' if task.resume else 'Upgrading'} {task.host}: {task.what}", bold=True)
        verdict = upgrader.run(task)
        verdicts.append(verdict)
        _print_verdict(verdict)
        if verdict.outcome == "rollback failed":
            click.secho("The other upgrades were not started.", fg="red")
            break
    failed = refused or unreachable or not all(v.ok for v in verdicts) or len(verdicts) < len(ready)
    sys.exit(1 if failed else 0)


def _print_upgrade_plan(tasks, upgrader) -> None:
    for task in tasks:
        if task.nothing:
            click.secho(f"{task.host}: {task.nothing}", fg="green")
            continue
        line = f"{task.host}: {'resume ' if task.resume else ''}{task.what}"
        if task.refusals:
            click.secho(f"{line}: refused", fg="red")
            for reason in task.refusals:
                click.secho(f"    - {reason}", fg="red")
            continue
        click.secho(line, fg="yellow")
        survey = upgrader.surveys[task.host]
        for note in _upgrade_steps(task, survey) + task.notes:
            click.echo(f"    {note}")


def _upgrade_steps(task, survey) -> list[str]:
    """What the volunteer is about to let happen, in their words."""
    from commonstack.stacks.layers import layer

    if task.resume:
        down = [survey.down[task.layer]] if task.layer in survey.down else []
        return down + [f"it stopped after '{task.resume.last_step}': continued, or rolled back if its health gate fails"]
    upgrade = layer(task.layer).upgrade
    steps = []
    if survey.has_backup:
        steps.append("a backup of the host first (restic, tagged pre-upgrade)")
    if task.debian:
        return steps + ["apt-get upgrade within the Debian release; needrestart restarts what runs old libraries"]
    dumps = ", ".join(f"{db} ({survey.database_mb.get(db, 0)} MB)" for db in upgrade.dumps)
    if dumps:
        steps.append(f"pg_dump of {dumps}, kept on the host for a rollback")
    steps.append("the new release beside the running one; then a short downtime to switch and migrate")
    steps.append("health checks of the new release; a failure rolls everything back")
    return steps


def _print_verdict(verdict) -> None:
    colour = {"upgraded": "green", "updated": "green", "rolled back": "yellow"}.get(verdict.outcome, "red")
    if not verdict.ok and verdict.outcome in ("upgraded", "updated"):
        colour = "red"
    downtime = f", down {verdict.downtime:.0f} s" if verdict.downtime is not None else ""
    task = verdict.task
    click.secho(f"{task.host}: {task.layer} {verdict.outcome.upper()} in {verdict.seconds:.0f} s{downtime}"
                + (f" — {verdict.detail}" if verdict.detail else ""), fg=colour, bold=True)  # fmt: skip
    if verdict.down:
        click.secho(f"  {verdict.down}", fg="red")
    for line in verdict.manual:
        click.secho(f"  {line}", fg="red")


@main.command()
@click.argument("group_name", metavar="GROUP")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), metavar="DIR",
              help="Folder to write into. Default: the group's own, inventories/GROUP/.")
@click.pass_context
def runbook(ctx, group_name, out) -> None:
    """Write the group's handover runbook: runbook.md and runbook.html.

    For the group and the next volunteer: each host with its address, size and
    services; each site and what it is for; how to log in as admin; where the
    secrets and the backups are (never their values); the exact commands to
    check, back up, restore and upgrade; the last saved health check; the
    pinned versions. Offline: nothing is contacted.

    \b
    Examples:
      commonstack runbook tenants                  # inventories/tenants/runbook.{md,html}
      commonstack runbook tenants --out /tmp/handover && xdg-open /tmp/handover/runbook.html
    """
    from commonstack.runbook.document import write_runbook

    group = _group(ctx, group_name)
    for path in write_runbook(group, group.load(), out or group.folder):
        click.echo(f"Wrote {path}")


@main.group()
def hosts() -> None:
    """Local Debian test hosts (systemd-nspawn) that behave like a VPS.

    They need root, systemd-container and debootstrap. Each gets its own private
    address (10.231.N.2), SSH as root with a generated key, and NAT to reach the
    package mirrors.

    \b
    Examples:
      commonstack hosts up demo --memory 2G
      commonstack hosts up pi --arch arm64      # a Raspberry Pi stand-in (emulated, slow)
      commonstack hosts list
      commonstack hosts down demo
    """
    import logging

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("  %(message)s"))
    log = logging.getLogger("commonstack.testhosts")
    log.addHandler(handler)
    log.setLevel(logging.INFO)


@hosts.command("up")
@click.argument("name")
@click.option("--suite", type=click.Choice(["bookworm", "trixie"]), default="bookworm", show_default=True,
              help="Debian 12 (bookworm) or 13 (trixie).")
@click.option("--arch", type=click.Choice(["amd64", "arm64"]), default="amd64", show_default=True)
@click.option("--memory", help="Memory limit, e.g. 1G or 512M (a small VPS or a Pi).")
@click.option("--trust-controller-ca", is_flag=True, help="Copy this machine's CA bundle in (TLS proxies).")
def hosts_up(name, suite, arch, memory, trust_controller_ca) -> None:
    """Create and boot test host NAME (nothing happens if it is running)."""
    from commonstack.testhosts import ssh_key_path, up

    host = up(name, suite=suite, arch=arch, memory=memory, trust_controller_ca=trust_controller_ca)
    click.echo(f"{host.name}: {host.address} ({host.suite}, {host.arch}"
               f"{f', {host.memory_mb} MB' if host.memory_mb else ''})")
    click.echo(f"  ssh -i {ssh_key_path()} root@{host.address}")


@hosts.command("down")
@click.argument("name")
def hosts_down(name) -> None:
    """Stop and remove test host NAME: processes, network, files."""
    from commonstack.testhosts import down

    click.echo(f"{name}: removed" if down(name) else f"{name}: no such test host")


@hosts.command("list")
def hosts_list() -> None:
    """List the test hosts and whether each is running."""
    from commonstack.testhosts import list_hosts

    found = list_hosts()
    for host in found:
        click.echo(f"{host.name:15} {host.status:8} {host.address:15} {host.suite} {host.arch}"
                   f"{f' {host.memory_mb} MB' if host.memory_mb else ''}")
    if not found:
        click.echo("no test hosts")


@main.command("try")
@click.argument("preset", default="small-group")
@click.option("--suite", type=click.Choice(["bookworm", "trixie"]), default="bookworm", show_default=True)
@click.option("--arch", type=click.Choice(["amd64", "arm64"]), default="amd64", show_default=True)
@click.option("--memory", type=int, help="RAM of each host in MB; default: the smallest the preset fits.")
@click.option("--online", is_flag=True,
              help="Let the test hosts fetch upstream releases (download.nextcloud.com, github.com). "
                   "Without it they reach only the package mirrors, and what needs more is left out.")
@click.option("--name", default="try", show_default=True,
              help="The group and its test host(s): NAME, or NAME-HOST for a preset of several hosts.")
@click.pass_context
def try_preset(ctx, preset, suite, arch, memory, online, name) -> None:
    """See a preset work on this machine before renting anything.

    Boots local Debian test hosts (systemd-nspawn; needs root), writes the group
    'try' for them (domain try.test, certificates from Caddy's own CA), deploys
    the preset, runs the health checks and tells you where everything is.

    A service whose source the test hosts cannot reach (offline, Nextcloud's and
    Discourse's downloads) is left out before anything is deployed, and written
    disabled in inventories/try/stack.yaml with the reason: the group describes
    what runs, so `commonstack plan try`, `deploy try` and `check try` work on it
    like on any group. Run it again to re-deploy; `commonstack hosts down try`
    removes the host.

    \b
    Examples:
      sudo commonstack try
      sudo commonstack try chat --suite trixie --name trychat
    """
    from commonstack.deploys.converge import GroupConverger
    from commonstack.errors import CommonstackError
    from commonstack.inventories.groups import group as named_group
    from commonstack.stacks.loader import load_preset
    from commonstack.testhosts import up
    from commonstack.trial import services_left_out, trial_hosts, write_try_group

    load_preset(preset)
    named_group(name, ctx.obj)  # a bad name: a clear error before any host is booted
    ctx.invoke(hosts)  # progress of the test hosts on stderr
    trial = trial_hosts(preset, memory, name)
    running = []
    for host in trial:
        click.echo(f"Starting test host {host.testhost} ({suite}, {arch}, {host.memory_mb} MB)...")
        running.append((host, up(host.testhost, suite=suite, arch=arch, memory=f"{host.memory_mb}M",
                                 trust_controller_ca=True)))
    overrides = {"offline": not online}
    group = write_try_group(ctx.obj, preset, running, name=name, overrides=overrides)
    # What the test hosts cannot get is found before any change (each layer's preflight), and the
    # group is written without it: then it describes exactly what this deploys.
    click.echo(f"Planning the {preset} preset...")
    planned = GroupConverger(group, on_progress=_progress, skip_unavailable=True).plan()
    if planned.failed:
        _print_results(planned, planned=True)
        sys.exit(1)
    left_out = services_left_out(planned.unavailable, group.load())
    if left_out:
        if set(left_out) == set(group.load().enabled_services()):
            why = "; ".join(f"{service}: {reason}" for service, reason in left_out.items())
            raise CommonstackError(
                f"nothing of the {preset} preset can be deployed on these test hosts ({why}); "
                f"`commonstack try {preset} --online` where they can reach it. "
                f"`commonstack hosts down {running[0][1].name}` removes the host."
            )
        group = write_try_group(ctx.obj, preset, running, name=name, overrides=overrides, left_out=left_out)
        for service, reason in left_out.items():
            click.secho(f"Left out {service}: {reason}", fg="yellow")
    converger = GroupConverger(group, on_progress=_progress, generate_secrets=True)
    click.echo(f"Deploying the {preset} preset (first run: a few minutes of package installs)...")
    applied = converger.apply()
    _print_results(applied, planned=False)
    if applied.failed:
        sys.exit(1)
    click.echo("Health checks:")
    healthy = _print_checks(_check(converger.group, converger.targets, converger.secrets, applied.plans))
    profile = converger.profile
    click.echo("")
    for trial_host, testhost in running:
        names = " ".join(n for s, n in profile.hostnames().items() if s in profile.services_on(
            next(h for h in profile.hosts if h.name == trial_host.name)))
        if names:
            click.echo(f"Sites on {testhost.address}: add `{testhost.address} {names}` to /etc/hosts to browse them")
    click.echo(f"Logins and passwords: {group.secrets_file} (mode 0600)")
    click.echo(f"Connect: ssh -i {running[0][1].key_path} root@{running[0][1].address}")
    click.echo(f"Next: commonstack plan {name} (nothing to change), commonstack check {name}, "
               f"commonstack runbook {name}")
    click.echo("Clean up: " + " && ".join(f"commonstack hosts down {t.name}" for _, t in running)
               + f" && rm -r {group.folder}")
    sys.exit(0 if healthy else 1)


# --- backups ---------------------------------------------------------------------------------


def _backup_hosts(ctx, group_name: str, hosts: tuple[str, ...]):
    """(group, profile, targets) of the hosts that run the backup layer (all, or `hosts`)."""
    from commonstack.errors import GroupError
    from commonstack.inventories.targets import host_targets
    from commonstack.stacks.layers import layers_on

    group = _group(ctx, group_name)
    profile = group.load()
    if not profile.backup.enabled:
        raise GroupError(
            f"{group.stack_file}: backup: not enabled; add `backup: {{enabled: true, repository: "
            "sftp:USER@HOST:/PATH}` (see the README's Backups) and deploy"
        )
    backed_up = [h.name for h in profile.hosts if "backup" in layers_on(profile, h)]
    return group, profile, [t for t in host_targets(group, profile, hosts) if t.name in backed_up]


def _keep_off_the_host(group, profile) -> None:
    click.secho(
        "Keep these OFF the host too, or no backup can ever be read: the password (restic_password in "
        f"{group.secrets_file}), the repository's address (backup.repository in {group.stack_file}: "
        f"{profile.backup.repository}) — a copy of {group.folder}/ in a password manager or on a USB stick will do.",
        fg="yellow",
    )


@main.command("backup")
@click.argument("group_name", metavar="GROUP")
@click.option("--host", "hosts", **HOST_OPTION)
@click.pass_context
def backup_now(ctx, group_name, hosts) -> None:
    """Back up the hosts of a group now, showing restic's progress.

    Each host dumps its databases (pg_dump), saves its layers' data with a
    manifest of every service's version as one restic snapshot in the
    repository of the profile (backup.repository), then applies the retention
    policy. The daily timer does the same on its own. Exit status 1 if a
    backup failed (nothing is counted as saved then).

    \b
    Examples:
      commonstack backup tenants
      commonstack backup coop --host home
    """
    from commonstack.backups.remote import HostCommandFailed, HostShell

    group, profile, targets = _backup_hosts(ctx, group_name, hosts)
    failed = []
    with HostShell(targets) as shell:
        for target in targets:
            click.secho(f"{target.name}: backing up to {profile.backup.repository}", bold=True)
            try:
                shell.script(target.name, "run", "--tag", "routine", "--progress", on_line=lambda line: click.echo(f"  {line}"))
            except HostCommandFailed as exc:
                click.secho(f"error: {exc}", fg="red", err=True)
                failed.append(target.name)
    _keep_off_the_host(group, profile)
    sys.exit(1 if failed else 0)


@main.command("backups")
@click.argument("group_name", metavar="GROUP")
@click.option("--host", "hosts", **HOST_OPTION)
@click.option("--keys", is_flag=True, help="Print each host's SSH key for an SFTP repository's authorized_keys.")
@click.pass_context
def backups_list(ctx, group_name, hosts, keys) -> None:
    """List the snapshots of each host: time, age, kind, size, layers, versions.

    Routine snapshots (daily, and `commonstack backup`) age out by the
    retention policy (backup.retention); pre-upgrade and pre-restore snapshots
    are kept apart from it.

    \b
    Examples:
      commonstack backups tenants
      commonstack backups tenants --keys    # the lines for the SFTP server's authorized_keys
    """
    from commonstack.backups.remote import HostShell
    from commonstack.backups.snapshots import host_snapshots
    from commonstack.inventories.backup_keys import SEED_SECRET, backup_key
    from commonstack.inventories.secrets import ensure_secrets

    group, profile, targets = _backup_hosts(ctx, group_name, hosts)
    if keys:
        seed = ensure_secrets(group.secrets_file, profile)[SEED_SECRET]
        for target in targets:
            click.echo(backup_key(seed, profile.group, target.name).public)
        return
    with HostShell(targets) as shell:
        for target in targets:
            snapshots = host_snapshots(shell, target.name)
            click.secho(f"{target.name}: {len(snapshots)} snapshot(s) in {profile.backup.repository}", bold=True)
            for s in reversed(snapshots):
                click.echo(f"  {s.short_id}  {s.time:%Y-%m-%d %H:%M} UTC  {s.age():>7} old  {s.kind:<11} "
                           f"{s.size / 1e6:8.1f} MB  {', '.join(s.layers)}")
                click.secho(f"            {s.versions_line()}", dim=True)
    _keep_off_the_host(group, profile)


@main.command()
@click.argument("group_name", metavar="GROUP")
@click.option("--snapshot", metavar="ID", help="The snapshot (an ID from `commonstack backups`); default: the latest.")
@click.option("--host", "hosts", **HOST_OPTION)
@click.option("--only", **ONLY_OPTION)
@click.option("-y", "--yes", is_flag=True, help="Restore without asking.")
@click.pass_context
def restore(ctx, group_name, snapshot, hosts, only, yes) -> None:
    """Put a snapshot's data back onto its host, keeping the current data until
    the restored layers pass their health checks.

    Refuses, before any change, a snapshot of newer service versions than this
    kit installs. Deploys the layers first (after a disaster: a new host in the
    profile, `commonstack pin-keys`, `commonstack deploy`, then this), saves
    the current data as a pre-restore snapshot, fetches the snapshot, restores
    each database into a NEW database and swaps it in, moves the folders in,
    then runs the checks and counts users, rooms, messages and files against
    the snapshot's. Only when they pass is the data from before deleted; if
    anything fails it is put back. Exit status 1 if the restore failed.

    \b
    Examples:
      commonstack restore tenants                        # the latest snapshot
      commonstack restore tenants --snapshot 1a2b3c4d --only synapse
      commonstack restore coop --host home
    """
    from commonstack.backups.restore import restore_host
    from commonstack.errors import GroupError

    group, profile, targets = _backup_hosts(ctx, group_name, hosts)
    if snapshot and len(targets) > 1:
        raise GroupError("--snapshot names one host's snapshot: add --host HOST")
    if not yes and not click.confirm(
        f"Replace the data of {', '.join(t.name for t in targets)} with "
        f"{'snapshot ' + snapshot if snapshot else 'the latest snapshot'}? (the current data is saved first)"
    ):
        click.echo("Nothing changed.")
        sys.exit(1)
    for target in targets:
        report = restore_host(group, target.name, snapshot, tuple(only), say=click.echo, progress=_progress)
        click.secho(f"{target.name}: restored snapshot {report.snapshot.short_id} ({report.snapshot.age()} old): "
                    f"{', '.join(report.layers)}; {len(report.passed_checks)} checks passed", fg="green")  # fmt: skip
        for line in report.counts:
            click.echo(f"  {line}")


@main.command()
@click.argument("group_name", metavar="GROUP")
@click.option("--host", "host_names", **HOST_OPTION)
@click.option("--snapshot", metavar="ID", help="The snapshot to drill; default: the latest.")
@click.option("--suite", type=click.Choice(["bookworm", "trixie"]), default="bookworm", show_default=True,
              help="The Debian release of the throwaway host (that of the snapshot, or newer).")
@click.option("--keep", is_flag=True, help="Leave the throwaway host running afterwards, to look around.")
@click.pass_context
def drill(ctx, group_name, host_names, snapshot, suite, keep) -> None:
    """Prove that the backups restore: on a throwaway local test host.

    Boots a local Debian test host (systemd-nspawn; needs root), fetches the
    latest snapshot from the group's real repository (the throwaway host never
    writes to it), deploys what the snapshot holds and restores it like
    `commonstack restore`, runs the health checks and compares the restored
    counts (users, rooms, messages, files) with the snapshot's, then prints a
    one-line verdict and removes the host. A local-path repository (a USB disk
    on the host) cannot be drilled from here.
    Nothing of the group's real hosts is touched. Exit status 1 if the drill
    failed.

    \b
    Examples:
      sudo commonstack drill tenants
      sudo commonstack drill coop --host home --suite trixie
    """
    from commonstack.backups.drill import run_drill

    ctx.invoke(hosts)  # progress of the test host on stderr
    group, _, targets = _backup_hosts(ctx, group_name, host_names)
    verdicts = [run_drill(group, t.name, snapshot, suite, keep, say=click.echo, progress=_progress) for t in targets]
    for verdict in verdicts:
        click.secho(verdict.line, fg="green" if verdict.passed else "red", bold=True)
    sys.exit(0 if all(v.passed for v in verdicts) else 1)
