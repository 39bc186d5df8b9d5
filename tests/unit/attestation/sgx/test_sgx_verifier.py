"""SgxVerifier on the real SGX DCAP sets, and on negatives derived from them."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from datetime import datetime

import pytest

from blindai.attestation import Endorsements
from blindai.attestation.sgx import SgxClaims, SgxPolicy, SgxVerifier
from blindai.errors import (
    ChainError,
    CollateralError,
    CollateralUnavailable,
    ConfigurationError,
    EvidenceError,
    PolicyError,
    SignatureError,
)
from tests.unit.attestation.dcap_sets import DcapSet, utc

PHALA_MRENCLAVE = "33d8736db756ed4997e04ba358d27833188f1932ff7b1d156904d3f560452fbb"
PHALA_MRSIGNER = "815f42f11cf64430c30bab7816ba596a1da0130c3b028b673133a66cf9a3e0e6"
AUTOMATA_MRENCLAVE = "3e7830a35057b9938d0fd849d13e3d82dc4abba812f8ffebbbb3d0e5ff1dd661"
AUTOMATA_MRSIGNER = "60d7778210f93769ad6d1d26698df018f95d321fc64f750fdd286ed15882c58e"
AUTOMATA_REPORT_DATA = (
    "000000000000000000000000533bdab5edb34c958d5ed0b9f950a158a9e65ec7"
    "153235568a113e5156253dd1f3fb78db20a37290a42e114a541ffe3d155263ee"
)
MRENCLAVE_AT = 48 + 64  # header, then MRENCLAVE at offset 64 of the report body
SIGNATURE_AT = 48 + 384 + 4  # header, body, signature_data_len


def verify(dcap: DcapSet, policy: SgxPolicy, **changes: object) -> SgxClaims:
    args: dict[str, object] = {"now": dcap.now, "endorsements": dcap.endorsements}
    args.update(changes)
    return SgxVerifier.with_embedded_roots().verify(dcap.quote, policy, **args)  # type: ignore[arg-type]


def policy(mr_enclave: str, *statuses: str, **more: object) -> SgxPolicy:
    return SgxPolicy.from_mapping(
        {"mr_enclave": mr_enclave, "allowed_tcb_statuses": list(statuses or ["UpToDate"]), **more}
    )


def flip(data: bytes, offset: int, mask: int = 0x01) -> bytes:
    out = bytearray(data)
    out[offset] ^= mask
    return bytes(out)


# --- real sets ---------------------------------------------------------------------------


def test_phala_set_verifies_with_its_documented_tcb_status(phala_sgx: DcapSet) -> None:
    claims = verify(phala_sgx, policy(PHALA_MRENCLAVE, "ConfigurationAndSWHardeningNeeded"))
    assert claims.tcb_status == "ConfigurationAndSWHardeningNeeded"
    assert claims.advisory_ids == ("INTEL-SA-00289", "INTEL-SA-00615")
    assert claims.measurement == claims.mr_enclave == bytes.fromhex(PHALA_MRENCLAVE)
    assert claims.mr_signer == bytes.fromhex(PHALA_MRSIGNER)
    assert claims.report_data == b"Hello, world!" + bytes(51)
    assert (claims.isv_prod_id, claims.isv_svn, claims.misc_select) == (0, 0, 0)
    assert (claims.attributes, claims.xfrm) == (0x05, 0xE7)
    assert claims.cpu_svn == bytes.fromhex("0b0b1a18ffff04000000000000000000")
    assert claims.fmspc == bytes.fromhex("00a067110000")
    assert claims.quote_version == 3
    assert claims.debug is False
    assert claims.verified_at == phala_sgx.now
    assert claims.to_dict()["kind"] == "sgx"


def test_the_collaterals_evaluation_data_number_is_claimed_and_judged(
    phala_sgx: DcapSet,
) -> None:
    statuses = ("ConfigurationAndSWHardeningNeeded",)
    claims = verify(phala_sgx, policy(PHALA_MRENCLAVE, *statuses))
    assert claims.tcb_evaluation_data_number == 17
    accepted = policy(PHALA_MRENCLAVE, *statuses, min_tcb_evaluation_data_number=17)
    assert verify(phala_sgx, accepted).mr_enclave == claims.mr_enclave
    with pytest.raises(PolicyError) as info:
        verify(phala_sgx, policy(PHALA_MRENCLAVE, *statuses, min_tcb_evaluation_data_number=18))
    assert [(v.field, v.expected, v.actual) for v in info.value.violations] == [
        ("tcb_evaluation_data_number", ">= 18", "17")
    ]


def test_automata_set_verifies_with_its_documented_tcb_status(automata_sgx: DcapSet) -> None:
    claims = verify(automata_sgx, policy(AUTOMATA_MRENCLAVE, "SWHardeningNeeded"))
    assert claims.tcb_status == "SWHardeningNeeded"
    assert claims.advisory_ids == ("INTEL-SA-00615",)
    assert claims.mr_enclave == bytes.fromhex(AUTOMATA_MRENCLAVE)
    assert claims.mr_signer == bytes.fromhex(AUTOMATA_MRSIGNER)
    assert claims.report_data == bytes.fromhex(AUTOMATA_REPORT_DATA)
    assert claims.fmspc == bytes.fromhex("00606a000000")
    assert claims.attributes == 0x05
    assert claims.debug is False


def test_mr_signer_alone_is_refused_as_it_accepts_every_product_and_version(
    phala_sgx: DcapSet,
) -> None:
    """MRSIGNER is the signing key: with neither mr_enclave nor isv_prod_id and min_isv_svn, a
    policy accepted any enclave that key ever signed, any product, any older (vulnerable)
    version. Now a ConfigurationError; ``min_isv_svn = 0`` says "any version" explicitly."""
    statuses = {"allowed_tcb_statuses": ["ConfigurationAndSWHardeningNeeded"]}
    for more in ({}, {"isv_prod_id": 0}, {"min_isv_svn": 0}):
        with pytest.raises(ConfigurationError, match="isv_prod_id and min_isv_svn"):
            SgxPolicy.from_mapping({"mr_signer": PHALA_MRSIGNER, **statuses, **more})
    signer = {"mr_signer": PHALA_MRSIGNER, "isv_prod_id": 0, "min_isv_svn": 0, **statuses}
    assert verify(phala_sgx, SgxPolicy.from_mapping(signer)).mr_signer.hex() == PHALA_MRSIGNER
    with pytest.raises(PolicyError) as info:  # the same signer's other product, a newer SVN
        verify(phala_sgx, SgxPolicy.from_mapping({**signer, "isv_prod_id": 1, "min_isv_svn": 1}))
    assert [(v.field, v.actual) for v in info.value.violations] == [
        ("isv_prod_id", "0"),
        ("isv_svn", "0"),
    ]
    pinned = policy(PHALA_MRENCLAVE, *statuses["allowed_tcb_statuses"], mr_signer=PHALA_MRSIGNER)
    assert verify(phala_sgx, pinned).mr_enclave.hex() == PHALA_MRENCLAVE  # MRENCLAVE: enough


@pytest.mark.parametrize(
    ("fixture", "mr_enclave", "status"),
    [
        ("phala_sgx", PHALA_MRENCLAVE, "ConfigurationAndSWHardeningNeeded"),
        ("automata_sgx", AUTOMATA_MRENCLAVE, "SWHardeningNeeded"),
    ],
)
def test_default_policy_refuses_a_tcb_status_other_than_up_to_date(
    request: pytest.FixtureRequest, fixture: str, mr_enclave: str, status: str
) -> None:
    dcap = request.getfixturevalue(fixture)
    with pytest.raises(PolicyError) as info:
        verify(dcap, SgxPolicy.from_mapping({"mr_enclave": mr_enclave}))
    assert [(v.field, v.actual) for v in info.value.violations] == [("tcb_status", status)]


@pytest.mark.parametrize("allow_debug", [False, True])
def test_occlum_debug_enclave_is_refused_as_debug(occlum_sgx: DcapSet, allow_debug: bool) -> None:
    # dcap-qvl 0.7 verifies no debug enclave, so even allow_debug cannot accept it
    occlum = policy(
        "8f173e4613ff05c52aaf04162d234edae8c9977eae47eb2299ae16a553011c68",
        "OutOfDate",
        allow_debug=allow_debug,
    )
    with pytest.raises(PolicyError) as info:
        verify(occlum_sgx, occlum)
    assert [v.field for v in info.value.violations] == ["debug"]


def test_debug_refusal_comes_only_after_authenticity(occlum_sgx: DcapSet) -> None:
    forged = replace(occlum_sgx, quote=flip(occlum_sgx.quote, SIGNATURE_AT + 3))
    with pytest.raises(SignatureError):
        verify(forged, SgxPolicy(allow_any_measurement=True, allow_debug=True))


def test_trailing_bytes_after_the_signature_data_are_tolerated(phala_sgx: DcapSet) -> None:
    padded = replace(phala_sgx, quote=phala_sgx.quote + bytes(70) + b"extra bytes\n")
    assert verify(padded, policy(PHALA_MRENCLAVE, "ConfigurationAndSWHardeningNeeded"))


# --- policy violations -------------------------------------------------------------------


def test_wrong_measurement_is_a_policy_error_listing_every_violation(phala_sgx: DcapSet) -> None:
    wrong = SgxPolicy.from_mapping(
        {"mr_enclave": "00" * 32, "mr_signer": "11" * 32, "isv_prod_id": 7, "min_isv_svn": 1}
    )
    with pytest.raises(PolicyError) as info:
        verify(phala_sgx, wrong)
    fields = [v.field for v in info.value.violations]
    assert fields == ["mr_enclave", "mr_signer", "isv_prod_id", "isv_svn", "tcb_status"]
    assert info.value.violations[0].actual == PHALA_MRENCLAVE


# --- authenticity: bit flips -------------------------------------------------------------


@pytest.mark.parametrize(
    ("offset", "error"),
    [
        (10, SignatureError),  # header: PCE SVN
        (40, SignatureError),  # header: user data
        (MRENCLAVE_AT, SignatureError),  # body: MRENCLAVE
        (48 + 320, SignatureError),  # body: report data
        (SIGNATURE_AT + 5, SignatureError),  # quote signature
        (SIGNATURE_AT + 64 + 7, SignatureError),  # attestation key
        (SIGNATURE_AT + 128 + 64, SignatureError),  # QE report (MRENCLAVE of the QE)
        (SIGNATURE_AT + 128 + 384 + 9, SignatureError),  # QE report signature
        (20, EvidenceError),  # header: QE vendor ID
        (0, EvidenceError),  # header: version 3 -> 2
    ],
)
def test_a_flipped_bit_is_refused(phala_sgx: DcapSet, offset: int, error: type) -> None:
    with pytest.raises(error):
        verify(replace(phala_sgx, quote=flip(phala_sgx.quote, offset)), policy(PHALA_MRENCLAVE))


def test_a_flipped_bit_in_the_pck_certificate_breaks_the_chain(phala_sgx: DcapSet) -> None:
    leaf = phala_sgx.quote.index(b"-----BEGIN CERTIFICATE-----")
    with pytest.raises(ChainError):
        verify(replace(phala_sgx, quote=flip(phala_sgx.quote, leaf + 400)), policy(PHALA_MRENCLAVE))


def edit_root(quote: bytes) -> bytes:
    """Change one base64 character near the end of the root certificate (its signature)."""
    end = quote.rindex(b"-----END CERTIFICATE-----")
    at = quote.rindex(b"\n", 0, end - 1) - 12
    out = bytearray(quote)
    out[at] = ord("B") if out[at] == ord("A") else ord("A")
    return bytes(out)


def test_a_root_that_is_not_pinned_is_refused(phala_sgx: DcapSet) -> None:
    with pytest.raises(ChainError, match="not pinned"):
        verify(replace(phala_sgx, quote=edit_root(phala_sgx.quote)), policy(PHALA_MRENCLAVE))


def test_a_verifier_pinning_another_root_refuses_intel(phala_sgx: DcapSet) -> None:
    other = SgxVerifier(trusted_roots={hashlib.sha256(b"another root").digest()})
    with pytest.raises(ChainError):
        other.verify(
            phala_sgx.quote,
            policy(PHALA_MRENCLAVE),
            now=phala_sgx.now,
            endorsements=phala_sgx.endorsements,
        )


# --- collateral and time -----------------------------------------------------------------


@pytest.mark.parametrize(
    "when",
    [
        "2025-06-19T10:00:00Z",
        "2025-07-20T00:00:00Z",
        "2019-01-01T00:00:00Z",
        "2035-01-01T00:00:00Z",
    ],
)
def test_a_time_outside_the_collateral_window_is_a_collateral_error(
    phala_sgx: DcapSet, when: str
) -> None:
    with pytest.raises(CollateralError):
        verify(phala_sgx, policy(PHALA_MRENCLAVE), now=utc(when))


def test_collateral_of_another_set_is_refused(phala_sgx: DcapSet, automata_sgx: DcapSet) -> None:
    with pytest.raises(CollateralError):
        verify(phala_sgx, policy(PHALA_MRENCLAVE), endorsements=automata_sgx.endorsements)
    with pytest.raises(CollateralError):  # and at the other set's time
        verify(
            phala_sgx,
            policy(PHALA_MRENCLAVE),
            now=automata_sgx.now,
            endorsements=automata_sgx.endorsements,
        )


def test_collateral_for_a_tdx_quote_is_refused(phala_sgx: DcapSet, phala_v4: DcapSet) -> None:
    with pytest.raises(CollateralError):
        verify(phala_sgx, policy(PHALA_MRENCLAVE), endorsements=phala_v4.endorsements)


def test_tcb_info_of_another_fmspc_is_refused(phala_sgx: DcapSet, phala_v4: DcapSet) -> None:
    import json

    mixed = json.loads(phala_sgx.collateral)
    other = json.loads(phala_v4.collateral)
    mixed["tcb_info"], mixed["tcb_info_signature"] = other["tcb_info"], other["tcb_info_signature"]
    with pytest.raises(CollateralError, match="Fmspc"):
        verify(
            phala_sgx,
            policy(PHALA_MRENCLAVE),
            endorsements=Endorsements(collateral=json.dumps(mixed).encode()),
        )


@pytest.mark.parametrize("endorsements", [None, Endorsements(), Endorsements(certificates=(b"x",))])
def test_missing_collateral_fails_closed(
    phala_sgx: DcapSet, endorsements: Endorsements | None
) -> None:
    with pytest.raises(CollateralUnavailable):
        verify(phala_sgx, policy(PHALA_MRENCLAVE), endorsements=endorsements)


@pytest.mark.parametrize("collateral", [b"", b"[]", b"{}", b"\xff\xfe", b'{"pck_crl": 1}'])
def test_malformed_collateral_is_a_collateral_error(phala_sgx: DcapSet, collateral: bytes) -> None:
    with pytest.raises(CollateralError):
        verify(phala_sgx, policy(PHALA_MRENCLAVE), endorsements=Endorsements(collateral=collateral))


# --- parsing -----------------------------------------------------------------------------


@pytest.mark.parametrize("length", [0, 1, 47, 48, 431, 432, 435, 436, 1000, -1])
def test_a_truncated_quote_is_an_evidence_error(phala_sgx: DcapSet, length: int) -> None:
    signed_end = len(phala_sgx.quote)  # this set has no trailing bytes
    cut = phala_sgx.quote[: length if length >= 0 else signed_end + length]
    with pytest.raises(EvidenceError):
        verify(replace(phala_sgx, quote=cut), policy(PHALA_MRENCLAVE))


@pytest.mark.parametrize("version", [1, 2, 6, 0xFFFF])
def test_an_unknown_version_is_an_evidence_error(phala_sgx: DcapSet, version: int) -> None:
    quote = version.to_bytes(2, "little") + phala_sgx.quote[2:]
    with pytest.raises(EvidenceError, match="version"):
        verify(replace(phala_sgx, quote=quote), policy(PHALA_MRENCLAVE))


def test_nonzero_reserved_bytes_are_an_evidence_error(phala_sgx: DcapSet) -> None:
    with pytest.raises(EvidenceError, match="reserved"):
        verify(replace(phala_sgx, quote=flip(phala_sgx.quote, 48 + 100)), policy(PHALA_MRENCLAVE))


def test_a_tdx_quote_is_refused_by_the_sgx_verifier(phala_v4: DcapSet) -> None:
    with pytest.raises(EvidenceError, match="TDX"):
        verify(phala_v4, SgxPolicy(allow_any_measurement=True))


def test_a_naive_time_is_a_configuration_error(phala_sgx: DcapSet) -> None:
    naive = datetime(2025, 7, 1)
    with pytest.raises(ConfigurationError):
        verify(phala_sgx, policy(PHALA_MRENCLAVE), now=naive)


def test_the_policy_must_be_an_sgx_policy(phala_sgx: DcapSet) -> None:
    with pytest.raises(ConfigurationError):
        SgxVerifier.with_embedded_roots().verify(
            phala_sgx.quote, {"mr_enclave": "00"}, now=phala_sgx.now
        )


def test_a_verifier_without_roots_is_refused() -> None:
    with pytest.raises(ConfigurationError):
        SgxVerifier(trusted_roots=())


def test_the_package_exports_exactly_verifier_policy_and_claims() -> None:
    import blindai.attestation.sgx as sgx

    assert sorted(sgx.__all__) == ["SgxClaims", "SgxPolicy", "SgxVerifier"]
    assert all(getattr(sgx, name) for name in sgx.__all__)


def test_top_level_verify_uses_the_embedded_roots(phala_sgx: DcapSet) -> None:
    from blindai.attestation import EvidenceKind, Policy
    from blindai.attestation import verify as verify_kind

    toml = f"""
