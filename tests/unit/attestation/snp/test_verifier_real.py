"""SnpVerifier on the four real evidence sets, and negative vectors derived from them."""

from __future__ import annotations

import base64
import json
import warnings
from dataclasses import replace
from datetime import datetime, timezone

import pytest

from blindai.attestation import EvidenceKind, verifier_for
from blindai.attestation.endorsements import Endorsements
from blindai.attestation.snp import SnpClaims, SnpPolicy, SnpVerifier, TcbVersion
from blindai.attestation.snp._certs import ARK_GUID, ASK_GUID, VCEK_GUID, build_cert_table
from blindai.errors import (
    ChainError,
    ConfigurationError,
    EvidenceError,
    PolicyError,
    SignatureError,
)

from ._snp_kit import NOW, RealSet, der

VERIFIER = SnpVerifier.with_embedded_roots()


def policy_for(real: RealSet, **overrides: object) -> SnpPolicy:
    bl, tee, snp, ucode = real.reported_tcb
    data: dict[str, object] = {
        "measurement": real.measurement,
        "min_tcb": {"bootloader": bl, "tee": tee, "snp": snp, "microcode": ucode},
    }
    if real.debug:
        data["allow_debug"] = True
    if real.vmpl:
        data["max_vmpl"] = real.vmpl
    data.update(overrides)
    return SnpPolicy.from_mapping(data)


def verify(
    real: RealSet,
    report: bytes | None = None,
    certs: tuple[bytes, ...] | None = None,
    now: datetime = NOW,
    **policy: object,
) -> SnpClaims:
    return VERIFIER.verify(
        real.report if report is None else report,
        policy_for(real, **policy),
        now=now,
        endorsements=Endorsements(certificates=real.certificates if certs is None else certs),
    )


def test_real_sets_verify(real_set: RealSet) -> None:
    claims = verify(real_set)
    assert claims.kind is EvidenceKind.SEV_SNP
    assert claims.measurement.hex() == real_set.measurement
    assert claims.report_data.hex() == real_set.report_data
    bl, tee, snp, ucode = real_set.reported_tcb
    assert claims.reported_tcb == TcbVersion(bootloader=bl, tee=tee, snp=snp, microcode=ucode)
    assert claims.vmpl == real_set.vmpl
    assert claims.signing_key == real_set.signing_key
    assert claims.product == real_set.product
    assert claims.report_version == real_set.version
    assert claims.chip_id.hex() == real_set.chip_id
    assert claims.debug is real_set.debug
    assert claims.verified_at == NOW
    assert claims.tcb_status is None


def test_no_warning_reaches_the_caller(real_set: RealSet) -> None:
    # the AMD VCEK/VLEK serial number 0 makes cryptography warn; the loader contains it
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        verify(real_set).to_dict()
    assert [str(w.message) for w in caught] == []


def test_verifier_for_uses_embedded_roots(sets: dict[str, RealSet]) -> None:
    real = sets["virtee-sev-milan"]
    verifier = verifier_for(EvidenceKind.SEV_SNP)
    assert isinstance(verifier, SnpVerifier)
    claims = verifier.verify(real.report, policy_for(real), now=NOW, endorsements=real.endorsements)
    assert claims.product == "Milan"


def test_claims_to_dict_is_json(sets: dict[str, RealSet]) -> None:
    out = verify(sets["trustee-azure-genoa"]).to_dict()
    text = json.dumps(out)
    assert out["reported_tcb"] == {"bootloader": 10, "tee": 0, "snp": 23, "microcode": 84}
    assert out["kind"] == "sev-snp" and out["signing_key"] == "vcek"
    assert out["cpuid"] == [0x19, 0x11, 0x01] and out["current_firmware"] == [1, 55, 40]
    assert sets["trustee-azure-genoa"].measurement in text


def test_cert_table_blob_is_accepted(sets: dict[str, RealSet]) -> None:
    real = sets["go-sev-guest-milan"]
    vcek = real.certificates[0]
    ask_pem, ark_pem = real.certificates[1].split(b"-----END CERTIFICATE-----")[:2]
    ask, ark = (_pem_to_der(p) for p in (ask_pem, ark_pem))
    table = build_cert_table([(VCEK_GUID, vcek), (ASK_GUID, ask), (ARK_GUID, ark)])
    claims = verify(real, certs=(table,))
    assert claims.measurement.hex() == real.measurement


