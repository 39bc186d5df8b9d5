"""SGX and TDX quotes through dcap-qvl: collateral, pinned root, TCB status, error mapping.

dcap-qvl checks the PCK chain up to the Intel root, both CRLs, the TCB Info and QE Identity
signatures and chains, the QE report and its binding to the attestation key, the quote
signature over header and body, and matches the platform TCB. This module feeds it and maps
its answers to :mod:`blindai.errors`:

1. collateral present (else :class:`CollateralUnavailable`) and well formed;
2. the root certificate inside the quote is one of the pinned roots (:class:`ChainError`);
3. TCB Info, QE Identity and both CRLs are inside their validity window at ``now``
   (:class:`CollateralError`);
4. dcap-qvl with that root and ``now``; its TCB status is returned for the policy to judge.

Not checked here: anything about the enclave or TD identity (the kinds' policies do that).
dcap-qvl 0.7 refuses debug enclaves and TDs whatever the policy, and SGX quotes other than
version 3; those refusals come back as :class:`PolicyError` and :class:`EvidenceError`.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import dcap_qvl
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from blindai.attestation._anchors import fingerprint
from blindai.attestation.endorsements import Endorsements
from blindai.errors import (
    BlindAIError,
    ChainError,
    CollateralError,
    CollateralUnavailable,
    ConfigurationError,
    EvidenceError,
    PolicyError,
    SignatureError,
    VerificationError,
    Violation,
)

__all__ = [
    "TCB_STATUSES",
    "Collateral",
    "DcapResult",
    "check_report_agrees",
    "collateral_from_blindai_v06",
    "collateral_from_pcs",
    "collateral_to_blindai_v06",
    "parse_collateral",
    "pck_crl_issuer_chain_from_quote",
    "verify_quote",
]

#: TCB statuses a policy may accept ("Revoked" is never acceptable)
TCB_STATUSES = frozenset(
    {
        "UpToDate",
        "SWHardeningNeeded",
        "ConfigurationNeeded",
        "ConfigurationAndSWHardeningNeeded",
        "OutOfDate",
        "OutOfDateConfigurationNeeded",
        "TDRelaunchAdvised",
        "TDRelaunchAdvisedConfigurationNeeded",
    }
)


@dataclass(frozen=True)
class DcapResult:
    """What dcap-qvl vouches for once a quote verified."""

    tcb_status: str
    advisory_ids: tuple[str, ...]
    fmspc: bytes
    report: dict[str, Any]


def verify_quote(
    quote: bytes,
    pck_chain_pem: bytes,
    endorsements: Endorsements | None,
    *,
    now: datetime,
    trusted_roots: Collection[bytes],
) -> DcapResult:
    """Verify a quote (without trailing bytes) and its collateral; see the module docstring."""
    now_secs = _unix_seconds(now)
    collateral = _load_collateral(endorsements)
    root_der = _pinned_root(pck_chain_pem, trusted_roots)
    _check_window(collateral, now)
    try:
        report = dcap_qvl.verify_with_root_ca(quote, collateral.to_dcap_qvl(), root_der, now_secs)
    except (ValueError, RuntimeError) as exc:
        raise _classify(str(exc)) from exc
    return DcapResult(
        tcb_status=report.status,
        advisory_ids=tuple(report.advisory_ids),
        fmspc=_fmspc(quote),
        report=json.loads(report.to_json())["report"],
    )


def check_report_agrees(result: DcapResult, measurement: bytes, report_data: bytes) -> None:
    """The body dcap-qvl verified must be the one the quote parser read (fail closed otherwise).

    dcap-qvl names its report ``SgxEnclave`` (MRENCLAVE), ``TD10`` or ``TD15`` (MRTD, the
    TD 1.0 fields under ``base``); measurement and report data are compared as hex.
    """
    if len(result.report) != 1:
        raise EvidenceError("dcap-qvl returned no single report")
    ((variant, report),) = result.report.items()
    fields = report.get("base", report) if isinstance(report, dict) else {}
    key = "mr_enclave" if variant == "SgxEnclave" else "mr_td"
    if fields.get(key) != measurement.hex() or fields.get("report_data") != report_data.hex():
        raise EvidenceError(f"dcap-qvl's {variant} report and the quote parser disagree")


def _unix_seconds(now: datetime) -> int:
    if now.tzinfo is None:
        raise ConfigurationError("the verification time must be timezone-aware")
    return int(now.timestamp())


def _load_collateral(endorsements: Endorsements | None) -> Collateral:
    """(1) The collateral travels in the endorsements; none means fail closed."""
    if endorsements is None or endorsements.collateral is None:
        raise CollateralUnavailable("no DCAP collateral given for this quote")
    return parse_collateral(endorsements.collateral)


def _pinned_root(chain_pem: bytes, trusted_roots: Collection[bytes]) -> bytes:
    """(2) The last certificate of the quote's PCK chain must be a pinned root."""
    try:
        certs = x509.load_pem_x509_certificates(chain_pem)
    except ValueError as exc:
        raise ChainError("the PCK certificate chain in the quote cannot be parsed") from exc
    if len(certs) < 2:
        raise ChainError("the PCK certificate chain in the quote is too short")
    root_der = certs[-1].public_bytes(Encoding.DER)
    if fingerprint(root_der) not in trusted_roots:
        raise ChainError(
            f"the quote's root certificate (SHA-256 {fingerprint(root_der).hex()}) is not pinned"
        )
    return root_der


