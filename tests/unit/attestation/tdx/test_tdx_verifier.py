"""TdxVerifier on the real TDX sets (v4 and v5), and on negatives derived from them."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from blindai.attestation import Endorsements
from blindai.attestation.dcap import TCB_STATUSES
from blindai.attestation.tdx import TdxClaims, TdxPolicy, TdxVerifier
from blindai.attestation.tdx._layout import parse_tdx_quote
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

PHALA_MRTD = (
    "91eb2b44d141d4ece09f0c75c2c53d247a3c68edd7fafe8a"
    "3520c942a604a407de03ae6dc5f87f27428b2538873118b7"
)
PHALA_RTMRS = (
    "44c0197b39157fdd7a4dcc44767f9d6b0bb3977c7a8e347b8492f827fe9d9e5c48aca29b220b80b6a540cf994b9bc9c0",
    "0084452c01668329d4bc06acdf58a7205c26743304509973949e5619bf81a6a7aea8c323c173019b3093d54e579e9378",
    "d833feef2cd945148aa38ead2c53e9b7f138190aaaebfc551dccd829fc207aa3ba80b70870d7330733642e01d48c3132",
    "00" * 48,
)
PHALA_MRSEAM = (
    "5b38e33a6487958b72c3c12a938eaa5e3fd4510c51aeeab5"
    "8c7d5ecee41d7c436489d6c8e4f92f160b7cad34207b00c1"
)
PHALA_REPORT_DATA = (
    "9a9d48e7f6799642d3d1b34e1e5e1742d4bb02dd6ddd551862c1211d35c304f9"
    "eca3efdbb481601c163cf52493d6e44aed55d51ec39b7e518fadb92c2b523f20"
)
DCAP_RS_MRTD = (
    "935be7742dd89c6a4df6dba8353d89041ae0f052beef993b"
    "1e7f4524d3bc57650df20e5582158352e1240b3f1fed55d8"
)
SEPT_VE_DISABLE = 1 << 28
MRTD_AT = 48 + 136
SIGNATURE_AT = 48 + 584 + 4


def verify(dcap: DcapSet, policy: TdxPolicy, **changes: object) -> TdxClaims:
    args: dict[str, object] = {"now": dcap.now, "endorsements": dcap.endorsements}
    args.update(changes)
    return TdxVerifier.with_embedded_roots().verify(dcap.quote, policy, **args)  # type: ignore[arg-type]


#: the real v4 quote's kernel, command line and initrd (RTMR1, RTMR2), pinned beside MRTD
PHALA_BOOT = {"rtmr1": PHALA_RTMRS[1], "rtmr2": PHALA_RTMRS[2]}
UNPINNED_BOOT = {"allow_unpinned_rtmrs": True}


def policy(mr_td: str = PHALA_MRTD, *statuses: str, **more: object) -> TdxPolicy:
    boot = PHALA_BOOT if mr_td == PHALA_MRTD else UNPINNED_BOOT
    return TdxPolicy.from_mapping(
        {"mr_td": mr_td, "allowed_tcb_statuses": list(statuses or ["UpToDate"]), **boot, **more}
    )


def flip(data: bytes, offset: int, mask: int = 0x01) -> bytes:
    out = bytearray(data)
    out[offset] ^= mask
    return bytes(out)


# --- real sets ---------------------------------------------------------------------------


def test_phala_v4_is_up_to_date_and_accepted_by_the_default_policy(phala_v4: DcapSet) -> None:
    claims = verify(phala_v4, TdxPolicy.from_mapping({"mr_td": PHALA_MRTD, **PHALA_BOOT}))
    assert (claims.tcb_status, claims.advisory_ids) == ("UpToDate", ())
    assert claims.measurement == claims.mr_td == bytes.fromhex(PHALA_MRTD)
    rtmrs = (claims.rtmr0, claims.rtmr1, claims.rtmr2, claims.rtmr3)
    assert rtmrs == tuple(bytes.fromhex(r) for r in PHALA_RTMRS)
    assert claims.mr_seam == bytes.fromhex(PHALA_MRSEAM)
    assert claims.mr_signer_seam == bytes(48)
    assert claims.report_data == bytes.fromhex(PHALA_REPORT_DATA)
    assert claims.td_attributes == int.from_bytes(bytes.fromhex("0000001000000000"), "little")
    assert claims.xfam == int.from_bytes(bytes.fromhex("e702060000000000"), "little")
    assert claims.tee_tcb_svn == bytes.fromhex("06010300000000000000000000000000")
    assert (claims.tee_tcb_svn2, claims.mr_service_td) == (None, None)
    assert claims.quote_version == 4
    assert claims.debug is False
    assert claims.to_dict()["kind"] == "tdx"


def test_the_collaterals_evaluation_data_number_is_claimed_and_judged(
    phala_v4: DcapSet,
) -> None:
    """A server may serve collateral from before a TCB recovery that made its platform out of
    date, while that collateral is inside its validity window: a policy can ask for collateral
    of at least a given tcbEvaluationDataNumber (17 in this set's TCB Info and QE Identity)."""
    claims = verify(phala_v4, policy())
    assert claims.tcb_evaluation_data_number == 17
    assert claims.to_dict()["tcb_evaluation_data_number"] == 17
    assert verify(phala_v4, policy(min_tcb_evaluation_data_number=17)).mr_td == claims.mr_td
    with pytest.raises(PolicyError) as info:
        verify(phala_v4, policy(min_tcb_evaluation_data_number=18))
    assert [(v.field, v.expected, v.actual) for v in info.value.violations] == [
        ("tcb_evaluation_data_number", ">= 18", "17")
    ]


def test_dcap_rs_v4_is_out_of_date_with_its_advisories(dcap_rs_v4: DcapSet) -> None:
    claims = verify(dcap_rs_v4, policy(DCAP_RS_MRTD, "OutOfDate"))
    assert claims.tcb_status == "OutOfDate"
    assert claims.advisory_ids == ("INTEL-SA-00960", "INTEL-SA-00982", "INTEL-SA-00986")
    assert claims.mr_td == bytes.fromhex(DCAP_RS_MRTD)
    assert claims.report_data == bytes(64)
    assert claims.tee_tcb_svn == bytes.fromhex("04010700000000000000000000000000")


def test_default_policy_refuses_out_of_date(dcap_rs_v4: DcapSet) -> None:
    with pytest.raises(PolicyError) as info:
        verify(dcap_rs_v4, TdxPolicy.from_mapping({"mr_td": DCAP_RS_MRTD, **UNPINNED_BOOT}))
    assert [(v.field, v.actual) for v in info.value.violations] == [("tcb_status", "OutOfDate")]


@pytest.mark.parametrize("fixture", ["phala_v5", "go_tdx_guest"])
def test_a_platform_matching_no_tcb_level_is_refused(
    request: pytest.FixtureRequest, fixture: str
) -> None:
    dcap = request.getfixturevalue(fixture)
    every_status = sorted(TCB_STATUSES)
    permissive = TdxPolicy.from_mapping(
        {"allow_any_measurement": True, "allowed_tcb_statuses": every_status}
    )
    with pytest.raises(CollateralError, match="No matching TCB level"):
        verify(dcap, permissive)


def test_the_v5_quote_parses_as_a_td_report_15(phala_v5: DcapSet) -> None:
    envelope, report = parse_tdx_quote(phala_v5.quote)
    assert (envelope.header.version, envelope.body_type) == (5, 3)
    assert report.mr_td.hex().startswith("273828c46252fcbdd8ad2dd907130222")
    assert report.tee_tcb_svn2 == bytes.fromhex("0d010300000000000000000000000000")
    assert report.mr_service_td == bytes(48)
    assert report.report_data[32:] == bytes(32)


def test_the_go_tdx_guest_quote_parses_despite_its_trailing_bytes(go_tdx_guest: DcapSet) -> None:
    envelope, report = parse_tdx_quote(go_tdx_guest.quote)
    assert len(go_tdx_guest.quote) - len(envelope.quote) == 39
    assert report.mr_td.hex().startswith("6363b8043668a3ad953278e10389574d")
    assert report.rtmrs[3] == bytes(48)


def test_zero_padding_after_the_quote_is_tolerated(phala_v4: DcapSet, dcap_rs_v4: DcapSet) -> None:
    assert len(phala_v4.quote) - len(parse_tdx_quote(phala_v4.quote)[0].quote) == 70
    assert len(dcap_rs_v4.quote) - len(parse_tdx_quote(dcap_rs_v4.quote)[0].quote) == 3065


# --- policy ------------------------------------------------------------------------------


def test_wrong_measurements_are_all_reported(phala_v4: DcapSet) -> None:
    wrong = TdxPolicy.from_mapping(
        {
            "mr_td": "00" * 48,
            "rtmr0": "11" * 48,
            "rtmr3": "00" * 48,
            "mr_seam": "22" * 48,
            **PHALA_BOOT,
        }
    )
    with pytest.raises(PolicyError) as info:
        verify(phala_v4, wrong)
    assert [v.field for v in info.value.violations] == ["mr_td", "rtmr0", "mr_seam"]


def test_matching_rtmrs_and_attributes_are_accepted(phala_v4: DcapSet) -> None:
    exact = TdxPolicy.from_mapping(
        {
            "mr_td": PHALA_MRTD,
            **{f"rtmr{i}": r for i, r in enumerate(PHALA_RTMRS)},
            "mr_seam": PHALA_MRSEAM,
            "td_attributes": "0x10000000",
            "xfam": "0x602e7",
        }
    )
    assert verify(phala_v4, exact).mr_td == bytes.fromhex(PHALA_MRTD)


HOST_SET = ("mr_config_id", "mr_owner", "mr_owner_config")


@pytest.mark.parametrize("fixture", ["phala_v4", "dcap_rs_v4"])
def test_host_set_registers_of_the_real_quotes_are_pinned(
    request: pytest.FixtureRequest, fixture: str
) -> None:
    dcap = request.getfixturevalue(fixture)
    mr_td, statuses = (
        (PHALA_MRTD, ["UpToDate"]) if fixture == "phala_v4" else (DCAP_RS_MRTD, ["OutOfDate"])
    )
    _, report = parse_tdx_quote(dcap.quote)
    registers = {k: getattr(report, k).hex() for k in HOST_SET}
    assert registers == dict.fromkeys(HOST_SET, "00" * 48)  # as the vectors' README says
    claims = verify(dcap, policy(mr_td, *statuses, **registers))
    assert {k: getattr(claims, k).hex() for k in HOST_SET} == registers


def test_wrong_host_set_registers_are_all_reported(phala_v4: DcapSet) -> None:
    wrong = {"mr_config_id": "11" * 48, "mr_owner": "22" * 48, "mr_owner_config": "33" * 48}
    with pytest.raises(PolicyError) as info:
        verify(phala_v4, policy("00" * 48, **wrong, rtmr3="44" * 48))
    violations = [(v.field, v.expected, v.actual) for v in info.value.violations]
    assert violations == [
        ("mr_td", "00" * 48, PHALA_MRTD),
        ("rtmr3", "44" * 48, "00" * 48),
        ("mr_config_id", "11" * 48, "00" * 48),
        ("mr_owner", "22" * 48, "00" * 48),
        ("mr_owner_config", "33" * 48, "00" * 48),
    ]


def test_one_wrong_host_set_register_is_enough_to_refuse(phala_v4: DcapSet) -> None:
    with pytest.raises(PolicyError) as info:
        verify(phala_v4, policy(mr_config_id="00" * 47 + "01", mr_owner="00" * 48))
    assert [v.field for v in info.value.violations] == ["mr_config_id"]


# --- authenticity ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("offset", "error"),
    [
        (10, SignatureError),  # header
        (40, SignatureError),  # header: user data
        (MRTD_AT, SignatureError),  # body: MRTD
        (48 + 520, SignatureError),  # body: report data
        (SIGNATURE_AT + 5, SignatureError),  # quote signature
        (SIGNATURE_AT + 128 + 6 + 64, SignatureError),  # QE report inside certification data
        (20, EvidenceError),  # QE vendor ID
        (4, EvidenceError),  # TEE type
    ],
)
def test_a_flipped_bit_is_refused(phala_v4: DcapSet, offset: int, error: type) -> None:
    with pytest.raises(error):
        verify(replace(phala_v4, quote=flip(phala_v4.quote, offset)), policy())


