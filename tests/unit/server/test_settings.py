"""ServerSettings: the one statement of every serve option (flag, variable, default, help)."""

from __future__ import annotations

import argparse
import re

import pytest

from blindai.errors import ConfigurationError
from blindai.server.settings import ServerSettings


def parse(*argv: str) -> tuple[ServerSettings, argparse.ArgumentParser]:
    parser = argparse.ArgumentParser(prog="blindai serve")
    return ServerSettings.from_command_line(argv, parser=parser), parser


def test_every_field_is_a_flag_whose_help_is_its_docstring() -> None:
    _, parser = parse()
    text = " ".join(parser.format_help().split())
    for name, field in ServerSettings.model_fields.items():
        assert f"--{name.replace('_', '-')}" in text, name
        assert field.description, f"{name} has no docstring"
        first_words = " ".join(field.description.split()[:6])
        assert first_words in text, name


def test_a_flag_wins_over_the_variable_which_wins_over_the_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert parse()[0].max_models == ServerSettings.model_fields["max_models"].default
    monkeypatch.setenv("BLINDAI_MAX_MODELS", "7")
    assert parse()[0].max_models == 7
    assert parse("--max-models", "9")[0].max_models == 9


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--unattested-port", "70000"], "--unattested-port: Input should be less than"),
        (["--max-models", "0"], "--max-models: Input should be greater than 0"),
        (["--tee", "sgx"], "--tee: Input should be"),
        (["--simulation", "--tee", "tdx"], "--simulation contradicts --tee tdx"),
        (
            ["--unattested-port", "9000", "--management-port", "9000"],
            "port 9000 is given for two roles: --unattested-port and --management-port",
        ),
        (["--admin-key-sha256", "abc"], "--admin-key-sha256 takes the SHA-256 of the admin key"),
        (["--store-key-file", "/k"], "--store-key-file is given without --store"),
        # urllib's default opener would have read a local file and served it as collateral
        (["--pccs-url", "file:///etc/passwd"], "--pccs-url 'file:///etc/passwd' is not an https"),
        (["--pccs-url", "pccs.example:8081"], "--pccs-url 'pccs.example:8081' is not an https"),
        (
            ["--run-isolation", "process", "--device", "cuda"],
            "--run-isolation process runs models on the CPU only",
        ),
        (["--run-isolation", "thread"], "--run-isolation: Input should be 'none' or 'process'"),
    ],
)
def test_unusable_values_are_one_configuration_error(argv: list[str], message: str) -> None:
    with pytest.raises(ConfigurationError) as refused:
        parse(*argv)
    assert str(refused.value).startswith(message)
    assert "\n" not in str(refused.value)


def test_port_zero_may_repeat() -> None:
    """0 asks the system for a free port, a different one each time."""
    settings = parse("--unattested-port", "0", "--attested-port", "0")[0]
    assert settings.unattested_port == settings.attested_port == 0


@pytest.mark.parametrize(
    ("argv", "host"),
    [
        ([], "0.0.0.0"),
        (["--simulation"], "127.0.0.1"),
        (["--tee", "simulation"], "127.0.0.1"),
        (["--simulation", "--host", "0.0.0.0"], "0.0.0.0"),
        (["--host", "10.0.0.1"], "10.0.0.1"),
    ],
)
def test_a_simulation_listens_on_loopback_unless_told(argv: list[str], host: str) -> None:
    assert parse(*argv)[0].listen_host == host


def test_a_usage_error_exits_through_the_parser(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        parse("--no-such-flag")
    assert exited.value.code == 2
    assert re.search(r"blindai serve: error: unrecognized arguments", capsys.readouterr().err)


def test_access_control_is_on_with_the_admin_hash_from_a_flag_or_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    digest = "ab" * 32
    assert parse()[0].admin_digest is None
    assert parse("--admin-key-sha256", digest.upper())[0].admin_digest == bytes.fromhex(digest)
    monkeypatch.setenv("BLINDAI_ADMIN_KEY_SHA256", digest)
    assert parse()[0].admin_digest == bytes.fromhex(digest)


def test_variables_that_set_nothing_are_named() -> None:
    from blindai.server.settings import unknown_variables

    environ = {
        "BLINDAI_MAX_MODELS": "3",
        "blindai_pccs_url": "https://pccs",  # read case-insensitively: a setting
        "BLINDAI_API_KEY": "k",  # the client commands'
        "BLINDAI_REQUIRE_COMPAT": "1",  # the test suite's
        "BLINDAI_MAX_MODEL": "3",
        "BLINDAI_\x1b[2J": "x",
        "PATH": "/bin",
    }
    warnings = unknown_variables(environ)
    assert len(warnings) == 2
    assert warnings[0].startswith(
        "environment variable BLINDAI_\\x1b[2J is no setting of blindai serve"
    )
    assert warnings[1] == (
        "environment variable BLINDAI_MAX_MODEL is no setting of blindai serve "
        "(did you mean BLINDAI_MAX_MODELS?)"
    )
