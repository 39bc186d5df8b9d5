"""SGX collateral as served by the server: the PCS files, and the two layouts made from them.

* :meth:`SgxCollateral.blindai_map`: BlindAI 0.6's ``/collateral`` CBOR map, the inputs of
  ``sgx_dcap_quote_verify.verify`` in those clients: PEM certificates and CRLs, TCB info and QE
  identity as the PCS response bodies (``{"tcbInfo": ..., "signature": ...}``).
* :meth:`SgxCollateral.dcap_qvl_json`: dcap-qvl's ``QuoteCollateralV3`` JSON (the signed inner
  JSON byte-exact, signatures and CRLs as hex), carried in :class:`Endorsements`.

Nothing here is verified: the client verifies everything against its pinned Intel root.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from blindai.errors import CollateralUnavailable

__all__ = ["BLINDAI_COLLATERAL_VERSION", "SgxCollateral", "signed_member"]

#: ``sgx_ql_qve_collateral_t.version`` as BlindAI 0.6 served it (an integer; 0.6.3 checks the
#: type): 3, the major version Intel's quote provider reports for PCS API v3/v4 collateral.
BLINDAI_COLLATERAL_VERSION = 3


@dataclass(frozen=True, kw_only=True)
class SgxCollateral:
    """Collateral for one SGX platform (FMSPC) and PCK CA, as fetched from a PCS or PCCS."""

    pck_certificate: str
    pck_signing_chain: str
    pck_crl_issuer_chain: str
    pck_crl: bytes
    root_ca_crl: bytes
    tcb_info_body: str
    tcb_info_issuer_chain: str
    qe_identity_body: str
    qe_identity_issuer_chain: str

    def next_update(self) -> datetime:
        """The earliest ``nextUpdate`` of TCB info, QE identity and both CRLs (timezone-aware)."""
        times = [
            _iso(json.loads(signed_member(self.tcb_info_body, "tcbInfo")[0])["nextUpdate"]),
            _iso(
                json.loads(signed_member(self.qe_identity_body, "enclaveIdentity")[0])["nextUpdate"]
            ),
        ]
        for der in (self.pck_crl, self.root_ca_crl):
            update = _crl(der).next_update_utc
            if update is None:
                raise CollateralUnavailable("a CRL from the PCS has no nextUpdate")
            times.append(update)
        return min(times)

    def blindai_map(self) -> dict[str, Any]:
        """BlindAI 0.6's ``/collateral`` map (see the module docstring)."""
        return {
            "version": BLINDAI_COLLATERAL_VERSION,
            "pck_certificate": self.pck_certificate,
            "pck_crl_issuer_chain": self.pck_crl_issuer_chain,
            "pck_signing_chain": self.pck_signing_chain,
            "root_ca_crl": _crl_pem(self.root_ca_crl),
            "pck_crl": _crl_pem(self.pck_crl),
            "tcb_info": self.tcb_info_body,
            "tcb_info_issuer_chain": self.tcb_info_issuer_chain,
            "qe_identity": self.qe_identity_body,
            "qe_identity_issuer_chain": self.qe_identity_issuer_chain,
        }

    def dcap_qvl_json(self) -> bytes:
        """dcap-qvl's ``QuoteCollateralV3`` JSON (see the module docstring)."""
        tcb_info, tcb_sig = signed_member(self.tcb_info_body, "tcbInfo")
        qe_identity, qe_sig = signed_member(self.qe_identity_body, "enclaveIdentity")
        doc = {
            "pck_crl_issuer_chain": self.pck_crl_issuer_chain,
            "root_ca_crl": self.root_ca_crl.hex(),
            "pck_crl": self.pck_crl.hex(),
            "tcb_info_issuer_chain": self.tcb_info_issuer_chain,
            "tcb_info": tcb_info,
            "tcb_info_signature": tcb_sig,
            "qe_identity_issuer_chain": self.qe_identity_issuer_chain,
            "qe_identity": qe_identity,
            "qe_identity_signature": qe_sig,
        }
        return json.dumps(doc).encode()


def signed_member(body: str, key: str) -> tuple[str, str]:
    """From a PCS body ``{key: {...}, "signature": "hex"}``: the member's exact text, the signature.

    The signature covers the member's bytes as Intel wrote them, so they are cut out of the body
    rather than re-serialised.
    """
    try:
        members = _members(body)
    except (ValueError, IndexError) as exc:
        raise CollateralUnavailable(f"the PCS answer for {key} is not a JSON object") from exc
    signature = members.get("signature", ("", None))[1]
    if key not in members or not isinstance(signature, str):
        raise CollateralUnavailable(f"the PCS answer lacks {key!r} or its signature")
    return members[key][0], signature


def _members(body: str) -> dict[str, tuple[str, Any]]:
    """Top-level members of a JSON object: name -> (exact text, decoded value)."""
    decoder = json.JSONDecoder()
    members: dict[str, tuple[str, Any]] = {}
    at = _expect(body, _ws(body, 0), "{")
    while True:
        name, at = decoder.raw_decode(body, at)
        start = _expect(body, at, ":")
        value, at = decoder.raw_decode(body, start)
        members[str(name)] = (body[start:at], value)
        at = _ws(body, at)
        if body[at] != ",":
            if _expect(body, at, "}") != len(body):
                raise ValueError("trailing data after the JSON object")
            return members
        at = _ws(body, at + 1)


def _ws(text: str, at: int) -> int:
    while at < len(text) and text[at].isspace():
        at += 1
    return at


def _expect(text: str, at: int, token: str) -> int:
    """Check ``token`` at ``at`` (after blanks); return the position after it and its blanks."""
    at = _ws(text, at)
    if text[at] != token:
        raise ValueError(f"expected {token!r} at {at}")
    return _ws(text, at + 1)


def _iso(text: Any) -> datetime:
    try:
        return datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError as exc:
        raise CollateralUnavailable(f"bad nextUpdate {text!r} in PCS collateral") from exc


def _crl(der: bytes) -> x509.CertificateRevocationList:
    try:
        return x509.load_der_x509_crl(der)
    except ValueError as exc:
        raise CollateralUnavailable("a CRL from the PCS is not DER") from exc


def _crl_pem(der: bytes) -> str:
    return _crl(der).public_bytes(serialization.Encoding.PEM).decode()