def test_a_flipped_bit_in_the_pck_certificate_breaks_the_chain(phala_v4: DcapSet) -> None:
    leaf = phala_v4.quote.index(b"-----BEGIN CERTIFICATE-----")
    with pytest.raises(ChainError):
        verify(replace(phala_v4, quote=flip(phala_v4.quote, leaf + 400)), policy())


def test_an_edited_root_in_the_quote_is_not_pinned(phala_v4: DcapSet) -> None:
    end = phala_v4.quote.rindex(b"-----END CERTIFICATE-----")
    at = phala_v4.quote.rindex(b"\n", 0, end - 1) - 12
    edited = bytearray(phala_v4.quote)
    edited[at] = ord("B") if edited[at] == ord("A") else ord("A")
    with pytest.raises(ChainError, match="not pinned"):
        verify(replace(phala_v4, quote=bytes(edited)), policy())


@pytest.mark.parametrize("when", ["2025-06-19T10:20:00Z", "2025-07-19T12:00:00Z"])
def test_a_time_outside_the_collateral_window_is_a_collateral_error(
    phala_v4: DcapSet, when: str
) -> None:
    with pytest.raises(CollateralError):
        verify(phala_v4, policy(), now=utc(when))


def test_collateral_of_another_set_is_refused(
    phala_v4: DcapSet, dcap_rs_v4: DcapSet, phala_sgx: DcapSet
) -> None:
    with pytest.raises(CollateralError):
        verify(phala_v4, policy(), endorsements=dcap_rs_v4.endorsements)
    with pytest.raises(CollateralError):  # the SGX set's collateral, same window
        verify(phala_v4, policy(), endorsements=phala_sgx.endorsements)