def _pem_to_der(pem: bytes) -> bytes:
    body = pem.split(b"-----BEGIN CERTIFICATE-----")[1]
    return base64.b64decode(b"".join(body.split()))


# ---- authenticity failures ------------------------------------------------------------------


@pytest.mark.parametrize(
    "offset",
    [0x04, 0x08 + 2, 0x30, 0x50, 0x90, 0x90 + 47, 0xC0, 0x1A0, 0x1E8, 0x2A0, 0x2A0 + 72],
    ids=[
        "guest_svn",
        "policy",
        "vmpl",
        "report_data",
        "measurement",
        "measurement-end",
        "host_data",
        "chip_id",
        "current_build",
        "sig-r",
        "sig-s",
    ],
)
def test_bit_flip_in_report_is_signature_error(real_set: RealSet, offset: int) -> None:
    raw = bytearray(real_set.report)
    raw[offset] ^= 0x01 if offset != 0x08 + 2 else 0x08  # policy: flip bit 19 (debug)
    with pytest.raises(SignatureError, match="report signature"):
        verify(real_set, report=bytes(raw))


def test_flip_to_vlek_needs_a_vlek(sets: dict[str, RealSet]) -> None:
    raw = bytearray(sets["virtee-sev-milan"].report)
    raw[0x48] = 1 << 2  # SIGNING_KEY = VLEK
    with pytest.raises(ChainError, match="no VLEK"):
        verify(sets["virtee-sev-milan"], report=bytes(raw))


def _der_certs(real: RealSet) -> list[bytes]:
    from blindai.attestation.snp._certs import load_certificates

    return [der(c) for c in load_certificates(real.certificates)]


@pytest.mark.parametrize("role", ["leaf", "intermediate", "ark"])
@pytest.mark.parametrize("where", [0.3, 0.6, -1], ids=["tbs-early", "tbs-late", "signature"])
def test_bit_flip_in_each_certificate(real_set: RealSet, role: str, where: float) -> None:
    certs = _der_certs(real_set)  # [leaf, ASK, ARK] or [leaf, ASK, ARK, ASVK]
    intermediate = 3 if real_set.signing_key == "vlek" else 1
    which = {"leaf": 0, "intermediate": intermediate, "ark": 2}[role]
    target = bytearray(certs[which])
    pos = len(target) - 1 if where == -1 else int(len(target) * where)
    target[pos] ^= 0x01
    certs[which] = bytes(target)
    with pytest.raises((SignatureError, ChainError)):
        verify(real_set, certs=tuple(certs))


def test_vcek_of_another_machine(sets: dict[str, RealSet]) -> None:
    virtee, go = sets["virtee-sev-milan"], sets["go-sev-guest-milan"]
    certs = (go.certificates[0], virtee.certificates[1])
    with pytest.raises(SignatureError):
        verify(virtee, certs=certs)


def test_right_vcek_is_found_among_others(sets: dict[str, RealSet]) -> None:
    virtee, go = sets["virtee-sev-milan"], sets["go-sev-guest-milan"]
    certs = (go.certificates[0], virtee.certificates[0], virtee.certificates[1])
    assert verify(virtee, certs=certs).chip_id.hex() == virtee.chip_id


def test_genoa_report_with_milan_chain(sets: dict[str, RealSet]) -> None:
    genoa, milan = sets["trustee-azure-genoa"], sets["virtee-sev-milan"]
    with pytest.raises(ChainError, match="SEV-Milan"):
        verify(genoa, certs=(genoa.certificates[0], milan.certificates[1]))


@pytest.mark.parametrize("drop", [1, 2], ids=["no-ask", "no-ark"])
def test_incomplete_chain(sets: dict[str, RealSet], drop: int) -> None:
    real = sets["virtee-sev-milan"]
    certs = _der_certs(real)
    del certs[drop]
    with pytest.raises(ChainError):
        verify(real, certs=tuple(certs))


def test_no_certificates(sets: dict[str, RealSet]) -> None:
    real = sets["virtee-sev-milan"]
    with pytest.raises(ChainError, match="no certificates"):
        VERIFIER.verify(real.report, policy_for(real), now=NOW)


def test_ark_not_pinned(real_set: RealSet) -> None:
    verifier = SnpVerifier(trusted_ark_fingerprints=[b"\x00" * 32])
    with pytest.raises(ChainError, match="pinned"):
        verifier.verify(
            real_set.report, policy_for(real_set), now=NOW, endorsements=real_set.endorsements
        )


