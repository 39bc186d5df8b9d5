"""Intel SGX: DCAP quote verification on dcap-qvl, with a pinned Intel root.

Example::

    from datetime import datetime, timezone
    from blindai.attestation import Endorsements
    from blindai.attestation.sgx import SgxPolicy, SgxVerifier

    policy = SgxPolicy.from_mapping({"mr_enclave": "33d8736d...", "allow_debug": False})
    claims = SgxVerifier.with_embedded_roots().verify(
        quote, policy, now=datetime.now(timezone.utc),
        endorsements=Endorsements(collateral=collateral_json),
    )
    print(claims.tcb_status, claims.mr_enclave.hex())
"""

from __future__ import annotations

from blindai.attestation.sgx._claims import SgxClaims
from blindai.attestation.sgx.policy import SgxPolicy
from blindai.attestation.sgx.verifier import SgxVerifier

__all__ = ["SgxClaims", "SgxPolicy", "SgxVerifier"]