def test_tcb_info_of_another_fmspc_is_refused(phala_v4: DcapSet, phala_sgx: DcapSet) -> None:
    other = json.loads(phala_sgx.collateral)
    mixed = json.loads(phala_v4.collateral)
    mixed["tcb_info"], mixed["tcb_info_signature"] = other["tcb_info"], other["tcb_info_signature"]
    with pytest.raises(CollateralError):
        verify(phala_v4, policy(), endorsements=Endorsements(collateral=json.dumps(mixed).encode()))


@pytest.mark.parametrize("offset", [10, 48 + 6 + 136, 48 + 6 + 600, 48 + 6 + 648 + 4 + 5])
def test_the_v5_signed_region_covers_header_body_type_and_body(
    phala_v5: DcapSet, offset: int
) -> None:
    with pytest.raises(SignatureError):
        verify(replace(phala_v5, quote=flip(phala_v5.quote, offset)), policy())


def test_missing_collateral_fails_closed(phala_v4: DcapSet) -> None:
    with pytest.raises(CollateralUnavailable):
        verify(phala_v4, policy(), endorsements=None)


# --- parsing -----------------------------------------------------------------------------


@pytest.mark.parametrize("length", [0, 47, 48, 600, 632, 636, 2000, 4900])
def test_a_truncated_quote_is_an_evidence_error(phala_v4: DcapSet, length: int) -> None:
    with pytest.raises(EvidenceError):
        verify(replace(phala_v4, quote=phala_v4.quote[:length]), policy())


