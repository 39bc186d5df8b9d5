"""TdxPolicy: the [tdx] TOML section in, violations out."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timezone

import pytest

from blindai.attestation import EvidenceKind, Policy
from blindai.attestation.claims import VerifiedClaims
from blindai.attestation.tdx import TdxClaims, TdxPolicy
from blindai.errors import ConfigurationError

MRTD = bytes(range(48))
SEPT_VE_DISABLE = 1 << 28
MIGRATABLE = 1 << 29
#: RTMR1 and RTMR2 (kernel, command line, initrd) as claims() has them: required beside mr_td
BOOT = {"rtmr1": "00" * 48, "rtmr2": "00" * 48}


def claims(**changes: object) -> TdxClaims:
    base = TdxClaims(
        kind=EvidenceKind.TDX,
        measurement=MRTD,
        report_data=bytes(64),
        debug=False,
        verified_at=datetime(2025, 7, 1, tzinfo=timezone.utc),
        tcb_status="UpToDate",
        mr_td=MRTD,
        rtmr0=bytes(48),
        rtmr1=bytes(48),
        rtmr2=bytes(48),
        rtmr3=bytes(48),
        mr_seam=b"\x01" * 48,
        mr_signer_seam=bytes(48),
        mr_config_id=bytes(48),
        mr_owner=bytes(48),
        mr_owner_config=bytes(48),
        td_attributes=SEPT_VE_DISABLE,
        xfam=0x602E7,
        tee_tcb_svn=bytes(16),
        tee_tcb_svn2=None,
        mr_service_td=None,
        quote_version=4,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def fields(policy: TdxPolicy, c: TdxClaims) -> list[str]:
    return [v.field for v in policy.check(c)]


def test_a_tdx_section_in_a_policy_file() -> None:
    policy = Policy.from_toml(
        f"""
[tdx]
mr_td = "{MRTD.hex()}"
rtmr1 = ["{"00" * 48}", "{"11" * 48}"]
rtmr2 = "{"00" * 48}"
td_attributes = "0x10000000"
xfam = 0x602e7
allowed_tcb_statuses = ["UpToDate", "SWHardeningNeeded"]
"""
    ).for_kind(EvidenceKind.TDX)
    assert isinstance(policy, TdxPolicy)
    assert policy.check(claims()) == []
    assert policy.check(claims(tcb_status="SWHardeningNeeded")) == []
    assert fields(policy, claims(rtmr1=b"\x22" * 48)) == ["rtmr1"]
    assert fields(policy, claims(td_attributes=0)) == ["td_attributes"]
    assert fields(policy, claims(xfam=0x602E6)) == ["xfam"]
    assert fields(policy, claims(tcb_status="OutOfDate")) == ["tcb_status"]


def test_debug_is_judged_by_allow_debug_alone() -> None:
    strict = TdxPolicy(
        mr_td=frozenset({MRTD}),
        rtmr1=frozenset({bytes(48)}),
        rtmr2=frozenset({bytes(48)}),
        td_attributes=SEPT_VE_DISABLE,
    )
    debug_td = claims(debug=True, td_attributes=SEPT_VE_DISABLE | 1)
    assert fields(strict, debug_td) == ["debug"]
    assert replace(strict, allow_debug=True).check(debug_td) == []


def test_masks_select_the_bits_checked() -> None:
    policy = TdxPolicy.from_mapping(
        {
            "mr_td": MRTD.hex(),
            **BOOT,
            "xfam": "0x3",
            "xfam_mask": "0x3",
            "td_attributes": 0,
            "td_attributes_mask": 0,
        }
    )
    assert policy.check(claims(xfam=0xFF, td_attributes=1 << 30)) == []
    assert fields(policy, claims(xfam=0x1)) == ["xfam"]


def test_every_violation_is_reported_at_once() -> None:
    policy = TdxPolicy.from_mapping(
        {"mr_td": "00" * 48, "rtmr0": "11" * 48, "mr_seam": "22" * 48, "rtmr3": "00" * 48, **BOOT}
    )
    bad = claims(debug=True, tcb_status="OutOfDate")
    assert fields(policy, bad) == ["mr_td", "rtmr0", "mr_seam", "debug", "tcb_status"]


HOST_SET = ("mr_config_id", "mr_owner", "mr_owner_config")


@pytest.mark.parametrize("key", HOST_SET)
def test_each_host_set_register_is_pinned_exactly(key: str) -> None:
    policy = TdxPolicy.from_mapping({"mr_td": MRTD.hex(), **BOOT, key: "ab" * 48})
    assert getattr(policy, key) == frozenset({b"\xab" * 48})
    assert policy.check(claims(**{key: b"\xab" * 48})) == []
    (violation,) = policy.check(claims(**{key: b"\xab" * 47 + b"\xac"}))
    assert (violation.field, violation.expected) == (key, "ab" * 48)
    assert violation.actual == "ab" * 47 + "ac"
    unpinned = TdxPolicy.from_mapping({"mr_td": MRTD.hex(), **BOOT})
    assert unpinned.check(claims(**{key: b"\x01" * 48})) == []


def test_host_set_registers_from_a_policy_file_all_reported_in_order() -> None:
    policy = Policy.from_toml(
        f"""
