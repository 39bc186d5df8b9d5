"""dcap-qvl's failures, as dcap-qvl itself produces them, map onto the exception tree.

No message here is written by hand: each case tampers with a real quote or its real collateral
and lets dcap-qvl fail (through :func:`verify_quote`, after BlindAI's own checks, which see
nothing wrong). Every rule of the mapping must be exercised by one of these cases, so a new
dcap-qvl series that words its errors differently fails here before it reaches users.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

import dcap_qvl
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from blindai.attestation import _anchors
from blindai.attestation.dcap import parse_collateral, parse_envelope, verify_quote
from blindai.attestation.dcap._qvl_errors import RULES, classify
from blindai.attestation.endorsements import Endorsements
from blindai.errors import (
    ChainError,
    CollateralError,
    EvidenceError,
    PolicyError,
    SignatureError,
    VerificationError,
)
from tests.unit.attestation.dcap_sets import DcapSet

ROOTS = (_anchors.INTEL_SGX_ROOT_CA,)


def flip(data: bytes, offset: int) -> bytes:
    out = bytearray(data)
    out[offset] ^= 0x01
    return bytes(out)


def edit(collateral: bytes, **fields: Callable[[str], str]) -> bytes:
    doc = json.loads(collateral)
    for name, change in fields.items():
        doc[name] = change(doc[name])
    return json.dumps(doc).encode()


def flip_hex(offset: int) -> Callable[[str], str]:
    return lambda text: flip(bytes.fromhex(text), offset).hex()


def number_as_text(signed_json: str) -> str:
    """Valid JSON, issue and next-update dates intact, but a number where dcap-qvl wants one."""
    return signed_json.replace('"tcbEvaluationDataNumber":17', '"tcbEvaluationDataNumber":"17"')


def take(collateral: bytes, name: str) -> Callable[[str], str]:
    return lambda _: json.loads(collateral)[name]


@dataclass(frozen=True)
class Case:
    """A real set, what is done to its quote and collateral, and the error expected."""

    base: str
    error: type[Exception]
    quote: Callable[[bytes], bytes] = lambda q: q
    collateral: Callable[[bytes, dict[str, bytes]], bytes] = lambda c, _: c


def _sets(request: pytest.FixtureRequest) -> dict[str, DcapSet]:
    names = ("phala_sgx", "phala_v4", "phala_v5", "occlum_sgx")
    return {name: request.getfixturevalue(name) for name in names}


CASES = {
    # the quote: header fields dcap-qvl decodes itself
    "version": Case("phala_sgx", EvidenceError, quote=lambda q: flip(q, 0)),
    "key type": Case("phala_sgx", EvidenceError, quote=lambda q: flip(q, 2)),
    "tee type": Case("phala_sgx", EvidenceError, quote=lambda q: flip(q, 4)),
    "QE vendor": Case("phala_sgx", EvidenceError, quote=lambda q: flip(q, 12)),
    # the quote: signed parts
    "report body": Case("phala_sgx", SignatureError, quote=lambda q: flip(q, 48)),
    "QE report data": Case("phala_sgx", SignatureError, quote=lambda q: flip(q, 500)),
    "QE report signature": Case("phala_sgx", SignatureError, quote=lambda q: flip(q, 564)),
    # the quote: its PCK chain (BlindAI's own copy of the chain is left intact)
    "PCK PEM": Case("phala_sgx", ChainError, quote=lambda q: flip(q, 1100)),
    "PCK extensions": Case("phala_sgx", ChainError, quote=lambda q: flip(q, 1500)),
    "PCK signature": Case("phala_sgx", ChainError, quote=lambda q: flip(q, 2000)),
    "PCK issuer": Case("phala_sgx", ChainError, quote=lambda q: flip(q, 3000)),
    # the collateral: signatures and CRLs
    "TCB Info signature": Case(
        "phala_sgx",
        SignatureError,
        collateral=lambda c, _: edit(c, tcb_info_signature=flip_hex(-3)),
    ),
    "QE Identity signature": Case(
        "phala_sgx",
        SignatureError,
        collateral=lambda c, _: edit(c, qe_identity_signature=flip_hex(-3)),
    ),
    "PCK CRL signature": Case(
        "phala_sgx", SignatureError, collateral=lambda c, _: edit(c, pck_crl=flip_hex(-3))
    ),
    "root CRL signature": Case(
        "phala_sgx", SignatureError, collateral=lambda c, _: edit(c, root_ca_crl=flip_hex(-3))
    ),
    "CRL of another CA": Case(
        "phala_sgx",
        CollateralError,
        collateral=lambda c, _: edit(c, pck_crl=take(c, "root_ca_crl")),
    ),
    "TCB signing chain": Case(
        "phala_sgx",
        ChainError,
        collateral=lambda c, _: edit(c, tcb_info_issuer_chain=take(c, "pck_crl_issuer_chain")),
    ),
    # the collateral: authentic, or well formed, but not for this quote
    "TCB Info type": Case(
        "phala_sgx",
        CollateralError,
        collateral=lambda c, _: edit(
            c,
            tcb_info=lambda t: t.replace(
                '"tcbEvaluationDataNumber":17', '"tcbEvaluationDataNumber":"17"'
            ),
        ),
    ),
    "QE Identity type": Case(
        "phala_sgx",
        CollateralError,
        collateral=lambda c, _: edit(c, qe_identity=number_as_text),
    ),
    "TD QE identity for SGX": Case(
        "phala_sgx",
        CollateralError,
        collateral=lambda c, sets: edit(
            c,
            qe_identity=take(sets["phala_v4"], "qe_identity"),
            qe_identity_signature=take(sets["phala_v4"], "qe_identity_signature"),
        ),
    ),
    "SGX TCB Info for TDX": Case(
        "phala_v4",
        CollateralError,
        collateral=lambda c, sets: edit(
            c,
            tcb_info=take(sets["phala_sgx"], "tcb_info"),
            tcb_info_signature=take(sets["phala_sgx"], "tcb_info_signature"),
        ),
    ),
    "no TCB level": Case("phala_v5", CollateralError),
    # dcap-qvl's own policy
    "debug enclave": Case("occlum_sgx", PolicyError),
}


def _run(case: Case, sets: dict[str, DcapSet]) -> EvidenceError | VerificationError:
    base = sets[case.base]
    envelope = parse_envelope(base.quote)
    collaterals = {name: s.collateral for name, s in sets.items()}
    with pytest.raises((EvidenceError, VerificationError)) as info:  # every case fails closed
        verify_quote(
            case.quote(envelope.quote),
            envelope.pck_chain_pem,  # the chain BlindAI checks against its pins: intact
            Endorsements(collateral=case.collateral(base.collateral, collaterals)),
            now=base.now,
            trusted_roots=ROOTS,
        )
    return info.value


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_real_dcap_qvl_failure_maps_to_its_error(
    name: str, request: pytest.FixtureRequest
) -> None:
    case = CASES[name]
    error = _run(case, _sets(request))
    assert type(error) is case.error, error
    assert isinstance(error.__cause__, ValueError)  # dcap-qvl's own failure, kept as the cause
    assert "\n" not in str(error)


def test_every_rule_is_exercised_by_a_real_failure(request: pytest.FixtureRequest) -> None:
    sets = _sets(request)
    hit = set()
    for case in CASES.values():
        message = str(_run(case, sets).__cause__)
        hit |= {needle for needle, _ in RULES if needle in message}
    assert hit == {needle for needle, _ in RULES}


def test_the_debug_refusal_is_a_policy_violation(request: pytest.FixtureRequest) -> None:
    error = _run(CASES["debug enclave"], _sets(request))
    assert isinstance(error, PolicyError)
    assert [v.field for v in error.violations] == ["debug"]


def test_a_failure_no_rule_names_fails_closed(phala_sgx: DcapSet) -> None:
    # dcap-qvl's own date check, which BlindAI's window check always pre-empts: called directly
    envelope = parse_envelope(phala_sgx.quote)
    root = x509.load_pem_x509_certificates(envelope.pck_chain_pem)[-1].public_bytes(Encoding.DER)
    collateral = parse_collateral(phala_sgx.collateral).to_dcap_qvl()
    with pytest.raises(ValueError) as info:
        dcap_qvl.verify_with_root_ca(envelope.quote, collateral, root, 1_600_000_000)
    assert not any(needle in str(info.value) for needle, _ in RULES)
    error = classify(str(info.value))
    assert type(error) is VerificationError
    assert str(error).startswith("dcap-qvl: TCBInfo issue date is in the future")