@pytest.mark.parametrize("version", [3, 6, 0x104])
def test_an_unknown_version_is_an_evidence_error(phala_v4: DcapSet, version: int) -> None:
    quote = version.to_bytes(2, "little") + phala_v4.quote[2:]
    with pytest.raises(EvidenceError):
        verify(replace(phala_v4, quote=quote), policy())


def test_an_unknown_v5_body_type_is_an_evidence_error(phala_v5: DcapSet) -> None:
    quote = phala_v5.quote[:48] + (4).to_bytes(2, "little") + phala_v5.quote[50:]
    with pytest.raises(EvidenceError, match="body type"):
        verify(replace(phala_v5, quote=quote), policy())


def test_an_sgx_quote_is_refused_by_the_tdx_verifier(phala_sgx: DcapSet) -> None:
    with pytest.raises(EvidenceError, match="SGX"):
        verify(phala_sgx, TdxPolicy(allow_any_measurement=True))


def test_the_policy_must_be_a_tdx_policy(phala_v4: DcapSet) -> None:
    with pytest.raises(ConfigurationError):
        TdxVerifier.with_embedded_roots().verify(phala_v4.quote, None, now=phala_v4.now)


def test_a_verifier_without_roots_is_refused() -> None:
    with pytest.raises(ConfigurationError):
        TdxVerifier(trusted_roots=[])