def _check_window(collateral: Collateral, now: datetime) -> None:
    """(3) Every piece of collateral must be valid at ``now``."""
    for what, (start, end) in collateral.windows().items():
        if now < start:
            raise CollateralError(f"{what} is not valid before {start.isoformat()}")
        if now > end:
            raise CollateralError(f"{what} expired at {end.isoformat()}")


def _fmspc(quote: bytes) -> bytes:
    try:
        return bytes.fromhex(dcap_qvl.parse_quote(quote).fmspc())
    except ValueError as exc:  # pragma: no cover - dcap-qvl read it moments ago
        raise EvidenceError("no FMSPC in the PCK certificate") from exc


#: (substring of dcap-qvl's message, error class); first match wins
_RULES: tuple[tuple[str, type[BlindAIError]], ...] = (
    ("Failed to decode quote", EvidenceError),
    ("quote version", EvidenceError),
    ("quote must have version", EvidenceError),
    ("Unknown QE vendor", EvidenceError),
    ("attestation key type", EvidenceError),
    ("PCK cert format", EvidenceError),
    ("Unsupported TEE type", EvidenceError),
    ("InvalidCrlSignature", SignatureError),
    ("UnknownRevocationStatus", CollateralError),
    ("Crl", CollateralError),
    ("CRL", CollateralError),
    ("CertRevoked", ChainError),
    ("certificate chain", ChainError),
    ("certificate expired", ChainError),
    ("UnknownIssuer", ChainError),
    ("PCK certificate", ChainError),
    ("ignature is invalid", SignatureError),
    ("report hash mismatch", SignatureError),
    ("root ca", ChainError),
)


def _classify(message: str) -> BlindAIError:
    """Map a dcap-qvl failure to the exception tree; unknown failures still fail closed."""
    text = message.removeprefix("Verification failed: ").replace("\n\nCaused by:\n   ", ":")
    policy = _policy_refusal(text)
    if policy is not None:
        return policy
    for needle, cls in _RULES:
        if needle in text:
            return cls(f"dcap-qvl: {text}")
    if any(k in text for k in ("TCB", "Tcb", "QE", "Qe", "Fmspc", "tdxModule", "TDX module")):
        return CollateralError(f"dcap-qvl: {text}")
    return VerificationError(f"dcap-qvl: {text}")


