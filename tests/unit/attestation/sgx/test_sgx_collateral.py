"""DCAP collateral: parsing, PCS files and BlindAI 0.6 maps, and dcap-qvl error mapping."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import pytest

from blindai.attestation import Endorsements
from blindai.attestation.dcap import (
    collateral_from_blindai_v06,
    collateral_from_pcs,
    collateral_to_blindai_v06,
    parse_collateral,
)
from blindai.attestation.dcap._collateral import _signed_response
from blindai.attestation.sgx import SgxPolicy, SgxVerifier
from blindai.errors import (
    CollateralError,
    EvidenceError,
    SignatureError,
)
from tests.unit.attestation.dcap_sets import DcapSet
from tests.unit.attestation.pcs_fakes import BLINDAI_V06_COLLATERAL_KEYS


def test_pcs_files_rebuild_the_phala_collateral_exactly(
    evidence_dir: Path, phala_sgx: DcapSet
) -> None:
    derived = evidence_dir / "sgx-dcap" / "phala-dcap-qvl-sgx" / "derived"
    rebuilt = collateral_from_pcs(
        tcb_info=(derived / "tcb_info.json").read_bytes(),
        qe_identity=(derived / "qe_identity.json").read_bytes(),
        pck_crl=(derived / "pck_crl.der").read_bytes(),
        root_ca_crl=(derived / "root_ca_crl.der").read_bytes(),
        tcb_signing_chain=(derived / "tcb_info_issuer_chain.pem").read_bytes(),
        pck_crl_issuer_chain=(derived / "pck_crl_issuer_chain.pem").read_bytes(),
    )
    assert parse_collateral(rebuilt) == parse_collateral(phala_sgx.collateral)
    assert json.loads(rebuilt) == json.loads(phala_sgx.collateral)


def test_collateral_json_round_trips(phala_sgx: DcapSet) -> None:
    parsed = parse_collateral(phala_sgx.collateral)
    assert parse_collateral(parsed.to_json()) == parsed
    assert parsed.to_dcap_qvl().tcb_info == parsed.tcb_info


def test_blindai_06_map_round_trips_and_has_the_06_shape(phala_sgx: DcapSet) -> None:
    served = collateral_to_blindai_v06(phala_sgx.collateral, phala_sgx.quote)
    assert set(served) == BLINDAI_V06_COLLATERAL_KEYS
    assert served["version"] == 3  # an int: BlindAI 0.6.3's client type-checks it
    assert all(isinstance(v, str) for k, v in served.items() if k != "version")
    assert served["pck_crl"].startswith("-----BEGIN X509 CRL-----")
    assert served["pck_certificate"].count("BEGIN CERTIFICATE") == 1
    assert served["pck_signing_chain"].count("BEGIN CERTIFICATE") == 2
    assert set(json.loads(served["tcb_info"])) == {"tcbInfo", "signature"}
    assert set(json.loads(served["qe_identity"])) == {"enclaveIdentity", "signature"}
    back = collateral_from_blindai_v06(served)
    assert parse_collateral(back) == parse_collateral(phala_sgx.collateral)


def test_a_quote_verifies_with_collateral_from_a_blindai_06_map(phala_sgx: DcapSet) -> None:
    served = collateral_to_blindai_v06(phala_sgx.collateral, phala_sgx.quote)
    claims = SgxVerifier.with_embedded_roots().verify(
        phala_sgx.quote,
        SgxPolicy(
            allow_any_measurement=True,
            allowed_tcb_statuses=frozenset({"ConfigurationAndSWHardeningNeeded"}),
        ),
        now=phala_sgx.now,
        endorsements=Endorsements(collateral=collateral_from_blindai_v06(served)),
    )
    assert claims.tcb_status == "ConfigurationAndSWHardeningNeeded"


def test_a_blindai_06_map_with_a_tampered_tcb_info_does_not_verify(phala_sgx: DcapSet) -> None:
    served = collateral_to_blindai_v06(phala_sgx.collateral, phala_sgx.quote)
    tampered = served["tcb_info"].replace('"pceId":"0000"', '"pceId":"0001"')
    assert tampered != served["tcb_info"]
    served["tcb_info"] = tampered
    with pytest.raises(SignatureError):
        SgxVerifier.with_embedded_roots().verify(
            phala_sgx.quote,
            SgxPolicy(allow_any_measurement=True),
            now=phala_sgx.now,
            endorsements=Endorsements(collateral=collateral_from_blindai_v06(served)),
        )


@pytest.mark.parametrize(
    "change",
    [
        lambda m: m.pop("pck_crl"),
        lambda m: m.update(extra="x"),
        lambda m: m.update(pck_crl=b"bytes"),
        lambda m: m.update(pck_crl="not a crl"),
        lambda m: m.update(tcb_info='{"tcbInfo": {}}'),
        lambda m: m.update(qe_identity='{"signature": "00"}'),
        lambda m: m.update(tcb_info="not json"),
        lambda m: m.update(tcb_info="[" * 100_000),  # past the JSON parser's recursion limit
    ],
)
def test_a_bad_blindai_06_map_is_a_collateral_error(phala_sgx: DcapSet, change: object) -> None:
    served = collateral_to_blindai_v06(phala_sgx.collateral, phala_sgx.quote)
    change(served)  # type: ignore[operator]
    with pytest.raises(CollateralError):
        collateral_from_blindai_v06(served)


@pytest.mark.parametrize("served", [5, None, [["pck_crl"]], "pck_crl", b"pck_crl", 1.5])
def test_a_blindai_06_answer_that_is_no_map_is_a_collateral_error(served: object) -> None:
    """A server's /collateral answer decoded to an integer, null or a list of lists raised
    TypeError (set() of it): a traceback in blindai attest."""
    with pytest.raises(CollateralError, match=r"a BlindAI 0\.6 collateral map has keys"):
        collateral_from_blindai_v06(served)


def test_crls_may_be_der_pem_or_hex(phala_sgx: DcapSet) -> None:
    served = collateral_to_blindai_v06(phala_sgx.collateral, phala_sgx.quote)
    expected = parse_collateral(phala_sgx.collateral)
    served["pck_crl"] = expected.pck_crl.hex()
    assert parse_collateral(collateral_from_blindai_v06(served)).pck_crl == expected.pck_crl


@pytest.mark.parametrize(
    "change",
    [
        lambda d: d.update(pck_crl="zz"),
        lambda d: d.update(extra="x"),
        lambda d: d.update(tcb_info=3),
        lambda d: d.update(tcb_info="{}"),
        lambda d: d.update(pck_crl="00"),
        lambda d: d.update(tcb_info="[" * 100_000 + "]" * 100_000),
    ],
)
def test_malformed_collateral_parts_are_collateral_errors(
    phala_sgx: DcapSet, change: object
) -> None:
    doc = json.loads(phala_sgx.collateral)
    change(doc)  # type: ignore[operator]
    with pytest.raises(CollateralError):
        parse_collateral(json.dumps(doc).encode()).windows()


def test_an_explicit_null_pck_certificate_chain_is_ignored(phala_sgx: DcapSet) -> None:
    doc = json.loads(phala_sgx.collateral)
    doc["pck_certificate_chain"] = None
    assert parse_collateral(json.dumps(doc).encode()) == parse_collateral(phala_sgx.collateral)


def test_a_quote_without_a_chain_gives_no_06_map(phala_sgx: DcapSet) -> None:
    with pytest.raises(EvidenceError):
        collateral_to_blindai_v06(phala_sgx.collateral, phala_sgx.quote[:500])


def test_a_tampered_pck_crl_is_a_signature_error(phala_sgx: DcapSet) -> None:
    doc = json.loads(phala_sgx.collateral)
    crl = bytearray.fromhex(doc["pck_crl"])
    crl[-5] ^= 1  # inside the CRL signature
    doc["pck_crl"] = crl.hex()
    with pytest.raises(SignatureError):
        SgxVerifier.with_embedded_roots().verify(
            phala_sgx.quote,
            SgxPolicy(allow_any_measurement=True),
            now=phala_sgx.now,
            endorsements=Endorsements(collateral=json.dumps(doc).encode()),
        )


@pytest.mark.parametrize(
    "body,member,signature",
    [
        ('{"tcbInfo":{"a":[1,2]},"signature":"ab"}', '{"a":[1,2]}', "ab"),
        (' {\n "signature" : "cd" ,\t"tcbInfo" : {"b": "x}"} }\n', '{"b": "x}"}', "cd"),
    ],
)
def test_signed_response_keeps_the_exact_text(body: str, member: str, signature: str) -> None:
    assert _signed_response(body, ("tcbInfo",)) == (member, bytes.fromhex(signature))


@pytest.mark.parametrize(
    "body",
    [
        "",
        "[]",
        "{",
        '{"tcbInfo":{}',
        '{"tcbInfo":{}}',
        '{"tcbInfo":{},"signature":1}',
        '{"tcbInfo":{},"signature":"a"}x',
        b"\xff\xfe",
    ],
)
def test_signed_response_rejects_malformed_bodies(body: str | bytes) -> None:
    with pytest.raises(CollateralError):
        _signed_response(body, ("tcbInfo",))


def test_the_evaluation_data_number_is_the_lower_of_tcb_info_and_qe_identity(
    phala_sgx: DcapSet,
) -> None:
    collateral = parse_collateral(phala_sgx.collateral)
    assert collateral.evaluation_data_number() == 17
    lower = json.loads(collateral.qe_identity) | {"tcbEvaluationDataNumber": 16}
    assert replace(collateral, qe_identity=json.dumps(lower)).evaluation_data_number() == 16
    for bad in (None, True, "17", -1, 1 << 32):
        edited = json.loads(collateral.tcb_info) | {"tcbEvaluationDataNumber": bad}
        with pytest.raises(CollateralError, match="TCB Info's tcbEvaluationDataNumber"):
            replace(collateral, tcb_info=json.dumps(edited)).evaluation_data_number()
    gone = {k: v for k, v in json.loads(collateral.qe_identity).items() if k[:3] != "tcb"}
    with pytest.raises(CollateralError, match="QE Identity has no readable"):
        replace(collateral, qe_identity=json.dumps(gone)).evaluation_data_number()


def test_next_update_is_the_earliest(phala_sgx: DcapSet) -> None:
    expected = datetime(2025, 7, 19, 10, 1, 18, tzinfo=timezone.utc)  # the QE identity's
    assert parse_collateral(phala_sgx.collateral).next_update() == expected


def test_a_separate_qe_identity_issuer_chain_is_kept(evidence_dir: Path) -> None:
    derived = evidence_dir / "sgx-dcap" / "phala-dcap-qvl-sgx" / "derived"
    rebuilt = collateral_from_pcs(
        tcb_info=(derived / "tcb_info.json").read_bytes(),
        qe_identity=(derived / "qe_identity.json").read_bytes(),
        pck_crl=(derived / "pck_crl.der").read_bytes(),
        root_ca_crl=(derived / "root_ca_crl.der").read_bytes(),
        tcb_signing_chain=(derived / "tcb_info_issuer_chain.pem").read_bytes(),
        pck_crl_issuer_chain=(derived / "pck_crl_issuer_chain.pem").read_bytes(),
        qe_identity_issuer_chain=b"QE chain",
    )
    parsed = parse_collateral(rebuilt)
    assert parsed.qe_identity_issuer_chain == "QE chain"
    assert parsed.tcb_info_issuer_chain == (derived / "tcb_info_issuer_chain.pem").read_text()


def test_collateral_nested_too_deeply_is_a_collateral_error() -> None:
    with pytest.raises(CollateralError, match="not JSON"):
        parse_collateral(b"[" * 100_000 + b"]" * 100_000)