[sgx]
mr_enclave = "{PHALA_MRENCLAVE}"
allowed_tcb_statuses = ["ConfigurationAndSWHardeningNeeded"]
"""
    claims = verify_kind(
        EvidenceKind.SGX,
        phala_sgx.quote,
        Policy.from_toml(toml),
        now=phala_sgx.now,
        endorsements=phala_sgx.endorsements,
    )
    assert isinstance(claims, SgxClaims)
    assert claims.mr_enclave.hex() == PHALA_MRENCLAVE


@pytest.mark.parametrize("mask", ["attributes_mask", "xfrm_mask", "misc_select_mask"])
def test_a_mask_without_its_value_is_refused_as_it_checks_nothing(
    phala_sgx: DcapSet, mask: str
) -> None:
    """``xfrm_mask = "0x3"`` alone read as "XFRM bits 0 and 1 checked", and checked nothing:
    the real quote passed whatever those bits held. Now a ConfigurationError naming both."""
    statuses = ("ConfigurationAndSWHardeningNeeded",)
    with pytest.raises(ConfigurationError, match=f"{mask} without {mask.removesuffix('_mask')}"):
        policy(PHALA_MRENCLAVE, *statuses, **{mask: "0xffff"})
    value = {mask.removesuffix("_mask"): "0x1", mask: "0xffff"}  # with its value: checked
    with pytest.raises(PolicyError):
        verify(phala_sgx, policy(PHALA_MRENCLAVE, *statuses, **value))


def test_kss_is_refused_when_attributes_are_left_out(automata_sgx: DcapSet) -> None:
    """ATTRIBUTES.KSS (bit 7) lets whoever creates the enclave choose its CONFIGID and CONFIGSVN,
    inputs the enclave may act on that MRENCLAVE does not cover (and the claims do not carry).
    With ``attributes`` left out only DEBUG was checked. No real quote here has KSS, so the
    check is shown on the real quote's verified claims with the bit set in them."""
    accepting = policy(AUTOMATA_MRENCLAVE, "SWHardeningNeeded")
    claims = verify(automata_sgx, accepting)
    assert claims.attributes == 0x05 and accepting.check(claims) == []
    kss = replace(claims, attributes=claims.attributes | 0x80)
    [violation] = accepting.check(kss)
    assert (violation.field, violation.expected, violation.actual) == (
        "attributes",
        "KSS clear",
        "KSS set",
    )
    assert violation.value == 0x85  # the raw ATTRIBUTES.FLAGS ride along
    assert str(violation) == "attributes: expected KSS clear, got KSS set"
    pinned = policy(AUTOMATA_MRENCLAVE, "SWHardeningNeeded", attributes="0x85")
    assert pinned.check(kss) == []  # given, attributes and their mask alone decide