[tdx]
mr_td = "{MRTD.hex()}"
rtmr1 = "{"00" * 48}"
rtmr2 = "{"00" * 48}"
mr_config_id = "{"11" * 48}"
mr_owner = ["{"22" * 48}", "{"00" * 48}"]
mr_owner_config = "{"33" * 48}"
"""
    ).for_kind(EvidenceKind.TDX)
    assert isinstance(policy, TdxPolicy)
    assert fields(policy, claims()) == ["mr_config_id", "mr_owner_config"]
    assert fields(policy, claims(mr_owner=b"\x44" * 48, mr_seam=b"\x02" * 48, debug=True)) == [
        "mr_config_id",
        "mr_owner",
        "mr_owner_config",
        "debug",
    ]
    good = claims(mr_config_id=b"\x11" * 48, mr_owner=b"\x22" * 48, mr_owner_config=b"\x33" * 48)
    assert policy.check(good) == []


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"mr_td": "00" * 48, "mr_config_id": "00" * 32},
        {"mr_td": "00" * 48, "mr_owner": "zz" * 48},
        {"mr_td": "00" * 48, "mr_owner_config": []},
        {"mr_config_id": "00" * 48},
        {"rtmr0": "00" * 48},
        {"mr_td": "00" * 32},
        {"mr_td": "00" * 48, "mr_enclave": "00" * 32},
        {"mr_td": "00" * 48, "allowed_tcb_statuses": ["Revoked"]},
        {"mr_td": "00" * 48, "xfam": "0x" + "f" * 17},
        {"mr_td": "00" * 48, "allow_debug": 1},
        {"mr_td": "00" * 48, "min_tcb_evaluation_data_number": -1},
        {"mr_td": "00" * 48, "min_tcb_evaluation_data_number": "17"},
        {"mr_td": "00" * 48, "min_tcb_evaluation_data_number": 1 << 32},
    ],
)
def test_bad_policies_are_configuration_errors(data: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError):
        TdxPolicy.from_mapping(data)


def test_allow_any_measurement_must_be_explicit() -> None:
    assert TdxPolicy.from_mapping({"allow_any_measurement": True}).check(claims()) == []


def test_claims_of_another_kind_are_a_violation() -> None:
    other = VerifiedClaims(
        kind=EvidenceKind.SGX,
        measurement=bytes(32),
        report_data=bytes(64),
        debug=False,
        verified_at=datetime(2025, 7, 1, tzinfo=timezone.utc),
    )
    policy = TdxPolicy(allow_any_measurement=True)
    assert [v.field for v in policy.check(other)] == ["kind"]


# --- regression: violations showed raw hex masks, not the bits that differ ---------------


def test_violations_name_the_bits_that_differ_and_keep_the_raw_value() -> None:
    """A violation read "td_attributes: expected 0x10000000 under mask 0xff..fe, got 0x20000000":
    which bits? Each now names the TD attribute or XSAVE feature bits that differ, and carries
    the register's raw value (the claims keep it too)."""
    policy = TdxPolicy.from_mapping(
        {"mr_td": MRTD.hex(), **BOOT, "td_attributes": "0x10000000", "xfam": "0x602e7"}
    )
    bad = claims(td_attributes=MIGRATABLE | 1 << 63, xfam=0x602E7 & ~(1 << 9) | 1 << 8)
    got = [(v.field, v.expected, v.actual, v.value) for v in policy.check(bad)]
    assert got == [
        (
            "td_attributes",
            "SEPT_VE_DISABLE set and MIGRATABLE clear and PERFMON clear",
            "SEPT_VE_DISABLE clear and MIGRATABLE set and PERFMON set",
            MIGRATABLE | 1 << 63,
        ),
        ("xfam", "PT clear and PKRU set", "PT set and PKRU clear", bad.xfam),
    ]
    assert str(policy.check(claims(td_attributes=0))[0]) == (
        "td_attributes: expected SEPT_VE_DISABLE set, got SEPT_VE_DISABLE clear"
    )


@pytest.mark.parametrize("field", ["td_attributes", "td_attributes_mask", "xfam", "xfam_mask"])
@pytest.mark.parametrize("wrong", ["0x0", True, -1, 1 << 64], ids=["str", "bool", "neg", "big"])
def test_typed_bit_fields_are_unsigned_64_bit_integers(field: str, wrong: object) -> None:
    """From TOML these are checked (an integer or hex string, unsigned, 64 bits); built
    directly, ``TdxPolicy(xfam="0x3")`` was taken and failed with a TypeError at verification,
    and a negative or too wide value or mask was taken as it was. Each is now a
    ConfigurationError naming the field, as in TOML."""
    other = {"td_attributes": 0} if field == "td_attributes_mask" else {}
    other |= {"xfam": 3} if field == "xfam_mask" else {}
    with pytest.raises(ConfigurationError, match=f"{field} must be an unsigned"):
        TdxPolicy(allow_any_measurement=True, **other, **{field: wrong})  # type: ignore[arg-type]


@pytest.mark.parametrize("wrong", ["17", True, -1, 1 << 32], ids=["str", "bool", "neg", "big"])
def test_a_typed_tcb_evaluation_data_number_is_an_unsigned_32_bit_integer(wrong: object) -> None:
    """``TdxPolicy(min_tcb_evaluation_data_number="17")`` was taken and failed with a TypeError
    at verification (TOML refuses it). Now a ConfigurationError naming the field."""
    with pytest.raises(ConfigurationError, match="min_tcb_evaluation_data_number must be an"):
        TdxPolicy(allow_any_measurement=True, min_tcb_evaluation_data_number=wrong)  # type: ignore[arg-type]
