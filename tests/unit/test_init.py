"""`commonstack init` for every preset, as a volunteer meets it: with options (scripts) and with
prompts on a real pseudo-terminal; email for the presets that need it; the SMTP password only
ever in secrets.yaml; and a failed init leaving nothing behind."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from commonstack.cli import main
from commonstack.stacks.loader import load_profile, preset_names
from tests.unit.terminal import Terminal

PASSWORD = "relay-pw-Zq81xK"  # what the SMTP password looks like in the tests: found nowhere else
HOSTS = {
    "small-group": ["root@203.0.113.7"],
    "chat": ["root@203.0.113.7"],
    "forum": ["root@203.0.113.7"],
    "full": ["root@203.0.113.7"],
    "split": ["home=pi@192.168.1.20", "vps=root@203.0.113.7"],
}
NEED_EMAIL = {"forum", "full", "split"}  # Discourse is part of them


def test_every_preset_is_covered():
    assert set(HOSTS) == set(preset_names())


@pytest.fixture
def inventories(tmp_path) -> Path:
    return tmp_path / "inv"


@pytest.fixture
def run(inventories):
    def invoke(*args: str, stdin: str | None = None):
        return CliRunner().invoke(main, ["--inventories", str(inventories), *args], input=stdin)

    return invoke


@pytest.fixture
def password_file(tmp_path) -> Path:
    path = tmp_path / "relay-password"
    path.write_text(PASSWORD + "\n")
    path.chmod(0o600)
    return path


def base_options(preset: str) -> list[str]:
    options = ["--preset", preset, "--domain", "coop.example.org"]
    for host in HOSTS[preset]:
        options += ["--host", host]
    return options


def smtp_options(password_file: Path) -> list[str]:
    return ["--smtp-host", "smtp.example.net", "--smtp-port", "465", "--smtp-user", "forum@coop.example.org",
            "--smtp-from", "hello@coop.example.org", "--smtp-password-file", str(password_file)]


def assert_password_only_in_secrets(folder: Path, *outputs: str) -> None:
    secrets = folder / "secrets.yaml"
    assert stat.S_IMODE(secrets.stat().st_mode) == 0o600
    assert yaml.safe_load(secrets.read_text())["smtp_password"] == PASSWORD
    assert PASSWORD not in (folder / "stack.yaml").read_text()
    for output in outputs:
        assert PASSWORD not in output


def assert_nothing_left(inventories: Path) -> None:
    assert not inventories.exists() or not any(inventories.rglob("*")), sorted(inventories.rglob("*"))


# --- with options ---------------------------------------------------------------------------------


@pytest.mark.parametrize("preset", sorted(HOSTS))
def test_init_with_smtp_options(run, inventories, password_file, preset):
    result = run("init", "coop", *base_options(preset), *smtp_options(password_file))
    assert result.exit_code == 0, result.output
    folder = inventories / "coop"
    profile = load_profile(folder / "stack.yaml")
    assert (profile.smtp.host, profile.smtp.port, profile.smtp.username, profile.smtp.from_address) == (
        "smtp.example.net", 465, "forum@coop.example.org", "hello@coop.example.org")
    assert profile.discourse.enabled == (preset in NEED_EMAIL)
    assert_password_only_in_secrets(folder, result.output)
    assert run("validate", "coop").exit_code == 0


@pytest.mark.parametrize("preset", sorted(HOSTS))
def test_init_without_email(run, inventories, preset):
    result = run("init", "coop", *base_options(preset), "--no-email")
    if preset == "forum":  # Discourse is all of it: nothing to deploy without email
        assert result.exit_code == 2
        assert "--no-email: the forum preset cannot run without email" in result.output
        assert "--smtp-host" in result.output
        assert_nothing_left(inventories)
        return
    assert result.exit_code == 0, result.output
    stack = (inventories / "coop" / "stack.yaml").read_text()
    profile = load_profile(inventories / "coop" / "stack.yaml")
    assert profile.smtp is None and not profile.discourse.enabled
    if preset in NEED_EMAIL:  # the forum is left out, and stack.yaml says why and how to add it
        assert "Left out discourse" in result.output
        assert "# discourse is left out: Discourse signs people up" in stack
        assert "set enabled: true" in stack.replace("\n# ", " ")
    assert run("validate", "coop").exit_code == 0


@pytest.mark.parametrize("preset", sorted(NEED_EMAIL))
def test_init_names_the_missing_smtp_option(run, inventories, preset):
    result = run("init", "coop", *base_options(preset))
    assert result.exit_code == 2
    assert result.output.startswith("error: --smtp-host is required: Discourse signs people up")
    assert ("--no-email" in result.output) == (preset != "forum")
    assert_nothing_left(inventories)


def test_init_without_email_options_needs_none_for_chat(run, inventories):
    result = run("init", "coop", *base_options("chat"))
    assert result.exit_code == 0, result.output
    assert load_profile(inventories / "coop" / "stack.yaml").smtp is None


@pytest.mark.parametrize(
    ("option", "value", "named"),
    [
        ("--domain", "not a domain", "--domain: expected a DNS name"),
        ("--admin-email", "nobody", "--admin-email: expected an email address"),
        ("--host", "root@bad_host!", "--host 'root@bad_host!': the host's address: expected an IP address or a DNS name"),
        ("--smtp-host", "bad host", "--smtp-host: expected an IP address or a DNS name"),
        ("--smtp-from", "nobody", "--smtp-from: expected an email address"),
    ],
)
def test_a_failed_init_names_the_option_and_leaves_nothing(run, inventories, password_file, option, value, named):
    options = {"--preset": "forum", "--domain": "coop.example.org", "--host": "root@203.0.113.7",
               "--smtp-host": "smtp.example.net", "--smtp-user": "u", "--smtp-password-file": str(password_file)}
    options[option] = value
    result = run("init", "coop", *(item for pair in options.items() for item in pair))
    assert result.exit_code == 2, result.output
    assert result.output.startswith(f"error: {named}"), result.output
    assert "stack.yaml" not in result.output and ".new" not in result.output
    assert_nothing_left(inventories)


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--smtp-host", "smtp.example.net", "--smtp-user", "u"], "--smtp-password-file is required with --smtp-user"),
        (["--smtp-user", "u"], "--smtp-user needs --smtp-host"),
        (["--smtp-host", "smtp.example.net", "--no-email"], "--no-email and --smtp-host exclude each other"),
    ],
)
def test_smtp_options_that_do_not_fit_together(run, inventories, args, said):
    result = run("init", "coop", *base_options("forum"), *args)
    assert result.exit_code == 2 and said in result.output, result.output
    assert_nothing_left(inventories)


def test_an_empty_password_file_is_refused(run, inventories, tmp_path):
    empty = tmp_path / "empty"
    empty.write_text("\n")
    result = run("init", "coop", *base_options("forum"), "--smtp-host", "smtp.example.net", "--smtp-user", "u",
                 "--smtp-password-file", str(empty))
    assert result.exit_code == 2 and f"--smtp-password-file {empty}: the file is empty" in result.output
    assert_nothing_left(inventories)


def test_the_password_can_come_on_standard_input(run, inventories):
    result = run("init", "coop", *base_options("forum"), "--smtp-host", "smtp.example.net", "--smtp-user", "u",
                 "--smtp-password-file", "-", stdin=PASSWORD + "\n")
    assert result.exit_code == 0, result.output
    assert_password_only_in_secrets(inventories / "coop", result.output)


def test_there_is_no_option_to_put_the_password_on_a_command_line(run):
    result = run("init", "coop", *base_options("forum"), "--smtp-host", "x.org", "--smtp-password", PASSWORD)
    assert result.exit_code == 2 and "No such option" in result.output


def test_force_keeps_the_password_already_stored(run, inventories, password_file):
    assert run("init", "coop", *base_options("forum"), *smtp_options(password_file)).exit_code == 0
    password_file.unlink()
    again = run("init", "coop", *base_options("forum"), "--smtp-host", "smtp2.example.net",
                "--smtp-user", "forum@coop.example.org", "--force")
    assert again.exit_code == 0, again.output
    assert_password_only_in_secrets(inventories / "coop", again.output)
    assert load_profile(inventories / "coop" / "stack.yaml").smtp.host == "smtp2.example.net"


def test_a_failed_force_leaves_the_group_as_it_was(run, inventories, password_file):
    assert run("init", "coop", *base_options("forum"), *smtp_options(password_file)).exit_code == 0
    folder = inventories / "coop"
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    result = run("init", "coop", *base_options("forum"), "--no-email", "--force")
    assert result.exit_code == 2
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


# --- with prompts, on a real pseudo-terminal -------------------------------------------------------


SMTP_ANSWERS = [
    ("SMTP relay", "smtp.example.net"),
    ("SMTP port", "465"),
    ("SMTP login", "forum@coop.example.org"),
    ("Sender address", ""),  # the default: noreply@DOMAIN
    ("(hidden)", PASSWORD),
    ("Repeat for confirmation", PASSWORD),
]


@pytest.mark.parametrize("preset", sorted(HOSTS))
def test_init_asks_for_everything_the_preset_needs(inventories, preset):
    terminal = Terminal(inventories, "init", "coop")
    terminal.answer("Preset", preset)
    terminal.answer("domain", "coop.example.org")
    for spec in HOSTS[preset]:
        terminal.answer("SSH address of host", spec.split("=")[-1])
    if preset in ("full", "split"):
        terminal.answer("Set up an SMTP relay now", "y")
    elif preset != "forum":
        terminal.answer("Send email (notifications, password resets) through an SMTP relay?", "y")
    for prompt, reply in SMTP_ANSWERS:
        terminal.answer(prompt, reply)
    status, shown = terminal.finish()
    assert status == 0, shown
    folder = inventories / "coop"
    profile = load_profile(folder / "stack.yaml")
    assert profile.preset == preset and [h.address for h in profile.hosts] == [
        s.split("=")[-1].split("@")[-1] for s in HOSTS[preset]]
    assert (profile.smtp.host, profile.smtp.port, profile.smtp.username, profile.smtp.from_address) == (
        "smtp.example.net", 465, "forum@coop.example.org", "noreply@coop.example.org")
    assert_password_only_in_secrets(folder, shown)  # typed hidden: the terminal never showed it


@pytest.mark.parametrize("preset", ["small-group", "split"])
def test_init_on_a_terminal_without_email(inventories, preset):
    terminal = Terminal(inventories, "init", "coop", "--preset", preset, "--domain", "coop.example.org")
    for spec in HOSTS[preset]:
        terminal.answer("SSH address of host", spec.split("=")[-1])
    terminal.answer("SMTP relay now" if preset == "split" else "through an SMTP relay?", "n")
    status, shown = terminal.finish()
    assert status == 0, shown
    profile = load_profile(inventories / "coop" / "stack.yaml")
    assert profile.smtp is None and not profile.discourse.enabled
    assert ("Left out discourse" in shown) == (preset == "split")


def test_init_on_a_terminal_never_asks_for_email_after_no_email(inventories):
    terminal = Terminal(inventories, "init", "coop", "--preset", "chat", "--domain", "coop.example.org",
                        "--host", "root@203.0.113.7", "--no-email")
    status, shown = terminal.finish()
    assert status == 0, shown
    assert "SMTP" not in shown