def test_the_package_exports_exactly_verifier_policy_and_claims() -> None:
    import blindai.attestation.tdx as tdx

    assert sorted(tdx.__all__) == ["TdxClaims", "TdxPolicy", "TdxVerifier"]
    assert all(getattr(tdx, name) for name in tdx.__all__)


def test_top_level_verify_uses_the_embedded_roots(phala_v4: DcapSet) -> None:
    from blindai.attestation import EvidenceKind, Policy
    from blindai.attestation import verify as verify_kind

    claims = verify_kind(
        EvidenceKind.TDX,
        phala_v4.quote,
        Policy.from_toml(
            f'[tdx]\nmr_td = "{PHALA_MRTD}"\n'
            f'rtmr1 = "{PHALA_RTMRS[1]}"\nrtmr2 = "{PHALA_RTMRS[2]}"\n'
        ),
        now=phala_v4.now,
        endorsements=phala_v4.endorsements,
    )
    assert isinstance(claims, TdxClaims)
    assert claims.mr_td.hex() == PHALA_MRTD


# --- regression: a policy pinning MRTD alone pinned only the firmware ---------------------


def test_mr_td_alone_is_refused_as_it_pins_no_kernel_initrd_or_command_line(
    phala_v4: DcapSet,
) -> None:
    """MRTD measures the TD firmware only; the kernel, its command line and the initrd are in
    RTMR1 and RTMR2. ``mr_td`` alone (README's example added only rtmr0, the firmware's
    configuration) accepted this real quote whatever OS it booted: now a ConfigurationError
    unless rtmr1 and rtmr2 are pinned, or ``allow_unpinned_rtmrs = true`` says so."""
    for data in ({"mr_td": PHALA_MRTD}, {"mr_td": PHALA_MRTD, "rtmr0": PHALA_RTMRS[0]}):
        with pytest.raises(ConfigurationError, match="rtmr1 and rtmr2"):
            TdxPolicy.from_mapping(data)
    with pytest.raises(ConfigurationError, match="rtmr1 and rtmr2"):
        TdxPolicy.from_mapping({"mr_td": PHALA_MRTD, "rtmr1": PHALA_RTMRS[1]})
    pinned = {"mr_td": PHALA_MRTD, "rtmr1": PHALA_RTMRS[1], "rtmr2": PHALA_RTMRS[2]}
    assert verify(phala_v4, TdxPolicy.from_mapping(pinned)).rtmr2.hex() == PHALA_RTMRS[2]
    with pytest.raises(PolicyError) as info:  # another initrd or command line
        verify(phala_v4, TdxPolicy.from_mapping({**pinned, "rtmr2": "00" * 48}))
    assert [(v.field, v.actual) for v in info.value.violations] == [("rtmr2", PHALA_RTMRS[2])]
    opt_in = TdxPolicy.from_mapping({"mr_td": PHALA_MRTD, "allow_unpinned_rtmrs": True})
    assert verify(phala_v4, opt_in).mr_td.hex() == PHALA_MRTD
    with pytest.raises(ConfigurationError, match="true or false"):
        TdxPolicy.from_mapping({"mr_td": PHALA_MRTD, "allow_unpinned_rtmrs": "yes"})


