"""The [nvidia_gpu] policy section: loading (unknown keys, contradictions) and each check."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timezone
from typing import Any

import pytest

import blindai.attestation.nvidia_gpu as nvidia_gpu
from blindai.attestation import EvidenceKind, Policy
from blindai.attestation.claims import VerifiedClaims
from blindai.attestation.nvidia_gpu import NvidiaGpuClaims, NvidiaGpuPolicy
from blindai.errors import ConfigurationError

M2 = "ab" * 48


def claims(**kw: Any) -> NvidiaGpuClaims:
    base: dict[str, Any] = dict(
        kind=EvidenceKind.NVIDIA_GPU, measurement=bytes(48), report_data=bytes(32), debug=False,
        verified_at=datetime(2025, 1, 1, tzinfo=timezone.utc),
        measurements={1: bytes(48), 2: bytes.fromhex(M2)}, driver_version="550.90.07",
        vbios_version="96.00.9f.00.01", nonce=bytes(32), responder_nonce=bytes(32), fwid=None,
        nvdec0_status=None, measurement_count={}, opaque={}, model="GH100", device_id="1",
        chain=(), certificate=b"",
    )  # fmt: skip
    base.update(kw)
    return NvidiaGpuClaims(**base)


def load(toml: str) -> NvidiaGpuPolicy:
    sub = Policy.from_toml("[nvidia_gpu]\n" + toml).for_kind(EvidenceKind.NVIDIA_GPU)
    assert isinstance(sub, NvidiaGpuPolicy)
    return sub


@pytest.mark.parametrize(
    ("toml", "match"),
    [
        ("", "measurements or rim"),
        ("bogus = 1\nallow_any_measurement = true", "unknown key"),
        (f'allow_any_measurement = true\nmeasurements = {{ 2 = "{M2}" }}', "contradict"),
        ('allow_any_measurement = "yes"', "true or false"),
        ('measurements = { x = "00" }', "not a number"),
        ('measurements = { 0 = "00" }', "1..254"),
        ('measurements = { 255 = "00" }', "1..254"),
        ('measurements = { 1 = "zz" }', "not valid hex"),
        ('measurements = { 1 = "" }', "give hex values"),
        ("measurements = { 1 = [] }", "give hex values"),
        ("measurements = { 1 = 5 }", "hex string"),
        ('measurements = "00"', "table"),
        ("allow_any_measurement = true\nmin_driver_version = 550", "must be a string"),
        ('allow_any_measurement = true\nmin_driver_version = "5x0"', "dotted"),
        ('allow_any_measurement = true\nmin_vbios_version = "96.zz"', "dotted"),
        ('allow_any_measurement = true\nmin_driver_version = "-1.2"', "dotted"),
        ("allow_any_measurement = true\nmodels = []", "not be empty"),
        ('allow_any_measurement = true\nmodels = "GH100"', "list of strings"),
        ("rim = [1]", "path or a list"),
    ],
)
def test_bad_sections(toml: str, match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        load(toml)


def test_section_must_be_a_table() -> None:
    with pytest.raises(ConfigurationError, match="table"):
        Policy.from_toml("nvidia_gpu = 1\n")


def test_measurements_by_index_with_alternatives() -> None:
    policy = load(f'measurements = {{ 2 = "{M2}", 12 = ["00", "11"] }}')
    assert dict(policy.measurements) == {2: (bytes.fromhex(M2),), 12: (b"\0", b"\x11")}
    (violation,) = policy.check(claims())
    assert (violation.field, violation.actual) == ("measurements.12", "absent")
    assert policy.check(claims(measurements={2: bytes.fromhex(M2), 12: b"\x11"})) == []


@pytest.mark.parametrize(
    ("minimum", "actual", "ok"),
    [
        ("550.90.07", "550.90.07", True),
        ("550.90", "550.90.07", True),
        ("550.90.8", "550.90.07", False),
        ("535", "550.54.15", True),
        ("560", "550.90.07", False),
        ("550", "garbage", False),
    ],
)
def test_min_driver_version(minimum: str, actual: str, ok: bool) -> None:
    policy = load(f'allow_any_measurement = true\nmin_driver_version = "{minimum}"')
    violations = policy.check(claims(driver_version=actual))
    assert (violations == []) is ok
    if not ok:
        assert violations[0].field == "driver_version" and violations[0].actual == actual


@pytest.mark.parametrize(
    ("minimum", "ok"), [("96.00.9f.00.01", True), ("96.00.9F", True), ("96.00.a0", False)]
)
def test_min_vbios_version_is_hex(minimum: str, ok: bool) -> None:
    policy = load(f'allow_any_measurement = true\nmin_vbios_version = "{minimum}"')
    assert (policy.check(claims()) == []) is ok


def test_models() -> None:
    policy = load('allow_any_measurement = true\nmodels = ["GH100", "GB100"]')
    assert policy.check(claims()) == []
    (violation,) = policy.check(claims(model=None))
    assert (violation.field, violation.expected, violation.actual) == (
        "model",
        "GB100 or GH100",
        "None",
    )


def test_other_kinds_claims_are_a_violation() -> None:
    other = VerifiedClaims(
        kind=EvidenceKind.SEV_SNP, measurement=b"", report_data=b"", debug=False,
        verified_at=datetime(2025, 1, 1, tzinfo=timezone.utc),
    )  # fmt: skip
    (violation,) = load("allow_any_measurement = true").check(other)
    assert violation.field == "kind"


def test_policy_is_immutable() -> None:
    policy = load(f'measurements = {{ 2 = "{M2}" }}')
    with pytest.raises(TypeError):
        policy.measurements[3] = (b"",)  # type: ignore[index]
    assert replace(policy, models=frozenset({"GH100"})).models == {"GH100"}


def test_a_gpu_only_policy_is_not_empty() -> None:
    policy = Policy.from_toml("[nvidia_gpu]\nallow_any_measurement = true\n")
    assert policy.nvidia_gpu is not None and policy.sgx is None


def test_exported_names() -> None:
    assert sorted(nvidia_gpu.__all__) == ["NvidiaGpuClaims", "NvidiaGpuPolicy", "NvidiaGpuVerifier"]
    public = {name for name in vars(nvidia_gpu) if not name.startswith("_")}
    assert public - set(nvidia_gpu.__all__) <= {"annotations", "policy", "verifier"}
    for name in nvidia_gpu.__all__:
        assert getattr(nvidia_gpu, name).__doc__
