"""dcap-qvl's failures mapped onto :mod:`blindai.errors`.

dcap-qvl 0.7's Python binding raises ``ValueError`` for every failure, with the Rust error chain
as its only content ("Verification failed: <what>", then "Caused by:" lines); it has no error
types or codes. So the mapping reads the message, and the dependency is bounded to the 0.7
series (``dcap-qvl>=0.7,<0.8`` in pyproject.toml): a new series must be checked against these
rules before the bound moves. Every rule is exercised by a real dcap-qvl failure (real
evidence with a tampered quote or collateral) in ``tests/unit/attestation/dcap``; a failure no
rule names still fails closed, as a plain :class:`VerificationError` quoting dcap-qvl.
"""

from __future__ import annotations

from blindai.errors import (
    BlindAIError,
    ChainError,
    CollateralError,
    EvidenceError,
    PolicyError,
    SignatureError,
    VerificationError,
    Violation,
)

__all__ = ["RULES", "classify"]

#: (text in dcap-qvl's message, error class); the first rule that matches wins
RULES: tuple[tuple[str, type[BlindAIError]], ...] = (
    # the quote itself is malformed or of a kind dcap-qvl does not take
    ("Failed to decode quote", EvidenceError),
    ("Unsupported DCAP attestation key type", EvidenceError),
    ("Unknown QE vendor ID", EvidenceError),
    # CRLs: a broken signature; a CRL from another CA (it says nothing of this chain)
    ("InvalidCrlSignature", SignatureError),
    ("UnknownRevocationStatus", CollateralError),
    # the PCK chain in the quote, or the TCB Info / QE Identity signing chain
    ("Failed to verify certificate chain", ChainError),
    ("PCK certificate", ChainError),
    # signatures: quote body (attestation key), QE report (PCK key), TCB Info, QE Identity
    ("ISV enclave report signature is invalid", SignatureError),
    ("Signature is invalid for", SignatureError),
    ("QE report hash mismatch", SignatureError),
    # authentic collateral that does not fit this quote
    ("Failed to decode TcbInfo", CollateralError),
    ("Failed to decode QeIdentity", CollateralError),
    ("Unsupported QE Identity", CollateralError),
    ("Fmspc mismatch", CollateralError),
    ("No matching TCB level found", CollateralError),
)
#: dcap-qvl's own policy: it verifies no debug enclave or TD, whatever our policy says
DEBUG_REFUSED = "Debug mode is enabled"


def classify(message: str) -> BlindAIError:
    """The exception for dcap-qvl's failure ``message``; unknown failures still fail closed."""
    text = message.removeprefix("Verification failed: ")
    lines = (line.strip() for line in text.splitlines())
    text = ": ".join(line for line in lines if line and line != "Caused by:")  # one line
    if DEBUG_REFUSED in text:
        return PolicyError([Violation("debug", "False (dcap-qvl verifies no debug TEE)", "True")])
    for needle, cls in RULES:
        if needle in text:
            return cls(f"dcap-qvl: {text}")
    return VerificationError(f"dcap-qvl: {text}")