# --- regression: with td_attributes left out, only DEBUG was checked -----------------------


@pytest.mark.parametrize(
    ("bits", "named", "why"),
    [
        (1 << 29, "MIGRATABLE", "MIGRATABLE: a migration TD may move the TD and its memory"),
        (0, "SEPT_VE_DISABLE", "SEPT_VE_DISABLE clear: the host may inject #VE on EPT faults"),
        (1 << 4, "HGS_PLUS_PROF", "a TUD bit (TD under debug or profiling) other than DEBUG"),
        (1 << 7, "bit 7", "a TUD bit (TD under debug or profiling) other than DEBUG"),
    ],
)
def test_td_attributes_left_out_still_refuse_what_weakens_the_td(
    phala_v4: DcapSet, bits: int, named: str, why: str
) -> None:
    """The policy refuses these itself, whatever dcap-qvl does (0.7 refuses them too, with a
    plain VerificationError; the bound <0.8 is all that kept them out). No real quote has them,
    so the check is shown on the real v4 quote's verified claims with the bits changed in
    them (no signature claimed to cover that)."""
    claims = verify(phala_v4, policy())
    assert claims.td_attributes == SEPT_VE_DISABLE
    changed = replace(claims, td_attributes=bits if bits == 0 else SEPT_VE_DISABLE | bits)
    violations = [(v.field, v.expected, v.actual, v.value) for v in policy().check(changed)]
    wrong = "clear" if bits == 0 else "set"
    right = "set" if bits == 0 else "clear"
    expected = ("td_attributes", f"{named} {right}", f"{named} {wrong}", changed.td_attributes)
    assert violations == [expected], why
    # pinned explicitly, the policy's own value and mask decide
    explicit = policy(td_attributes=f"{changed.td_attributes:#x}")
    assert explicit.check(changed) == [], why
    assert policy(td_attributes="0x0", td_attributes_mask="0x0").check(changed) == []


@pytest.mark.parametrize("bits", [1 << 30, 1 << 31, 1 << 63])
def test_td_attributes_left_out_accept_the_tds_own_cpu_features(
    phala_v4: DcapSet, bits: int
) -> None:
    """PKS, KL and PERFMON let the TD use CPU features; they give the host nothing."""
    claims = verify(phala_v4, policy())
    assert policy().check(replace(claims, td_attributes=SEPT_VE_DISABLE | bits)) == []


@pytest.mark.parametrize("mask", ["td_attributes_mask", "xfam_mask"])
def test_a_tdx_mask_without_its_value_is_refused_as_it_checks_nothing(
    phala_v4: DcapSet, mask: str
) -> None:
    with pytest.raises(ConfigurationError, match=f"{mask} without {mask.removesuffix('_mask')}"):
        policy(**{mask: "0xffff"})
    with pytest.raises(PolicyError):  # with its value, the real quote's bits are checked
        verify(phala_v4, policy(**{mask.removesuffix("_mask"): "0x1", mask: "0xffff"}))