@pytest.mark.parametrize(
    ("name", "when"),
    [
        ("go-sev-guest-milan", datetime(2022, 9, 24, tzinfo=timezone.utc)),
        ("go-sev-guest-milan", datetime(2029, 9, 25, tzinfo=timezone.utc)),
        ("trustee-milan-vlek", datetime(2024, 12, 10, tzinfo=timezone.utc)),
        ("trustee-milan-vlek", datetime(2025, 12, 11, tzinfo=timezone.utc)),
        ("trustee-azure-genoa", datetime(2025, 1, 1, tzinfo=timezone.utc)),
        ("virtee-sev-milan", datetime(2050, 1, 1, tzinfo=timezone.utc)),
    ],
)
def test_outside_validity(sets: dict[str, RealSet], name: str, when: datetime) -> None:
    with pytest.raises(ChainError, match="valid"):
        verify(sets[name], now=when)


def test_naive_time_is_configuration_error(sets: dict[str, RealSet]) -> None:
    with pytest.raises(ConfigurationError, match="timezone"):
        verify(sets["virtee-sev-milan"], now=datetime(2025, 6, 1))


def test_wrong_policy_type(sets: dict[str, RealSet]) -> None:
    real = sets["virtee-sev-milan"]
    with pytest.raises(ConfigurationError, match="SnpPolicy"):
        VERIFIER.verify(real.report, None, now=NOW, endorsements=real.endorsements)  # type: ignore[arg-type]


def test_truncated_report_through_verify(sets: dict[str, RealSet]) -> None:
    with pytest.raises(EvidenceError):
        verify(sets["virtee-sev-milan"], report=sets["virtee-sev-milan"].report[:-1])


@pytest.mark.parametrize("pins", [[], [b"\x00" * 31]])
def test_constructor_needs_fingerprints(pins: list[bytes]) -> None:
    with pytest.raises(ConfigurationError):
        SnpVerifier(trusted_ark_fingerprints=pins)


# ---- policy on real, authentic reports ------------------------------------------------------


def test_debug_guest_is_refused_by_default(sets: dict[str, RealSet]) -> None:
    with pytest.raises(PolicyError) as info:
        verify(sets["go-sev-guest-milan"], allow_debug=False)
    assert [str(v) for v in info.value.violations] == ["debug: expected DEBUG clear, got DEBUG set"]
    assert info.value.violations[0].value == 0xB0000  # the raw guest policy (SMT, DEBUG)


def test_vlek_at_vmpl_1_is_refused_by_default(sets: dict[str, RealSet]) -> None:
    with pytest.raises(PolicyError) as info:
        verify(sets["trustee-milan-vlek"], max_vmpl=0)
    assert [(v.field, v.actual) for v in info.value.violations] == [("vmpl", "1")]


def test_vlek_refused_when_only_vcek_allowed(sets: dict[str, RealSet]) -> None:
    with pytest.raises(PolicyError, match="signing_key"):
        verify(sets["trustee-milan-vlek"], allowed_signing_keys=["vcek"])


def test_min_tcb(sets: dict[str, RealSet]) -> None:
    real = sets["virtee-sev-milan"]
    assert verify(real, min_tcb="0300000000000873").reported_tcb.snp == 8
    with pytest.raises(PolicyError, match="reported_tcb"):
        verify(real, min_tcb={"bootloader": 3, "tee": 0, "snp": 9, "microcode": 115})


def test_every_violation_at_once(sets: dict[str, RealSet]) -> None:
    real = sets["go-sev-guest-milan"]
    with pytest.raises(PolicyError) as info:
        verify(
            real,
            measurement="00" * 48,
            allow_debug=False,
            host_data="11" * 32,
            min_tcb={"bootloader": 3, "tee": 0, "snp": 5, "microcode": 68},
            products=["Genoa"],
        )
    fields = [v.field for v in info.value.violations]
    tcbs = ["reported_tcb", "committed_tcb", "launch_tcb", "current_tcb"]  # all four equal here
    assert fields == ["measurement", "host_data", "debug", *tcbs, "product"]


