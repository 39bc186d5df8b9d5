"""SgxPolicy: TOML / BlindAI 0.6 manifest keys in, violations out."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timezone

import pytest

from blindai.attestation import EvidenceKind, Policy
from blindai.attestation.claims import VerifiedClaims
from blindai.attestation.sgx import SgxClaims, SgxPolicy
from blindai.errors import ConfigurationError

MRENCLAVE = bytes.fromhex("33d8736db756ed4997e04ba358d27833188f1932ff7b1d156904d3f560452fbb")
MRSIGNER = bytes.fromhex("815f42f11cf64430c30bab7816ba596a1da0130c3b028b673133a66cf9a3e0e6")

# The layout of BlindAI 0.6's manifest.toml (its default masks), with this set's MRENCLAVE.
MANIFEST_06 = f"""
mr_enclave = "{MRENCLAVE.hex()}"
allow_debug = false
attributes_flags_hex = "0x4"
attributes_mask_flags_hex = "0xfffffffffffffffd"
attributes_xfrm_hex = "0x3"
attributes_mask_xfrm_hex = "0xffffffffffffff1b"
misc_select_hex = "0x0"
misc_mask_hex = "0xffffffff"
"""


def claims(**changes: object) -> SgxClaims:
    """Claims shaped like the phala SGX set's (built directly: policy tests need no quote)."""
    base = SgxClaims(
        kind=EvidenceKind.SGX,
        measurement=MRENCLAVE,
        report_data=bytes(64),
        debug=False,
        verified_at=datetime(2025, 7, 1, tzinfo=timezone.utc),
        tcb_status="UpToDate",
        advisory_ids=(),
        mr_enclave=MRENCLAVE,
        mr_signer=MRSIGNER,
        isv_prod_id=0,
        isv_svn=0,
        attributes=0x05,
        xfrm=0xE7,
        misc_select=0,
        cpu_svn=bytes(16),
        fmspc=bytes(6),
        quote_version=3,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def fields(policy: SgxPolicy, c: VerifiedClaims) -> list[str]:
    return [v.field for v in policy.check(c)]


def test_blindai_06_manifest_keys_are_accepted_by_policy_from_toml() -> None:
    policy = Policy.from_toml(MANIFEST_06).for_kind(EvidenceKind.SGX)
    assert isinstance(policy, SgxPolicy)
    assert policy.mr_enclave == frozenset({MRENCLAVE})
    assert policy.attributes == 0x5  # INIT added, as BlindAI 0.6 compared it
    assert (policy.xfrm, policy.xfrm_mask) == (0x3, 0xFFFFFFFFFFFFFF1B)
    assert (policy.misc_select, policy.misc_select_mask) == (0, 0xFFFFFFFF)
    assert policy.check(claims()) == []


def test_blindai_06_manifest_semantics_on_attributes_xfrm_and_misc_select() -> None:
    policy = Policy.from_toml(MANIFEST_06).for_kind(EvidenceKind.SGX)
    assert isinstance(policy, SgxPolicy)
    assert fields(policy, claims(attributes=0x15)) == ["attributes"]  # PROVISIONKEY set
    assert fields(policy, claims(attributes=0x04)) == ["attributes"]  # INIT missing
    assert fields(policy, claims(xfrm=0xFF)) == ["xfrm"]  # bit 3 is checked
    assert fields(policy, claims(xfrm=0x03)) == []  # AVX bits are masked out
    assert fields(policy, claims(misc_select=1)) == ["misc_select"]
    assert fields(policy, claims(attributes=0x07, debug=True)) == ["debug"]


def test_native_keys_and_masks() -> None:
    policy = SgxPolicy.from_mapping(
        {
            "mr_enclave": [MRENCLAVE.hex(), "00" * 32],
            "mr_signer": MRSIGNER.hex(),
            "isv_prod_id": 0,
            "min_isv_svn": 2,
            "attributes": 5,
            "xfrm": "0x3",
            "xfrm_mask": "0x3",
            "misc_select": 0,
            "misc_select_mask": "0x1",
            "allowed_tcb_statuses": ["UpToDate", "SWHardeningNeeded"],
        }
    )
    assert fields(policy, claims(isv_svn=2, tcb_status="SWHardeningNeeded")) == []
    assert fields(policy, claims(isv_svn=1)) == ["isv_svn"]
    assert fields(policy, claims(isv_svn=2, isv_prod_id=1)) == ["isv_prod_id"]
    assert fields(policy, claims(isv_svn=2, misc_select=2)) == []
    assert fields(policy, claims(isv_svn=2, tcb_status="OutOfDate")) == ["tcb_status"]


def test_every_violation_is_reported_at_once() -> None:
    policy = SgxPolicy(mr_enclave=frozenset({bytes(32)}), mr_signer=frozenset({bytes(32)}))
    bad = claims(debug=True, attributes=0x7, tcb_status="OutOfDate")
    assert fields(policy, bad) == ["mr_enclave", "mr_signer", "debug", "tcb_status"]


def test_allow_debug_accepts_a_debug_enclave() -> None:
    policy = SgxPolicy(mr_enclave=frozenset({MRENCLAVE}), allow_debug=True)
    assert policy.check(claims(debug=True, attributes=0x7)) == []


def test_claims_of_another_kind_are_a_violation() -> None:
    other = VerifiedClaims(
        kind=EvidenceKind.TDX,
        measurement=bytes(48),
        report_data=bytes(64),
        debug=False,
        verified_at=datetime(2025, 7, 1, tzinfo=timezone.utc),
    )
    assert fields(SgxPolicy(allow_any_measurement=True), other) == ["kind"]


@pytest.mark.parametrize(
    "data",
    [
        {},  # no measurement
        {"allow_debug": True},
        {"mr_enclave": "zz" * 32},
        {"mr_enclave": "00" * 31},
        {"mr_enclave": []},
        {"mr_enclave": 5},
        {"mr_enclave": "00" * 32, "unknown_key": 1},
        {"mr_enclave": "00" * 32, "allowed_tcb_statuses": ["Revoked"]},
        {"mr_enclave": "00" * 32, "allowed_tcb_statuses": ["Fine"]},
        {"mr_enclave": "00" * 32, "allowed_tcb_statuses": []},
        {"mr_enclave": "00" * 32, "allowed_tcb_statuses": "UpToDate"},
        {"mr_enclave": "00" * 32, "allow_debug": "no"},
        {"mr_enclave": "00" * 32, "isv_prod_id": 1 << 16},
        {"mr_enclave": "00" * 32, "misc_select_hex": "0x1ffffffff"},
        {"mr_enclave": "00" * 32, "attributes_flags_hex": "zz"},
        {"mr_enclave": "00" * 32, "attributes": True},
        {"mr_enclave": "00" * 32, "attributes": 1.5},
        {"mr_enclave": "00" * 32, "xfrm": -1},
        {"mr_enclave": "00" * 32, "xfrm": "0x3", "attributes_xfrm_hex": "0x3"},
    ],
)
def test_bad_policies_are_configuration_errors(data: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError):
        SgxPolicy.from_mapping(data)


def test_allow_any_measurement_must_be_explicit() -> None:
    assert SgxPolicy.from_mapping({"allow_any_measurement": True}).check(claims()) == []
    with pytest.raises(ConfigurationError):
        SgxPolicy()


def test_sgx_section_in_a_policy_file() -> None:
    policy = Policy.from_toml(
        f'[sgx]\nmr_signer = "{MRSIGNER.hex()}"\nisv_prod_id = 0\nmin_isv_svn = 0\n'
    )
    assert isinstance(policy.sgx, SgxPolicy)
    assert policy.sgx.mr_signer == frozenset({MRSIGNER})


# --- regression: the typed policy took what from_mapping refuses ---------------------------


@pytest.mark.parametrize("mask", ["attributes_mask", "xfrm_mask", "misc_select_mask"])
def test_a_typed_mask_without_its_value_is_refused_as_in_toml(mask: str) -> None:
    """``SgxPolicy(mr_enclave=..., xfrm_mask=...)`` with no ``xfrm`` checked nothing, as the
    TOML key alone did before 2fb09ef refused it there; the typed policy took it silently."""
    with pytest.raises(ConfigurationError, match=f"{mask} without {mask[:-5]}"):
        SgxPolicy(mr_enclave=frozenset({MRENCLAVE}), **{mask: 0x4})  # type: ignore[arg-type]
    given = SgxPolicy(mr_enclave=frozenset({MRENCLAVE}), **{mask[:-5]: 0, mask: 0})  # type: ignore[arg-type]
    assert given.check(claims()) == []


def test_typed_advisory_ids_as_a_string_are_refused() -> None:
    """A string was taken, and ``advisory in allowed`` was then a substring test: an advisory
    whose ID is part of an assessed one's passed."""
    for wrong in ("INTEL-SA-00615", frozenset({""}), frozenset({1}), frozenset()):
        with pytest.raises(ConfigurationError, match="allowed_advisory_ids"):
            SgxPolicy(mr_enclave=frozenset({MRENCLAVE}), allowed_advisory_ids=wrong)  # type: ignore[arg-type]
    typed = SgxPolicy(
        mr_enclave=frozenset({MRENCLAVE}),
        allowed_tcb_statuses=frozenset({"SWHardeningNeeded"}),
        allowed_advisory_ids=frozenset({"INTEL-SA-00615"}),
    )
    other = claims(tcb_status="SWHardeningNeeded", advisory_ids=("INTEL-SA-0061",))
    assert [v.field for v in typed.check(other)] == ["advisory_ids"]


@pytest.mark.parametrize("flag", ["allow_debug", "allow_any_measurement"])
def test_typed_flags_must_be_booleans(flag: str) -> None:
    """``SgxPolicy(mr_enclave=..., allow_debug="false")`` took a truthy string and accepted a
    debug enclave."""
    with pytest.raises(ConfigurationError, match=f"{flag} must be true or false"):
        SgxPolicy(mr_enclave=frozenset({MRENCLAVE}), **{flag: "false"})  # type: ignore[arg-type]


# --- regression: violations showed raw hex masks, not the bits that differ ---------------


def test_violations_name_the_bits_that_differ_and_keep_the_raw_value() -> None:
    """A violation read "attributes: expected 0x5 under mask 0xff..fd, got 0x15": the reader had
    to work out which bit. Each now names the bits that differ, in order (ATTRIBUTES.FLAGS,
    XFRM's XSAVE features, MISCSELECT), and carries the register's raw value."""
    policy = Policy.from_toml(MANIFEST_06).for_kind(EvidenceKind.SGX)
    assert isinstance(policy, SgxPolicy)
    bad = claims(attributes=0x14, xfrm=0xEF, misc_select=0x3)
    got = [(v.field, v.expected, v.actual, v.value) for v in policy.check(bad)]
    assert got == [
        ("attributes", "INIT set and PROVISIONKEY clear", "INIT clear and PROVISIONKEY set", 0x14),
        ("xfrm", "MPX_BNDREGS clear", "MPX_BNDREGS set", 0xEF),
        ("misc_select", "EXINFO clear and CPINFO clear", "EXINFO set and CPINFO set", 0x3),
    ]
    unnamed = policy.check(claims(attributes=0x05 | 1 << 40))
    assert [str(v) for v in unnamed] == ["attributes: expected bit 40 clear, got bit 40 set"]


@pytest.mark.parametrize(
    "field",
    ["attributes", "attributes_mask", "xfrm", "xfrm_mask", "misc_select", "misc_select_mask"],
)
@pytest.mark.parametrize("wrong", ["0x5", True, -1, 1 << 64], ids=["str", "bool", "neg", "big"])
def test_typed_bit_fields_are_unsigned_integers_of_their_width(field: str, wrong: object) -> None:
    """From TOML these are checked (f.uint: an integer or hex string, unsigned, 64 or 32 bits);
    built directly, ``SgxPolicy(attributes="0x5")`` was taken and failed with a TypeError at
    verification, and a negative or too wide value or mask was taken as it was. Each is now a
    ConfigurationError naming the field, as in TOML."""
    other = {"attributes": 5} if field == "attributes_mask" else {}
    other |= {"xfrm": 3} if field == "xfrm_mask" else {}
    other |= {"misc_select": 0} if field == "misc_select_mask" else {}
    if field == "misc_select" or field == "misc_select_mask":
        wrong = 1 << 32 if wrong == 1 << 64 else wrong
    with pytest.raises(ConfigurationError, match=f"{field} must be an unsigned"):
        SgxPolicy(mr_enclave=frozenset({MRENCLAVE}), **other, **{field: wrong})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("field", "width"),
    [("isv_prod_id", 16), ("min_isv_svn", 16), ("min_tcb_evaluation_data_number", 32)],
)
@pytest.mark.parametrize("wrong", ["17", True, -1, "big"], ids=["str", "bool", "neg", "big"])
def test_typed_numbers_are_unsigned_integers_of_their_width(
    field: str, width: int, wrong: object
) -> None:
    """From TOML these are checked (16 or 32 bits, unsigned, an integer); built directly,
    ``min_tcb_evaluation_data_number="17"`` failed with a TypeError at verification,
    ``isv_prod_id="0"`` refused every enclave, ``min_isv_svn=-1`` read as 0. Each is now a
    ConfigurationError naming the field."""
    wrong = 1 << width if wrong == "big" else wrong
    pinned = {"isv_prod_id": 0, "min_isv_svn": 0, field: wrong}
    with pytest.raises(ConfigurationError, match=f"{field} must be an unsigned"):
        SgxPolicy(mr_signer=frozenset({MRSIGNER}), **pinned)  # type: ignore[arg-type]