def test_a_bound_service_td_is_refused_unless_pinned(phala_v4: DcapSet, phala_v5: DcapSet) -> None:
    """A TD report 1.5 (quote v5) carries MRSERVICETD: the measurement of service TDs bound to
    the TD (a migration TD among them), which may access its state. The policy ignored it. The
    real v5 quote has it zero (parsed: its TCB matches no level, so it does not verify here);
    the check is shown on the real v4 quote's verified claims given a v5 body's fields."""
    _, report = parse_tdx_quote(phala_v5.quote)
    assert report.mr_service_td == bytes(48)
    v4 = verify(phala_v4, policy())
    assert v4.mr_service_td is None and policy().check(v4) == []
    as_v5 = replace(v4, quote_version=5, mr_service_td=bytes(48), tee_tcb_svn2=bytes(16))
    assert policy().check(as_v5) == []
    bound = replace(as_v5, mr_service_td=b"\x5a" * 48)
    violations = [(v.field, v.expected, v.actual) for v in policy().check(bound)]
    assert violations == [("mr_service_td", "00" * 48, "5a" * 48)]
    assert policy(mr_service_td="5a" * 48).check(bound) == []
    assert [v.field for v in policy(mr_service_td="5a" * 48).check(as_v5)] == ["mr_service_td"]
    absent = [(v.field, v.actual) for v in policy(mr_service_td="5a" * 48).check(v4)]
    assert absent == [("mr_service_td", "absent (TD report 1.0)")]


def test_allowed_advisory_ids_on_an_out_of_date_td(dcap_rs_v4: DcapSet) -> None:
    assessed = ["INTEL-SA-00960", "INTEL-SA-00982"]
    with pytest.raises(PolicyError) as info:
        verify(dcap_rs_v4, policy(DCAP_RS_MRTD, "OutOfDate", allowed_advisory_ids=assessed))
    assert [(v.field, v.actual) for v in info.value.violations] == [
        ("advisory_ids", "INTEL-SA-00986")
    ]
    every = [*assessed, "INTEL-SA-00986"]
    claims = verify(dcap_rs_v4, policy(DCAP_RS_MRTD, "OutOfDate", allowed_advisory_ids=every))
    assert claims.tcb_status == "OutOfDate"


def test_registers_given_as_bytes_not_sets_are_refused(phala_v4: DcapSet) -> None:
    real = {k: frozenset({bytes.fromhex(v)}) for k, v in PHALA_BOOT.items()}
    mr_td = bytes.fromhex(PHALA_MRTD)
    for wrong in (mr_td, b"\x00" * 3 + mr_td, PHALA_MRTD, frozenset()):
        with pytest.raises(ConfigurationError, match="mr_td"):
            TdxPolicy(mr_td=wrong, **real)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="rtmr2"):
        TdxPolicy(mr_td=frozenset({mr_td}), rtmr1=real["rtmr1"], rtmr2=bytes(48))  # type: ignore[arg-type]
    assert verify(phala_v4, TdxPolicy(mr_td=frozenset({mr_td}), **real)).mr_td == mr_td


def test_allow_any_measurement_beside_mr_td_is_refused(phala_v4: DcapSet) -> None:
    """``mr_td`` with ``allow_any_measurement = true`` passed as a pinned policy while skipping
    what a pinned one must have (rtmr1, rtmr2): the two contradict, as in [sev_snp] and
    [nitro]. The real quote is then verified by either alone."""
    with pytest.raises(ConfigurationError, match="contradict"):
        TdxPolicy.from_mapping({"mr_td": PHALA_MRTD, "allow_any_measurement": True})
    assert verify(phala_v4, TdxPolicy.from_mapping({"allow_any_measurement": True}))
    assert verify(phala_v4, policy())


# --- regression: the typed policy took what from_mapping refuses ---------------------------


@pytest.mark.parametrize(
    ("mask", "value"), [("td_attributes_mask", 0x10000000), ("xfam_mask", 0xE7)]
)
def test_a_typed_mask_without_its_value_is_refused_as_in_toml(
    phala_v4: DcapSet, mask: str, value: int
) -> None:
    """``TdxPolicy(..., xfam_mask=...)`` with no ``xfam`` checked nothing, as the TOML key alone
    did before 2fb09ef refused it there; the typed policy took it silently."""
    pinned = {k: frozenset({bytes.fromhex(v)}) for k, v in PHALA_BOOT.items()}
    pinned["mr_td"] = frozenset({bytes.fromhex(PHALA_MRTD)})
    with pytest.raises(ConfigurationError, match=f"{mask} without {mask[:-5]}"):
        TdxPolicy(**pinned, **{mask: value})  # type: ignore[arg-type]
    given = {mask[:-5]: verify(phala_v4, policy()).to_dict()[mask[:-5]], mask: value}
    assert verify(phala_v4, TdxPolicy(**pinned, **given))  # type: ignore[arg-type]


