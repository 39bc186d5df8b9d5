"""Intel TDX: DCAP quote verification on dcap-qvl, with a pinned Intel root.

Example::

    from datetime import datetime, timezone
    from blindai.attestation import Endorsements
    from blindai.attestation.tdx import TdxPolicy, TdxVerifier

    policy = TdxPolicy.from_mapping(
        {"mr_td": "91eb2b44...", "rtmr1": "0084452c...", "rtmr2": "d833feef..."}
    )
    claims = TdxVerifier.with_embedded_roots().verify(
        quote, policy, now=datetime.now(timezone.utc),
        endorsements=Endorsements(collateral=collateral_json),
    )
    print(claims.tcb_status, claims.rtmr0.hex())
"""

from __future__ import annotations

from blindai.attestation.tdx._claims import TdxClaims
from blindai.attestation.tdx.policy import TdxPolicy
from blindai.attestation.tdx.verifier import TdxVerifier

__all__ = ["TdxClaims", "TdxPolicy", "TdxVerifier"]
