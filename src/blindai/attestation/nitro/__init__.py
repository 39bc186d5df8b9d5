"""AWS Nitro Enclaves attestation documents (COSE_Sign1, ES384, chain to the AWS root).

Example::

    from datetime import datetime, timezone
    from blindai.attestation.nitro import NitroPolicy, NitroVerifier

    policy = NitroPolicy.from_mapping({"pcr0": "f4d48b81...150142d8b"})
    claims = NitroVerifier.with_embedded_roots().verify(
        document, policy, now=datetime.now(timezone.utc)
    )
    print(claims.module_id, claims.measurement.hex(), claims.user_data)
"""

from __future__ import annotations

from blindai.attestation.nitro._claims import NitroClaims
from blindai.attestation.nitro.policy import NitroPolicy
from blindai.attestation.nitro.verifier import NitroVerifier

__all__ = ["NitroClaims", "NitroPolicy", "NitroVerifier"]