def _policy_refusal(text: str) -> PolicyError | None:
    """dcap-qvl's own policy refusals, which no policy of ours can lift."""
    if "Debug mode is enabled" in text:
        return PolicyError([Violation("debug", "False (dcap-qvl verifies no debug TEE)", "True")])
    if "TCB status is invalid" in text:
        actual = text.rsplit(":", 1)[-1].strip()
        return PolicyError([Violation("tcb_status", "not Revoked", actual)])
    if "Invalid MR service TD" in text:
        return PolicyError([Violation("mr_service_td", "zero", "non-zero")])
    for needle in ("TD attributes", "SEPT_VE_DISABLE", "TD migration", "TD profiling", "SERVTD"):
        if needle in text:
            return PolicyError([Violation("td_attributes", "accepted by dcap-qvl", text)])
    return None


# --- collateral: dcap-qvl's QuoteCollateralV3 JSON, and conversions -------------------------

_HEX_FIELDS = ("root_ca_crl", "pck_crl", "tcb_info_signature", "qe_identity_signature")
_FIELDS = (
    "pck_crl_issuer_chain",
    "root_ca_crl",
    "pck_crl",
    "tcb_info_issuer_chain",
    "tcb_info",
    "tcb_info_signature",
    "qe_identity_issuer_chain",
    "qe_identity",
    "qe_identity_signature",
)
_V06_FIELDS = frozenset(
    {
        "version",
        "pck_certificate",
        "pck_crl_issuer_chain",
        "pck_signing_chain",
        "root_ca_crl",
        "pck_crl",
        "tcb_info",
        "tcb_info_issuer_chain",
        "qe_identity",
        "qe_identity_issuer_chain",
    }
)


@dataclass(frozen=True)
class Collateral:
    """Collateral for one quote: issuer chains (PEM), CRLs (DER), signed JSON, signatures.

    The JSON form (:meth:`to_json`, :func:`parse_collateral`) is dcap-qvl's
    ``QuoteCollateralV3``: byte fields as lowercase hex. Nothing here is trusted by itself.
    """

    pck_crl_issuer_chain: str
    root_ca_crl: bytes
    pck_crl: bytes
    tcb_info_issuer_chain: str
    tcb_info: str
    tcb_info_signature: bytes
    qe_identity_issuer_chain: str
    qe_identity: str
    qe_identity_signature: bytes

    def to_json(self) -> bytes:
        """The QuoteCollateralV3 JSON document, as ``Endorsements.collateral`` carries it."""
        doc = {
            name: (getattr(self, name).hex() if name in _HEX_FIELDS else getattr(self, name))
            for name in _FIELDS
        }
        return json.dumps(doc).encode()

    def to_dcap_qvl(self) -> dcap_qvl.QuoteCollateralV3:
        """The same collateral as dcap-qvl's object."""
        return dcap_qvl.QuoteCollateralV3(*(getattr(self, name) for name in _FIELDS))

    def windows(self) -> dict[str, tuple[datetime, datetime]]:
        """Validity window of each dated part; CollateralError when one cannot be read."""
        return {
            "TCB Info": _json_window(self.tcb_info, "TCB Info"),
            "QE Identity": _json_window(self.qe_identity, "QE Identity"),
            "PCK CRL": _crl_window(self.pck_crl, "PCK CRL"),
            "root CA CRL": _crl_window(self.root_ca_crl, "root CA CRL"),
        }


def parse_collateral(data: bytes) -> Collateral:
    """Read QuoteCollateralV3 JSON bytes; CollateralError when malformed."""
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CollateralError("collateral is not JSON") from exc
    if not isinstance(doc, dict):
        raise CollateralError("collateral must be a JSON object")
    if doc.get("pck_certificate_chain", "absent") is None:
        del doc["pck_certificate_chain"]
    if set(doc) != set(_FIELDS) or not all(isinstance(v, str) for v in doc.values()):
        raise CollateralError(f"collateral must hold exactly these strings: {', '.join(_FIELDS)}")
    try:
        raw = {k: bytes.fromhex(doc[k]) for k in _HEX_FIELDS}
    except ValueError as exc:
        raise CollateralError("collateral CRLs and signatures must be hex") from exc
    return Collateral(
        pck_crl_issuer_chain=doc["pck_crl_issuer_chain"],
        root_ca_crl=raw["root_ca_crl"],
        pck_crl=raw["pck_crl"],
        tcb_info_issuer_chain=doc["tcb_info_issuer_chain"],
        tcb_info=doc["tcb_info"],
        tcb_info_signature=raw["tcb_info_signature"],
        qe_identity_issuer_chain=doc["qe_identity_issuer_chain"],
        qe_identity=doc["qe_identity"],
        qe_identity_signature=raw["qe_identity_signature"],
    )


