"""The public surface of blindai.attestation.snp."""

from __future__ import annotations

import blindai.attestation.snp as snp


def test_exported_names() -> None:
    assert sorted(snp.__all__) == ["SnpClaims", "SnpPolicy", "SnpVerifier", "TcbVersion"]
    public = {name for name in vars(snp) if not name.startswith("_")}
    # submodules are importable attributes; everything else public is in __all__
    assert public - set(snp.__all__) <= {"annotations", "claims", "policy", "verifier"}
    for name in snp.__all__:
        assert getattr(snp, name).__doc__