def test_id_key_digest(sets: dict[str, RealSet]) -> None:
    real = sets["trustee-azure-genoa"]
    digest = (
        "942fd93ebde6ea7a96efadeafc60f1c6b3d10e70"
        "3b1dafd7555b92f7f3d32d0e006767648cba5b102af3d65756af4177"
    )
    assert verify(real, id_key_digest=digest).id_key_digest.hex() == digest
    with pytest.raises(PolicyError, match="id_key_digest"):
        verify(real, id_key_digest="00" * 48)


def test_a_guest_that_allows_a_migration_agent_is_refused_by_default(real_set: RealSet) -> None:
    """Guest policy bit 18 (MIGRATE_MA) lets the host associate a migration agent, which can
    export the guest's memory; the agent is not in the guest's MEASUREMENT. No real report here
    has the bit set, so the check is shown on each real report's verified claims with the bit
    flipped in them (the signature is not claimed to cover the change)."""
    authentic = VERIFIER.verify_authenticity(
        real_set.report, now=NOW, endorsements=real_set.endorsements
    )
    assert not authentic.guest_policy >> 18 & 1
    default = policy_for(real_set)
    assert default.allow_migration_agent is False
    assert default.check(authentic) == []
    migratable = replace(authentic, guest_policy=authentic.guest_policy | 1 << 18)
    got = [(v.field, v.expected, v.actual, v.value) for v in default.check(migratable)]
    assert got == [("guest_policy", "MIGRATE_MA clear", "MIGRATE_MA set", migratable.guest_policy)]
    assert policy_for(real_set, allow_migration_agent=True).check(migratable) == []
    with pytest.raises(ConfigurationError, match="true or false"):
        policy_for(real_set, allow_migration_agent=1)


def test_a_policy_without_min_tcb_is_refused_as_it_accepts_any_firmware(
    sets: dict[str, RealSet],
) -> None:
    """SEV-SNP has no TCB status: without min_tcb a policy accepted this real report whatever
    its firmware and microcode (AMD certifies a VCEK for old TCB versions too, and a host may
    report an older TCB than it runs). Now ConfigurationError unless min_tcb is given or
    ``allow_any_tcb = true`` says so; allow_any_measurement (defaults only) is unchanged."""
    real = sets["virtee-sev-milan"]
    with pytest.raises(ConfigurationError, match="min_tcb"):
        SnpPolicy.from_mapping({"measurement": real.measurement})
    bl, tee, snp, ucode = real.reported_tcb
    floor = {"bootloader": bl, "tee": tee, "snp": snp, "microcode": ucode}
    assert verify(real, min_tcb=floor).reported_tcb == TcbVersion(**floor)
    with pytest.raises(PolicyError) as info:
        verify(real, min_tcb={**floor, "microcode": ucode + 1})
    fields = [v.field for v in info.value.violations]  # the report's four TCBs are equal
    assert fields == ["reported_tcb", "committed_tcb", "launch_tcb", "current_tcb"]
    any_tcb = SnpPolicy.from_mapping({"measurement": real.measurement, "allow_any_tcb": True})
    assert (
        any_tcb.check(
            VERIFIER.verify_authenticity(real.report, now=NOW, endorsements=real.endorsements)
        )
        == []
    )
    assert SnpPolicy.from_mapping({"allow_any_measurement": True}).min_tcb is None


def test_min_tcb_also_bounds_committed_current_and_launch_tcb(sets: dict[str, RealSet]) -> None:
    """min_tcb was compared with REPORTED_TCB alone. COMMITTED_TCB is the floor the firmware may
    be rolled back to, live, while the guest runs; LAUNCH_TCB the firmware the guest was
    launched under. A platform whose committed TCB is below the minimum can be taken back to
    the vulnerable firmware after the client has verified it. The real VLEK report has REPORTED
    217 < COMMITTED 219 = LAUNCH < CURRENT 220 (microcode); the lower values are set in its
    verified claims (no signature claimed to cover them)."""
    real = sets["trustee-milan-vlek"]
    claims = VERIFIER.verify_authenticity(real.report, now=NOW, endorsements=real.endorsements)
    ucode = (claims.reported_tcb, claims.committed_tcb, claims.launch_tcb, claims.current_tcb)
    assert [t.microcode for t in ucode] == [217, 219, 219, 220]
    at_reported = policy_for(real)
    assert at_reported.check(claims) == []
    old = replace(claims.reported_tcb, microcode=216)
    for name in ("committed_tcb", "launch_tcb", "current_tcb"):
        lowered = replace(claims, **{name: old})
        assert [(v.field, v.actual) for v in at_reported.check(lowered)] == [(name, str(old))]