def _json_window(text: str, what: str) -> tuple[datetime, datetime]:
    try:
        doc = json.loads(text)
        return _utc(doc["issueDate"]), _utc(doc["nextUpdate"])
    except (ValueError, KeyError, TypeError) as exc:
        raise CollateralError(f"{what} has no readable issueDate / nextUpdate") from exc


def _utc(text: str) -> datetime:
    value = datetime.fromisoformat(text)
    if value.tzinfo is None:
        raise ValueError("naive time")
    return value


def _crl_window(der: bytes, what: str) -> tuple[datetime, datetime]:
    try:
        crl = x509.load_der_x509_crl(der)
    except ValueError as exc:
        raise CollateralError(f"{what} is not a DER CRL") from exc
    if crl.next_update_utc is None:  # pragma: no cover - cryptography cannot build one to test
        raise CollateralError(f"{what} has no nextUpdate")
    return crl.last_update_utc, crl.next_update_utc


def _member_text(text: str, keys: tuple[str, ...]) -> str:
    """The exact text of the first of ``keys`` in a top-level JSON object (signed bytes)."""
    decoder = json.JSONDecoder()
    try:
        pos = text.index("{") + 1
        while True:
            pos = text.index('"', pos)
            key, pos = decoder.raw_decode(text, pos)
            pos = text.index(":", pos) + 1
            while text[pos] in " \t\r\n":
                pos += 1
            _, end = decoder.raw_decode(text, pos)
            if key in keys:
                return text[pos:end]
            pos = end
    except (ValueError, IndexError) as exc:
        raise CollateralError(f"no {' or '.join(keys)} member in the PCS response") from exc


def _signed_response(body: bytes | str, keys: tuple[str, ...]) -> tuple[str, bytes]:
    """Split a PCS response ``{"<key>": {...}, "signature": "<hex>"}`` into text and signature."""
    text = body.decode() if isinstance(body, bytes) else body
    try:
        signature = bytes.fromhex(json.loads(text)["signature"])
    except (ValueError, KeyError, TypeError) as exc:
        raise CollateralError(f"the {keys[0]} response has no hex signature") from exc
    return _member_text(text, keys), signature


def _crl_der(crl: bytes | str) -> bytes:
    """A CRL given as DER, PEM or hex-encoded DER, as DER."""
    raw = crl.encode() if isinstance(crl, str) else crl
    try:
        if raw.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_crl(raw).public_bytes(Encoding.DER)
        if raw[:1] != b"\x30":
            raw = bytes.fromhex(raw.decode())
        return x509.load_der_x509_crl(raw).public_bytes(Encoding.DER)
    except (ValueError, UnicodeDecodeError) as exc:
        raise CollateralError("a CRL is neither DER, PEM nor hex") from exc


def _pem_text(chain: bytes | str) -> str:
    return chain.decode() if isinstance(chain, bytes) else chain


def collateral_from_pcs(
    *,
    tcb_info: bytes,
    qe_identity: bytes,
    pck_crl: bytes,
    root_ca_crl: bytes,
    tcb_signing_chain: bytes,
    pck_crl_issuer_chain: bytes,
) -> bytes:
    """Collateral JSON from Intel PCS responses.

    ``tcb_info`` / ``qe_identity`` are the response bodies (``{"tcbInfo": ..., "signature":
    ...}``, ``{"enclaveIdentity": ...}``); CRLs in DER, PEM or hex; ``tcb_signing_chain`` is
    the TCB-Info-Issuer-Chain (it also signs the QE Identity); ``pck_crl_issuer_chain`` the
    SGX-PCK-CRL-Issuer-Chain (see :func:`pck_crl_issuer_chain_from_quote`; dcap-qvl checks
    each CRL against its issuer in the verified PCK chain, so this copy is informational).
    """
    tcb_text, tcb_sig = _signed_response(tcb_info, ("tcbInfo",))
    qe_text, qe_sig = _signed_response(qe_identity, ("enclaveIdentity", "qeIdentity"))
    chain = _pem_text(tcb_signing_chain)
    return Collateral(
        _pem_text(pck_crl_issuer_chain),
        _crl_der(root_ca_crl),
        _crl_der(pck_crl),
        chain,
        tcb_text,
        tcb_sig,
        chain,
        qe_text,
        qe_sig,
    ).to_json()


