"""AMD SEV-SNP: verify a 1184-byte attestation report against AMD's pinned roots.

The certificates travel with the report in :class:`~blindai.attestation.Endorsements`:
the VCEK (or VLEK), the ASK (or ASVK) and the ARK, each blob DER, PEM (one or several
certificates) or an SNP extended-report certificate table (the configfs-tsm ``auxblob``).
Nothing is fetched from AMD's KDS and no revocation list is checked.

Example::

    from datetime import datetime, timezone
    from blindai.attestation import Endorsements
    from blindai.attestation.snp import SnpPolicy, SnpVerifier

    policy = SnpPolicy.from_mapping(
        {"measurement": "b07af962...2b01", "min_tcb": "0300000000000873"}
    )
    claims = SnpVerifier.with_embedded_roots().verify(
        report, policy, now=datetime.now(timezone.utc),
        endorsements=Endorsements(certificates=(vcek_der, ask_ark_pem)),
    )
    print(claims.reported_tcb, claims.product)
"""

from __future__ import annotations

from blindai.attestation.snp._layout import TcbVersion
from blindai.attestation.snp.claims import SnpClaims
from blindai.attestation.snp.policy import SnpPolicy
from blindai.attestation.snp.verifier import SnpVerifier

__all__ = ["SnpClaims", "SnpPolicy", "SnpVerifier", "TcbVersion"]
