"""The kind table: each TEE kind described once, and every reader agrees with it."""

from __future__ import annotations

import argparse
import importlib
import typing
from dataclasses import fields
from pathlib import Path

import pytest

from blindai.attestation import EvidenceKind, Policy, VerifiedClaims, verifier_for
from blindai.attestation.kinds import (
    DEVICES,
    KINDS,
    SECTIONS,
    TEE_CHOICES,
    spec_for,
    spec_for_section,
    spec_for_tee,
)
from blindai.attestation.policy import UNPINNED
from blindai.errors import ConfigurationError

REAL_KINDS = [kind for kind in EvidenceKind if kind is not EvidenceKind.SIMULATION]


def test_every_real_kind_has_exactly_one_entry() -> None:
    assert sorted(spec.kind.value for spec in KINDS) == sorted(k.value for k in REAL_KINDS)
    assert len(set(SECTIONS)) == len(KINDS)
    tees = [spec.tee for spec in KINDS if spec.tee]
    assert len(set(tees)) == len(tees)


@pytest.mark.parametrize("spec", KINDS, ids=lambda s: s.kind.value)
def test_each_package_exports_its_verifier_policy_and_claims(spec) -> None:
    package = importlib.import_module(spec.module)
    names = {f"{spec.prefix}{suffix}" for suffix in ("Verifier", "Policy", "Claims")}
    assert names <= set(package.__all__)
    assert issubclass(spec.claims_class(), VerifiedClaims)
    assert spec.verifier_class().kind is spec.kind
    assert isinstance(spec.verifier(), spec.verifier_class())
    assert type(verifier_for(spec.kind)) is spec.verifier_class()


@pytest.mark.parametrize("spec", KINDS, ids=lambda s: s.kind.value)
def test_each_policy_builds_unpinned_from_the_shared_mapping(spec) -> None:
    sub = spec.policy_class().from_mapping(UNPINNED)
    assert Policy.defaults_only(spec.kind).for_kind(spec.kind) == sub
    assert spec_for_section(spec.section) is spec


def test_lookups() -> None:
    assert spec_for_tee("gramine-sgx").kind is EvidenceKind.SGX
    assert spec_for(EvidenceKind.SEV_SNP).section == "sev_snp"
    assert spec_for_section("mystery") is None
    with pytest.raises(ConfigurationError, match="UnsafeSimulationVerifier"):
        spec_for(EvidenceKind.SIMULATION)
    with pytest.raises(ConfigurationError, match="UnsafeSimulationVerifier"):
        verifier_for(EvidenceKind.SIMULATION)
    with pytest.raises(ConfigurationError, match=r"unknown TEE 'sgx'.*gramine-sgx"):
        spec_for_tee("sgx")


def test_tee_choices_and_devices_come_from_the_table() -> None:
    assert TEE_CHOICES == ("auto", "simulation", "gramine-sgx", "tdx", "sev-snp", "nitro")
    assert [d.setting for d in DEVICES] == ["attestation_dir", "tsm_report_dir", "nsm_device"]
    assert spec_for(EvidenceKind.TDX).device is spec_for(EvidenceKind.SEV_SNP).device


def test_the_server_reads_the_table() -> None:
    from blindai.server.attesters.select import _PROVIDERS, AttesterPaths
    from blindai.server.settings import ServerSettings, TeeName

    assert typing.get_args(TeeName) == TEE_CHOICES
    assert {f.name for f in fields(AttesterPaths)} == {d.setting for d in DEVICES}
    assert set(_PROVIDERS) == {d.provider for d in DEVICES}
    settings = ServerSettings()
    for device in DEVICES:
        assert getattr(settings, device.setting) == device.default
        assert AttesterPaths().path(device) == device.default
    custom = ServerSettings(**{d.setting: Path("/x") / d.setting for d in DEVICES})
    paths = AttesterPaths.from_settings(custom)
    assert [paths.path(d) for d in DEVICES] == [Path("/x") / d.setting for d in DEVICES]


def test_the_cli_reads_the_table() -> None:
    from blindai.cli import _parser

    parser = _parser()
    attest = parser._subparsers._group_actions[0].choices["attest"]  # type: ignore[union-attr]
    kind = next(a for a in attest._actions if a.dest == "kind")
    assert list(kind.choices) == [spec.kind.value for spec in KINDS]


def test_the_serve_flags_read_the_table() -> None:
    """``blindai serve``'s flags are generated from ServerSettings: --tee's choices and each
    device flag's default come from the table through it."""
    from blindai.server.settings import ServerSettings

    parser = argparse.ArgumentParser(prog="blindai serve")
    ServerSettings.from_command_line([], parser=parser)
    tee = next(a for a in parser._actions if a.dest == "tee")
    assert tee.metavar == "{" + ",".join(TEE_CHOICES) + "}"
    with pytest.raises(ConfigurationError, match=r"--tee: .*'gramine-sgx'"):
        ServerSettings.from_command_line(["--tee", "sgx"], parser=argparse.ArgumentParser())
    for device in DEVICES:
        flag = next(a for a in parser._actions if a.dest == device.setting)
        assert flag.help is not None
        assert f"(default: {device.default})" in " ".join(flag.help.split())