def _quote_chain(quote: bytes) -> list[x509.Certificate]:
    try:
        pem = dcap_qvl.parse_quote(quote).cert_chain_pem_bytes()
        certs = x509.load_pem_x509_certificates((pem or b"").rstrip(b"\0"))
    except ValueError as exc:
        raise EvidenceError("no PCK certificate chain in the quote") from exc
    if len(certs) < 2:
        raise EvidenceError("the PCK certificate chain in the quote is too short")
    return certs


def _pem(certs: list[x509.Certificate]) -> str:
    return "".join(c.public_bytes(Encoding.PEM).decode() for c in certs)


def pck_crl_issuer_chain_from_quote(quote: bytes) -> bytes:
    """The PCK CA and root from the quote's PCK chain: the issuer chain of its PCK CRL."""
    return _pem(_quote_chain(quote)[1:]).encode()


def collateral_from_blindai_v06(mapping: dict[str, Any]) -> bytes:
    """Collateral JSON from BlindAI 0.6's ``/collateral`` CBOR map (strings, PEM CRLs)."""
    if set(mapping) != _V06_FIELDS:
        raise CollateralError(f"a BlindAI 0.6 collateral map has keys {sorted(_V06_FIELDS)}")
    if not all(isinstance(mapping[k], str) for k in _V06_FIELDS - {"version"}):
        raise CollateralError("BlindAI 0.6 collateral values must be strings")
    tcb_text, tcb_sig = _signed_response(mapping["tcb_info"], ("tcbInfo",))
    qe_text, qe_sig = _signed_response(mapping["qe_identity"], ("enclaveIdentity", "qeIdentity"))
    return Collateral(
        mapping["pck_crl_issuer_chain"],
        _crl_der(mapping["root_ca_crl"]),
        _crl_der(mapping["pck_crl"]),
        mapping["tcb_info_issuer_chain"],
        tcb_text,
        tcb_sig,
        mapping["qe_identity_issuer_chain"],
        qe_text,
        qe_sig,
    ).to_json()


def _crl_pem(der: bytes) -> str:
    return x509.load_der_x509_crl(der).public_bytes(Encoding.PEM).decode()


def collateral_to_blindai_v06(collateral: bytes, quote: bytes) -> dict[str, Any]:
    """BlindAI 0.6's ``/collateral`` map for ``quote``, so a server can serve old clients.

    ``version`` is an integer (BlindAI 0.6.3's client type-checks it); the PCK certificate
    and its signing chain come from the quote.
    """
    c = parse_collateral(collateral)
    certs = _quote_chain(quote)
    return {
        "version": 3,
        "pck_certificate": _pem(certs[:1]),
        "pck_crl_issuer_chain": c.pck_crl_issuer_chain,
        "pck_signing_chain": _pem(certs[1:]),
        "root_ca_crl": _crl_pem(c.root_ca_crl),
        "pck_crl": _crl_pem(c.pck_crl),
        "tcb_info": f'{{"tcbInfo":{c.tcb_info},"signature":"{c.tcb_info_signature.hex()}"}}',
        "tcb_info_issuer_chain": c.tcb_info_issuer_chain,
        "qe_identity": (
            f'{{"enclaveIdentity":{c.qe_identity},"signature":"{c.qe_identity_signature.hex()}"}}'
        ),
        "qe_identity_issuer_chain": c.qe_identity_issuer_chain,
    }