def test_allowed_advisory_ids_limit_what_an_accepted_tcb_status_may_carry(
    phala_sgx: DcapSet,
) -> None:
    """Accepting a status such as ConfigurationAndSWHardeningNeeded accepted every advisory
    Intel lists with it, including ones published after the policy was written and never
    assessed. allowed_advisory_ids (optional) names those assessed; any other is a violation."""
    statuses = ("ConfigurationAndSWHardeningNeeded",)
    claims = verify(phala_sgx, policy(PHALA_MRENCLAVE, *statuses))
    assert claims.advisory_ids == ("INTEL-SA-00289", "INTEL-SA-00615")
    both = policy(PHALA_MRENCLAVE, *statuses, allowed_advisory_ids=list(claims.advisory_ids))
    assert verify(phala_sgx, both).advisory_ids == claims.advisory_ids
    one = policy(PHALA_MRENCLAVE, *statuses, allowed_advisory_ids=["INTEL-SA-00615"])
    with pytest.raises(PolicyError) as info:
        verify(phala_sgx, one)
    assert [(v.field, v.expected, v.actual) for v in info.value.violations] == [
        ("advisory_ids", "only INTEL-SA-00615", "INTEL-SA-00289")
    ]
    for bad in ("INTEL-SA-00615", [], [5]):
        with pytest.raises(ConfigurationError, match="allowed_advisory_ids"):
            policy(PHALA_MRENCLAVE, *statuses, allowed_advisory_ids=bad)


