"""NitroPolicy: loading the [nitro] section, and checking claims (every violation at once)."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

import blindai.attestation.nitro as nitro
from blindai.attestation import EvidenceKind, Policy, VerifiedClaims, verifier_for
from blindai.attestation.nitro import NitroClaims, NitroPolicy, NitroVerifier
from blindai.errors import ConfigurationError, Violation

NOW = datetime(2024, 1, 10, 13, 0, 30, tzinfo=timezone.utc)
IMAGE = bytes(range(48))
PCR8 = bytes(range(100, 148))


def _claims(**changes: Any) -> NitroClaims:
    pcrs = {i: bytes(48) for i in range(16)}
    pcrs[0], pcrs[8] = IMAGE, PCR8
    claims = NitroClaims(
        kind=EvidenceKind.NITRO,
        measurement=IMAGE,
        report_data=b"",
        debug=False,
        verified_at=NOW,
        pcrs=pcrs,
        module_id="i-0123456789abcdef0-enc0123456789abcdef",
        timestamp=NOW - timedelta(seconds=30),
        digest="SHA384",
        public_key=None,
        user_data=None,
        nonce=None,
        certificate=b"\x30",
    )
    return replace(claims, **changes)


def _debug_claims() -> NitroClaims:
    pcrs = {i: bytes(48) for i in range(16)}
    return _claims(pcrs=pcrs, measurement=bytes(48), debug=True)


# -- loading --------------------------------------------------------------------------------


def test_from_mapping_full() -> None:
    policy = NitroPolicy.from_mapping(
        {
            "pcr0": IMAGE.hex(),
            "pcr8": PCR8.hex().upper(),
            "max_age_seconds": 120,
            "max_clock_skew_seconds": 5.5,
            "module_id_prefix": "i-0123456789abcdef0-",
            "allow_debug": False,
        }
    )
    assert dict(policy.pcrs) == {0: IMAGE, 8: PCR8}
    assert policy.max_age_seconds == 120
    assert policy.max_clock_skew_seconds == 5.5
    assert policy.module_id_prefix == "i-0123456789abcdef0-"
    assert policy.allow_debug is False
    assert policy.allow_any_measurement is False
    assert policy.check(_claims()) == []


def test_defaults() -> None:
    policy = NitroPolicy.from_mapping({"pcr0": IMAGE.hex()})
    assert policy.max_age_seconds == 600
    assert policy.max_clock_skew_seconds == 60
    assert policy.allow_debug is False
    assert policy.module_id_prefix is None


def test_from_policy_file_section() -> None:
    policy = Policy.from_toml(f'[nitro]\npcr0 = "{IMAGE.hex()}"\nallow_debug = true\n')
    sub = policy.for_kind(EvidenceKind.NITRO)
    assert isinstance(sub, NitroPolicy)
    assert sub.allow_debug is True


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({}, "pcr0"),
        ({"allow_debug": True}, "pcr0"),
        ({"pcr1": IMAGE.hex()}, "pcr0"),
        ({"allow_any_measurement": False}, "pcr0"),
        ({"pcr0": IMAGE.hex(), "allow_any_measurement": True}, "contradict"),
        ({"pcr0": "00" * 48}, "debug"),
        ({"pcr0": IMAGE.hex(), "mr_enclave": "00"}, "unknown key"),
        ({"pcr0": IMAGE.hex(), "pcr32": IMAGE.hex()}, "unknown key"),
        ({"pcr0": IMAGE.hex()[:-2]}, "48 bytes"),
        ({"pcr0": IMAGE.hex() + "00"}, "48 bytes"),
        ({"pcr0": "zz" * 48}, "hex"),
        ({"pcr0": IMAGE}, "hex string"),
        ({"pcr0": 0}, "hex string"),
        ({"allow_any_measurement": "yes"}, "true or false"),
        ({"allow_any_measurement": True, "allow_debug": 1}, "true or false"),
        ({"allow_any_measurement": True, "max_age_seconds": -1}, "max_age_seconds"),
        ({"allow_any_measurement": True, "max_age_seconds": "600"}, "max_age_seconds"),
        ({"allow_any_measurement": True, "max_age_seconds": True}, "max_age_seconds"),
        ({"allow_any_measurement": True, "max_age_seconds": math.nan}, "max_age_seconds"),
        ({"allow_any_measurement": True, "max_clock_skew_seconds": -0.5}, "skew"),
        ({"allow_any_measurement": True, "module_id_prefix": ""}, "module_id_prefix"),
        ({"allow_any_measurement": True, "module_id_prefix": 7}, "module_id_prefix"),
    ],
)
def test_from_mapping_refuses(section: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        NitroPolicy.from_mapping(section)


@pytest.mark.parametrize(
    ("pcrs", "message"),
    [
        ({32: IMAGE}, "index"),
        ({-1: IMAGE}, "index"),
        ({True: IMAGE}, "index"),
        ({0: IMAGE[:32]}, "48 bytes"),
        ({0: IMAGE.hex()}, "48 bytes"),
    ],
)
def test_constructor_validates(pcrs: dict[Any, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        NitroPolicy(pcrs=pcrs)


def test_zero_pcr0_allowed_with_allow_debug() -> None:
    policy = NitroPolicy.from_mapping({"pcr0": "00" * 48, "allow_debug": True})
    assert policy.check(_debug_claims()) == []


def test_pcrs_are_read_only() -> None:
    source = {0: IMAGE}
    policy = NitroPolicy(pcrs=source)
    source[0] = PCR8
    assert policy.pcrs[0] == IMAGE
    with pytest.raises(TypeError):
        policy.pcrs[0] = PCR8  # type: ignore[index]


# -- checking -------------------------------------------------------------------------------


def test_accepts_matching_claims() -> None:
    assert NitroPolicy(pcrs={0: IMAGE, 8: PCR8}).check(_claims()) == []


def test_lists_every_violation() -> None:
    policy = NitroPolicy(
        pcrs={0: IMAGE, 1: PCR8, 20: IMAGE}, max_age_seconds=10, module_id_prefix="i-fff"
    )
    claims = replace(_debug_claims(), timestamp=NOW - timedelta(seconds=11))
    violations = policy.check(claims)
    assert [v.field for v in violations] == [
        "debug",
        "pcr0",
        "pcr1",
        "pcr20",
        "timestamp",
        "module_id",
    ]
    assert violations[1] == Violation("pcr0", IMAGE.hex(), "00" * 48)
    assert violations[3] == Violation("pcr20", IMAGE.hex(), "absent")
    assert violations[4] == Violation("timestamp", "at most 10 s old", "11.000 s old")
    assert "starting with i-fff" in violations[5].expected


def test_debug_refused_without_allow_debug() -> None:
    violations = NitroPolicy(allow_any_measurement=True).check(_debug_claims())
    assert [v.field for v in violations] == ["debug"]
    assert NitroPolicy(allow_any_measurement=True, allow_debug=True).check(_debug_claims()) == []


@pytest.mark.parametrize(
    ("age", "ok"),
    [
        (timedelta(seconds=600), True),
        (timedelta(seconds=600, milliseconds=1), False),
        (timedelta(0), True),
        (timedelta(milliseconds=-860), True),  # evervault-debug-nonce's documented time
        (timedelta(seconds=-60), True),
        (timedelta(seconds=-60, milliseconds=-1), False),
    ],
)
def test_freshness_window(age: timedelta, ok: bool) -> None:
    policy = NitroPolicy(allow_any_measurement=True)
    violations = policy.check(_claims(timestamp=NOW - age))
    assert (violations == []) is ok
    if not ok:
        assert [v.field for v in violations] == ["timestamp"]


def test_future_document_message() -> None:
    policy = NitroPolicy(allow_any_measurement=True, max_clock_skew_seconds=0)
    [violation] = policy.check(_claims(timestamp=NOW + timedelta(seconds=2)))
    assert violation.actual == "2.000 s ahead"
    assert "ahead of the verification time" in violation.expected


def test_other_kinds_of_claims_refused() -> None:
    other = VerifiedClaims(
        kind=EvidenceKind.SGX, measurement=IMAGE, report_data=b"", debug=False, verified_at=NOW
    )
    assert NitroPolicy(allow_any_measurement=True).check(other) == [
        Violation("kind", "nitro", "sgx")
    ]


# -- public surface -------------------------------------------------------------------------


def test_exported_names() -> None:
    assert sorted(nitro.__all__) == ["NitroClaims", "NitroPolicy", "NitroVerifier"]
    public = {n for n in dir(nitro) if not n.startswith("_") and n != "annotations"}
    assert public - {"policy", "verifier"} == set(nitro.__all__)


def test_verifier_for_nitro_pins_the_aws_root() -> None:
    verifier = verifier_for(EvidenceKind.NITRO)
    assert isinstance(verifier, NitroVerifier)
    assert verifier.kind is EvidenceKind.NITRO


def test_claims_to_dict() -> None:
    data = _claims(user_data=b"\x01", nonce=b"\x02").to_dict()
    assert data["kind"] == "nitro"
    assert data["pcrs"]["0"] == IMAGE.hex()
    assert data["timestamp"] == (NOW - timedelta(seconds=30)).isoformat()
    assert (data["user_data"], data["nonce"], data["public_key"]) == ("01", "02", None)
