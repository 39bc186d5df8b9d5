"""Collateral for SGX and TDX quotes: dcap-qvl's QuoteCollateralV3 JSON, and conversions.

Builds it from Intel PCS answers and from BlindAI 0.6's ``/collateral`` map, and back.
Nothing here is trusted by itself: :class:`~blindai.attestation.dcap.QuoteVerifier` verifies.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import dcap_qvl
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from blindai._documents import loads_json
from blindai.attestation._x509 import load_pem_certificates
from blindai.errors import CollateralError, EvidenceError

__all__ = [
    "Collateral",
    "collateral_from_blindai_v06",
    "collateral_from_pcs",
    "collateral_to_blindai_v06",
    "parse_collateral",
    "pck_crl_issuer_chain_from_quote",
]


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

    def next_update(self) -> datetime:
        """The earliest end of :meth:`windows`: when this collateral must be fetched again."""
        return min(end for _, end in self.windows().values())

    def evaluation_data_number(self) -> int:
        """The lower of the TCB Info's and the QE Identity's ``tcbEvaluationDataNumber``: the
        TCB recovery event Intel's verdicts in them date from (it grows with each one);
        CollateralError when either has none."""
        return min(
            _evaluation_number(self.tcb_info, "TCB Info"),
            _evaluation_number(self.qe_identity, "QE Identity"),
        )


def parse_collateral(data: bytes) -> Collateral:
    """Read QuoteCollateralV3 JSON bytes; CollateralError when malformed."""
    try:
        doc = loads_json(data)
    except ValueError as exc:  # not UTF-8, not JSON, or nested too deeply
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
        doc = loads_json(text)
        return _utc(doc["issueDate"]), _utc(doc["nextUpdate"])
    except (ValueError, KeyError, TypeError) as exc:
        raise CollateralError(f"{what} has no readable issueDate / nextUpdate") from exc


def _evaluation_number(text: str, what: str) -> int:
    try:
        number = loads_json(text)["tcbEvaluationDataNumber"]
    except (ValueError, KeyError, TypeError) as exc:
        raise CollateralError(f"{what} has no readable tcbEvaluationDataNumber") from exc
    if isinstance(number, bool) or not isinstance(number, int) or not 0 <= number < 1 << 32:
        raise CollateralError(f"{what}'s tcbEvaluationDataNumber is not a 32-bit number")
    return number


def _utc(text: str) -> datetime:
    if text.endswith("Z"):  # Python 3.10's fromisoformat does not read "Z" (3.11+ does)
        text = text[:-1] + "+00:00"
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
    except (ValueError, IndexError, RecursionError) as exc:  # a value nested too deeply
        raise CollateralError(f"no {' or '.join(keys)} member in the PCS response") from exc


def _signed_response(body: bytes | str, keys: tuple[str, ...]) -> tuple[str, bytes]:
    """Split a PCS response ``{"<key>": {...}, "signature": "<hex>"}`` into text and signature."""
    try:
        text = body.decode() if isinstance(body, bytes) else body
    except UnicodeDecodeError as exc:
        raise CollateralError(f"the {keys[0]} response is not UTF-8 JSON") from exc
    try:
        signature = bytes.fromhex(loads_json(text)["signature"])
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
    qe_identity_issuer_chain: bytes | None = None,
) -> bytes:
    """Collateral JSON from Intel PCS responses.

    ``tcb_info`` / ``qe_identity`` are the response bodies (``{"tcbInfo": ..., "signature":
    ...}``, ``{"enclaveIdentity": ...}``); CRLs in DER, PEM or hex; ``tcb_signing_chain`` is
    the TCB-Info-Issuer-Chain (it also signs the QE Identity, unless the PCS sent its own
    SGX-Enclave-Identity-Issuer-Chain as ``qe_identity_issuer_chain``); ``pck_crl_issuer_chain``
    the SGX-PCK-CRL-Issuer-Chain (see :func:`pck_crl_issuer_chain_from_quote`; dcap-qvl checks
    each CRL against its issuer in the verified PCK chain, so this copy is informational).
    """
    tcb_text, tcb_sig = _signed_response(tcb_info, ("tcbInfo",))
    qe_text, qe_sig = _signed_response(qe_identity, ("enclaveIdentity", "qeIdentity"))
    chain = _pem_text(tcb_signing_chain)
    qe_chain = chain if qe_identity_issuer_chain is None else _pem_text(qe_identity_issuer_chain)
    return Collateral(
        _pem_text(pck_crl_issuer_chain),
        _crl_der(root_ca_crl),
        _crl_der(pck_crl),
        chain,
        tcb_text,
        tcb_sig,
        qe_chain,
        qe_text,
        qe_sig,
    ).to_json()


def _quote_chain(quote: bytes) -> list[x509.Certificate]:
    try:
        pem = dcap_qvl.parse_quote(quote).cert_chain_pem_bytes()
        certs = load_pem_certificates((pem or b"").rstrip(b"\0"))
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


def collateral_from_blindai_v06(mapping: object) -> bytes:
    """Collateral JSON from BlindAI 0.6's ``/collateral`` CBOR map (strings, PEM CRLs);
    :class:`CollateralError` for anything else (the map comes from an unverified server)."""
    if not isinstance(mapping, dict) or set(mapping) != _V06_FIELDS:
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