def test_a_measurement_given_as_bytes_not_a_set_is_refused(phala_sgx: DcapSet) -> None:
    """SgxPolicy(mr_enclave=...) takes a set of values. Given bytes, ``actual in allowed`` was
    a substring test: two measurements concatenated accepted any 32-byte window of them, and
    this real quote passed a policy whose bytes merely contained its MRENCLAVE."""
    real = bytes.fromhex(PHALA_MRENCLAVE)
    statuses = frozenset({"ConfigurationAndSWHardeningNeeded"})
    for wrong in (real, b"\x01" * 7 + real + b"\x02" * 25, PHALA_MRENCLAVE, frozenset({real[:31]})):
        with pytest.raises(ConfigurationError, match="mr_enclave"):
            SgxPolicy(mr_enclave=wrong, allowed_tcb_statuses=statuses)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="mr_signer"):
        SgxPolicy(
            mr_enclave=frozenset({real}),
            mr_signer=bytes.fromhex(PHALA_MRSIGNER),  # type: ignore[arg-type]
            allowed_tcb_statuses=statuses,
        )
    good = SgxPolicy(mr_enclave=frozenset({real}), allowed_tcb_statuses=statuses)
    assert verify(phala_sgx, good).mr_enclave == real


def test_allow_any_measurement_beside_a_measurement_is_refused(phala_sgx: DcapSet) -> None:
    """``mr_signer`` with ``allow_any_measurement = true`` skipped what mr_signer alone needs
    (isv_prod_id, min_isv_svn); the two contradict, as in [sev_snp] and [nitro]."""
    statuses = ["ConfigurationAndSWHardeningNeeded"]
    for pinned in ({"mr_signer": PHALA_MRSIGNER}, {"mr_enclave": PHALA_MRENCLAVE}):
        with pytest.raises(ConfigurationError, match="contradict"):
            SgxPolicy.from_mapping(
                {**pinned, "allow_any_measurement": True, "allowed_tcb_statuses": statuses}
            )
    any_code = {"allow_any_measurement": True, "allowed_tcb_statuses": statuses}
    assert verify(phala_sgx, SgxPolicy.from_mapping(any_code)).mr_signer.hex() == PHALA_MRSIGNER