# --- regression: guest policy bits other than DEBUG and MIGRATE_MA were not checked --------


REAL_POLICIES = {
    "go-sev-guest-milan": 0xB0000,  # SMT, DEBUG
    "trustee-azure-genoa": 0x3001F,  # SMT, ABI 0.31
    "trustee-milan-vlek": 0x30000,  # SMT
    "virtee-sev-milan": 0x30000,  # SMT
}


def _authentic(real: RealSet) -> SnpClaims:
    return VERIFIER.verify_authenticity(real.report, now=NOW, endorsements=real.endorsements)


def test_every_real_report_allows_smt_and_the_default_accepts_it(real_set: RealSet) -> None:
    """SMT (bit 16) is set in every real report: the default accepts it; a policy can refuse it
    with ``allowed_policy_bits = []`` (a sibling thread could observe the guest's)."""
    authentic = _authentic(real_set)
    assert authentic.guest_policy == REAL_POLICIES[real_set.name]
    assert policy_for(real_set).allowed_policy_bits == frozenset({"SMT"})
    assert policy_for(real_set).check(authentic) == []
    got = [
        (v.field, str(v), v.value)
        for v in policy_for(real_set, allowed_policy_bits=[]).check(authentic)
    ]
    assert got == [
        ("guest_policy", "guest_policy: expected SMT clear, got SMT set", authentic.guest_policy)
    ]
    no_smt = replace(authentic, guest_policy=authentic.guest_policy & ~(1 << 16))
    assert policy_for(real_set, allowed_policy_bits=[]).check(no_smt) == []


def test_a_guest_that_allows_cxl_is_refused_by_default(real_set: RealSet) -> None:
    """CXL_ALLOW (bit 21) lets CXL devices or memory, outside the SoC, be populated for the
    guest; no real report has it, so it is refused unless allowed by name. Shown on each real
    report's verified claims with the bit set in them."""
    authentic = _authentic(real_set)
    cxl = replace(authentic, guest_policy=authentic.guest_policy | 1 << 21)
    assert [str(v) for v in policy_for(real_set).check(cxl)] == [
        "guest_policy: expected CXL_ALLOW clear, got CXL_ALLOW set"
    ]
    allowing = policy_for(real_set, allowed_policy_bits=["SMT", "CXL_ALLOW"])
    assert allowing.check(cxl) == []


@pytest.mark.parametrize(
    ("name", "bit"),
    [
        ("SINGLE_SOCKET", 20),
        ("MEM_AES_256_XTS", 22),
        ("RAPL_DIS", 23),
        ("CIPHERTEXT_HIDING_DRAM", 24),
        ("PAGE_SWAP_DISABLE", 25),
    ],
)
def test_a_policy_can_require_each_restriction_bit(
    sets: dict[str, RealSet], name: str, bit: int
) -> None:
    """No real report sets a restriction bit, so none is required by default; required, a
    report without it is refused, naming it, and one with it (set in the verified claims)
    accepted."""
    real = sets["trustee-azure-genoa"]
    authentic = _authentic(real)
    assert policy_for(real).check(authentic) == []
    strict = policy_for(real, required_policy_bits=[name])
    assert [(v.field, v.expected, v.actual) for v in strict.check(authentic)] == [
        ("guest_policy", f"{name} set", f"{name} clear")
    ]
    assert strict.check(replace(authentic, guest_policy=authentic.guest_policy | 1 << bit)) == []


def test_a_policy_can_ask_for_a_minimum_guest_policy_abi(sets: dict[str, RealSet]) -> None:
    """ABI_MAJOR.ABI_MINOR (bits 15:0) is the lowest firmware ABI the guest's launch asked
    for; the Azure Genoa report asks 0.31, the others 0.0."""
    real = sets["trustee-azure-genoa"]
    authentic = _authentic(real)
    assert policy_for(real, min_policy_abi="0.31").check(authentic) == []
    got = [
        (v.field, str(v), v.value) for v in policy_for(real, min_policy_abi="0.32").check(authentic)
    ]
    assert got == [("guest_policy", "guest_policy: expected ABI >= 0.32, got ABI 0.31", 0x3001F)]
    refused = policy_for(real, min_policy_abi="1.0").check(authentic)
    assert [str(v) for v in refused] == ["guest_policy: expected ABI >= 1.0, got ABI 0.31"]