def test_typed_advisory_ids_as_a_string_are_refused(dcap_rs_v4: DcapSet) -> None:
    """A string was taken, and ``advisory in allowed`` was then a substring test."""
    pinned = {"mr_td": frozenset({bytes.fromhex(DCAP_RS_MRTD)}), "allow_unpinned_rtmrs": True}
    for wrong in ("INTEL-SA-00960 INTEL-SA-00982 INTEL-SA-00986", frozenset({""}), [1]):
        with pytest.raises(ConfigurationError, match="allowed_advisory_ids"):
            TdxPolicy(  # type: ignore[arg-type]
                **pinned,
                allowed_tcb_statuses=frozenset({"OutOfDate"}),
                allowed_advisory_ids=wrong,
            )
    every = frozenset({"INTEL-SA-00960", "INTEL-SA-00982", "INTEL-SA-00986"})
    typed = TdxPolicy(
        **pinned,  # type: ignore[arg-type]
        allowed_tcb_statuses=frozenset({"OutOfDate"}),
        allowed_advisory_ids=every,
    )
    assert verify(dcap_rs_v4, typed).tcb_status == "OutOfDate"


@pytest.mark.parametrize("flag", ["allow_debug", "allow_unpinned_rtmrs", "allow_any_measurement"])
def test_typed_flags_must_be_booleans(flag: str) -> None:
    """``TdxPolicy(mr_td=..., allow_unpinned_rtmrs="false")`` took a truthy string: the rtmr1
    and rtmr2 requirement (a729671) was skipped, as allow_debug="false" allowed debug TDs."""
    with pytest.raises(ConfigurationError, match=f"{flag} must be true or false"):
        TdxPolicy(mr_td=frozenset({bytes.fromhex(PHALA_MRTD)}), **{flag: "false"})  # type: ignore[arg-type]


# --- XFAM: no default check (a decision, documented), named bits when pinned ---------------

#: XFAM of each real TDX quote: four platforms, four values (FP, SSE, AVX, AVX-512, AMX and,
#: varying, PKRU, CET_U, CET_S)
REAL_XFAM = {
    "phala-dcap-qvl-tdx-v4": 0x602E7,
    "phala-dcap-qvl-tdx-v5-outdated": 0x618E7,
    "automata-dcap-rs-tdx-v4": 0x600E7,
    "go-tdx-guest-spr-e4": 0x61AE7,
}


@pytest.mark.parametrize("name", sorted(REAL_XFAM))
def test_the_real_quotes_xfam(evidence_dir: Path, name: str) -> None:
    _, report = parse_tdx_quote((evidence_dir / "tdx" / name / "quote.bin").read_bytes())
    assert report.xfam == REAL_XFAM[name]


@pytest.mark.parametrize(("bit", "named"), [(8, "PT"), (14, "ULI"), (15, "LBR")])
def test_xfam_left_out_is_not_checked_and_pinned_names_the_features(
    phala_v4: DcapSet, bit: int, named: str
) -> None:
    """XFAM lists the XSAVE features the TD itself may use; the TDX module keeps their state
    in the TD, out of the host's reach, so no bit weakens the TD's isolation and no default
    is checked (the real quotes' values differ with each CPU). Pinned, a change is refused,
    named: shown on the real v4 quote's verified claims with a feature added."""
    claims = verify(phala_v4, policy())
    changed = replace(claims, xfam=claims.xfam | 1 << bit)
    assert policy().check(changed) == []
    pinned = policy(xfam=f"{claims.xfam:#x}")
    assert pinned.check(claims) == []
    assert [(str(v), v.value) for v in pinned.check(changed)] == [
        (f"xfam: expected {named} clear, got {named} set", changed.xfam)
    ]