# --- regression: with attributes left out, MODE64BIT, PROVISIONKEY, EINITTOKEN_KEY unchecked -


@pytest.mark.parametrize(
    ("flip", "named", "why"),
    [
        (0x04, "MODE64BIT set", "a 32-bit enclave: the measured code runs in another mode"),
        (0x10, "PROVISIONKEY clear", "the provisioning key is for Intel's provisioning enclaves"),
        (0x20, "EINITTOKEN_KEY clear", "the launch key is for the launch enclave alone"),
    ],
)
def test_attributes_left_out_require_an_ordinary_64_bit_enclave(
    automata_sgx: DcapSet, flip: int, named: str, why: str
) -> None:
    """ATTRIBUTES are not part of MRENCLAVE: whoever signs a SIGSTRUCT chooses them, so an
    enclave pinned by mr_enclave alone could be launched in 32-bit mode or with a key no
    application enclave needs. Every real quote here has 0x5 (INIT, MODE64BIT); the check is
    shown on the real quote's verified claims with one bit flipped in them."""
    accepting = policy(AUTOMATA_MRENCLAVE, "SWHardeningNeeded")
    claims = verify(automata_sgx, accepting)
    assert claims.attributes == 0x05 and accepting.check(claims) == []
    changed = replace(claims, attributes=claims.attributes ^ flip)
    [violation] = accepting.check(changed)
    assert (violation.field, violation.expected, violation.value) == (
        "attributes",
        named,
        changed.attributes,
    ), why
    pinned = policy(AUTOMATA_MRENCLAVE, "SWHardeningNeeded", attributes=f"{changed.attributes:#x}")
    assert pinned.check(changed) == []  # given, attributes and their mask alone decide
