"""SnpPolicy: loading a [sev_snp] section, refusing permissive or bad policies, check()."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import timezone

import pytest

from blindai.attestation import EvidenceKind, Policy
from blindai.attestation.claims import VerifiedClaims
from blindai.attestation.endorsements import Endorsements
from blindai.attestation.snp import SnpClaims, SnpPolicy, SnpVerifier, TcbVersion
from blindai.errors import ConfigurationError, Violation

from ._snp_kit import NOW, FakeAmd, make_report, sign_report

M = "ab" * 48


@pytest.fixture(scope="module")
def claims(fake_amd: FakeAmd) -> SnpClaims:
    report = sign_report(make_report(measurement=bytes.fromhex(M)), fake_amd.vcek_key)
    return SnpVerifier(trusted_ark_fingerprints=[fake_amd.ark_fingerprint]).verify_authenticity(
        report, now=NOW, endorsements=Endorsements(certificates=fake_amd.chain(fake_amd.vcek()))
    )


def test_minimal_policy_and_defaults() -> None:
    policy = SnpPolicy.from_mapping({"measurement": M, "min_tcb": "0300000000000873"})
    assert policy.measurement == bytes.fromhex(M)
    assert policy.allow_debug is False and policy.allow_migration_agent is False
    assert policy.max_vmpl == 0
    assert policy.allowed_signing_keys == frozenset({"vcek", "vlek"})
    assert policy.allow_any_tcb is False and policy.host_data is None


def test_min_tcb_or_allow_any_tcb_is_required_beside_a_measurement() -> None:
    with pytest.raises(ConfigurationError, match="give min_tcb"):
        SnpPolicy.from_mapping({"measurement": M})
    with pytest.raises(ConfigurationError, match="give min_tcb"):
        SnpPolicy.from_mapping({"measurement": M, "allow_any_tcb": False})
    assert SnpPolicy.from_mapping({"measurement": M, "allow_any_tcb": True}).min_tcb is None
    with pytest.raises(ConfigurationError, match="not both"):
        SnpPolicy.from_mapping({"measurement": M, "allow_any_tcb": True, "min_tcb": "00" * 8})
    with pytest.raises(ConfigurationError, match="true or false"):
        SnpPolicy.from_mapping({"measurement": M, "allow_any_tcb": "yes"})


def test_full_policy() -> None:
    policy = SnpPolicy.from_mapping(
        {
            "measurement": M,
            "host_data": "01" * 32,
            "id_key_digest": "02" * 48,
            "author_key_digest": "03" * 48,
            "allow_debug": True,
            "min_tcb": {"bootloader": 3, "tee": 0, "snp": 8, "microcode": 115},
            "max_vmpl": 2,
            "allowed_signing_keys": ["vlek"],
            "products": ["Milan", "Genoa"],
        }
    )
    assert policy.min_tcb == TcbVersion(bootloader=3, tee=0, snp=8, microcode=115)
    assert policy.products == frozenset({"Milan", "Genoa"})
    assert policy.allowed_signing_keys == frozenset({"vlek"})


def test_min_tcb_as_hex_is_in_report_byte_order() -> None:
    policy = SnpPolicy.from_mapping({"measurement": M, "min_tcb": "0300000000000873"})
    assert policy.min_tcb == TcbVersion(bootloader=3, tee=0, snp=8, microcode=115)


def test_from_toml_section() -> None:
    policy = Policy.from_toml(
        f'[sev_snp]\nmeasurement = "{M}"\nmin_tcb = {{ bootloader = 1, tee = 0, snp = 2, '
        "microcode = 3 }\n"
    )
    snp = policy.for_kind(EvidenceKind.SEV_SNP)
    assert isinstance(snp, SnpPolicy)
    assert snp.min_tcb == TcbVersion(bootloader=1, tee=0, snp=2, microcode=3)


def test_allow_any_measurement_must_be_explicit() -> None:
    with pytest.raises(ConfigurationError, match="needs a measurement"):
        SnpPolicy.from_mapping({})
    with pytest.raises(ConfigurationError, match="needs a measurement"):
        SnpPolicy.from_mapping({"allow_debug": False, "max_vmpl": 0})
    with pytest.raises(ConfigurationError, match="needs a measurement"):
        SnpPolicy.from_mapping({"allow_any_measurement": False})
    assert SnpPolicy.from_mapping({"allow_any_measurement": True}).measurement is None
    with pytest.raises(ConfigurationError, match="not both"):
        SnpPolicy.from_mapping({"allow_any_measurement": True, "measurement": M})


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"measurement": M, "mr_enclave": "00"}, "unknown key"),
        ({"measurement": "ab" * 47}, "48 bytes"),
        ({"measurement": "zz" * 48}, "not valid hex"),
        ({"measurement": 5}, "hex string"),
        ({"measurement": M, "host_data": "00" * 48}, "host_data must be 32 bytes"),
        ({"measurement": M, "id_key_digest": "00"}, "id_key_digest must be 48 bytes"),
        ({"measurement": M, "allow_debug": "yes"}, "true or false"),
        ({"measurement": M, "max_vmpl": 4}, "max_vmpl"),
        ({"measurement": M, "max_vmpl": -1}, "max_vmpl"),
        ({"measurement": M, "max_vmpl": True}, "max_vmpl"),
        ({"measurement": M, "max_vmpl": "0"}, "max_vmpl"),
        ({"measurement": M, "allowed_signing_keys": []}, "allowed_signing_keys"),
        ({"measurement": M, "allowed_signing_keys": ["ask"]}, "allowed_signing_keys"),
        ({"measurement": M, "allowed_signing_keys": "vcek"}, "list of strings"),
        ({"measurement": M, "products": []}, "products must not be empty"),
        ({"measurement": M, "products": [1]}, "list of strings"),
        ({"measurement": M, "min_tcb": "03000000000008"}, "16 digits"),
        ({"measurement": M, "min_tcb": "0300010000000873"}, "reserved"),
        ({"measurement": M, "min_tcb": {"bootloader": 1, "tee": 0, "snp": 0}}, "table"),
        (
            {"measurement": M, "min_tcb": {"bootloader": 1, "tee": 0, "snp": 0, "microcode": 256}},
            "0..255",
        ),
        ({"measurement": M, "min_tcb": 5}, "table"),
    ],
)
def test_bad_policies_are_configuration_errors(data: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        SnpPolicy.from_mapping(data)


def test_accepting_policy(claims: SnpClaims) -> None:
    assert SnpPolicy(measurement=bytes.fromhex(M), allow_any_tcb=True).check(claims) == []


def test_each_rule(claims: SnpClaims) -> None:
    base = SnpPolicy(measurement=bytes.fromhex(M), allow_any_tcb=True)
    debug_claims = replace(claims, debug=True, vmpl=2, signing_key="vlek", product="Genoa")
    got = SnpPolicy(
        measurement=bytes(48),
        host_data=b"\x01" * 32,
        id_key_digest=b"\x02" * 48,
        author_key_digest=b"\x03" * 48,
        min_tcb=TcbVersion(bootloader=3, tee=0, snp=8, microcode=116),
        max_vmpl=1,
        allowed_signing_keys=frozenset({"vcek"}),
        products=frozenset({"Milan"}),
    ).check(debug_claims)
    assert [v.field for v in got] == [
        "measurement",
        "host_data",
        "id_key_digest",
        "author_key_digest",
        "debug",
        "reported_tcb",
        "committed_tcb",
        "launch_tcb",
        "current_tcb",
        "vmpl",
        "signing_key",
        "product",
    ]
    assert got[0] == Violation("measurement", "00" * 48, M)
    assert got[9] == Violation("vmpl", "<= 1", "2")
    assert base.check(replace(claims, vmpl=1)) == [Violation("vmpl", "<= 0", "1")]
    assert replace(base, allow_debug=True).check(replace(claims, debug=True)) == []


def test_check_refuses_other_kinds() -> None:
    other = VerifiedClaims(
        kind=EvidenceKind.TDX,
        measurement=bytes(48),
        report_data=bytes(64),
        debug=False,
        verified_at=NOW.astimezone(timezone.utc),
    )
    policy = SnpPolicy(measurement=bytes(48), allow_any_tcb=True)
    assert policy.check(other) == [Violation("kind", "sev-snp", "tdx")]


# --- regression: the typed policy took what from_mapping refuses ---------------------------


def test_a_typed_policy_refuses_mistyped_flags_tcb_and_names(claims: SnpClaims) -> None:
    """from_mapping takes only true or false for each allow_*, a table or 16 hex digits for
    min_tcb, and lists of names; SnpPolicy(...) took anything: allow_any_tcb="false" (truthy:
    any TCB accepted, though it reads as not), allow_migration_agent="no" (the same),
    products="Milan" (``product in "Milan"``, a substring test), min_tcb as hex (an
    AttributeError at verification) and allowed_signing_keys="vcek" (a TypeError)."""
    m = bytes.fromhex(M)
    tcb = TcbVersion(bootloader=0, tee=0, snp=0, microcode=0)
    with pytest.raises(ConfigurationError, match="allow_any_tcb must be true or false"):
        SnpPolicy(measurement=m, allow_any_tcb="false")  # type: ignore[arg-type]
    for flag in ("allow_migration_agent", "allow_debug"):
        with pytest.raises(ConfigurationError, match=f"{flag} must be true or false"):
            SnpPolicy(measurement=m, min_tcb=tcb, **{flag: "no"})  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="min_tcb must be a TcbVersion"):
        SnpPolicy(measurement=m, min_tcb="0300000000000873")  # type: ignore[arg-type]
    for name, wrong in (("products", "Milan"), ("allowed_signing_keys", "vcek")):
        with pytest.raises(ConfigurationError, match=f"{name} must be a set of names"):
            SnpPolicy(measurement=m, min_tcb=tcb, **{name: wrong})  # type: ignore[arg-type]
    typed = SnpPolicy(measurement=m, min_tcb=tcb, products=frozenset({"Milan"}))
    assert typed.check(claims) == []


# --- guest policy bits: the TOML keys and the typed fields validate alike ------------------

TCB = TcbVersion(bootloader=0, tee=0, snp=0, microcode=0)


def _both(**keys: object) -> tuple[SnpPolicy | Exception, SnpPolicy | Exception]:
    """The policy from TOML values and from typed values (lists as sets, the ABI as a tuple),
    or the error each raised."""
    toml: dict[str, object] = {"measurement": M, "min_tcb": "00" * 8, **keys}
    typed: dict[str, object] = {}
    for key, value in keys.items():
        if isinstance(value, list):
            value = frozenset(value)
        elif key == "min_policy_abi" and isinstance(value, str) and value.count(".") == 1:
            major, minor = value.split(".")
            value = (int(major), int(minor)) if (major + minor).isdigit() else value
        typed[key] = value
    out: list[SnpPolicy | Exception] = []
    for build in (
        lambda: SnpPolicy.from_mapping(toml),
        lambda: SnpPolicy(measurement=bytes.fromhex(M), min_tcb=TCB, **typed),  # type: ignore[arg-type]
    ):
        try:
            out.append(build())
        except ConfigurationError as exc:
            out.append(exc)
    return out[0], out[1]


@pytest.mark.parametrize(
    ("keys", "match"),
    [
        (
            {"allowed_policy_bits": ["SMT", "HYPERTHREADING"]},
            "unknown or misplaced bit.*HYPERTHREADING",
        ),
        ({"allowed_policy_bits": ["DEBUG"]}, "misplaced bit.*DEBUG; .*DEBUG is allow_debug's"),
        ({"allowed_policy_bits": ["MIGRATE_MA"]}, "MIGRATE_MA allow_migration_agent's"),
        (
            {"allowed_policy_bits": ["SINGLE_SOCKET"]},
            "SINGLE_SOCKET; .*required_policy_bits the restrictions .*SINGLE_SOCKET",
        ),
        (
            {"required_policy_bits": ["SMT"]},
            "SMT; allowed_policy_bits takes the permissions CXL_ALLOW, SMT",
        ),
        (
            {"required_policy_bits": ["CIPHERTEXT_HIDING"]},
            "CIPHERTEXT_HIDING; .*restrictions CIPHERTEXT_HIDING_DRAM",
        ),
        ({"required_policy_bits": "RAPL_DIS"}, "required_policy_bits must be a "),
        ({"allowed_policy_bits": "SMT"}, "allowed_policy_bits must be a "),
        ({"min_policy_abi": "1"}, 'min_policy_abi is "MAJOR.MINOR"'),
        ({"min_policy_abi": "1.2.3"}, 'min_policy_abi is "MAJOR.MINOR"'),
        ({"min_policy_abi": "1.256"}, 'min_policy_abi is "MAJOR.MINOR"'),
        ({"min_policy_abi": "a.b"}, 'min_policy_abi is "MAJOR.MINOR"'),
        ({"min_policy_abi": 1.5}, 'min_policy_abi is "MAJOR.MINOR"'),
    ],
)
def test_bad_guest_policy_keys_are_refused_in_toml_and_typed_alike(
    keys: dict[str, object], match: str
) -> None:
    for built in _both(**keys):
        assert isinstance(built, ConfigurationError), built
        assert re.search(match, str(built)), str(built)


@pytest.mark.parametrize(
    "keys",
    [
        {},
        {"allowed_policy_bits": []},
        {"allowed_policy_bits": ["SMT", "CXL_ALLOW"]},
        {"required_policy_bits": ["SINGLE_SOCKET", "PAGE_SWAP_DISABLE"]},
        {"min_policy_abi": "1.51"},
    ],
)
def test_good_guest_policy_keys_build_the_same_policy_from_toml_and_typed(
    keys: dict[str, object],
) -> None:
    toml, typed = _both(**keys)
    assert isinstance(toml, SnpPolicy) and toml == typed


def test_typed_guest_policy_fields_refuse_what_toml_cannot_say() -> None:
    m = bytes.fromhex(M)
    for abi in ((1,), (1, 2, 3), (True, 0), (1, -1), [1, 51], ("1", "51")):
        with pytest.raises(ConfigurationError, match="min_policy_abi"):
            SnpPolicy(measurement=m, min_tcb=TCB, min_policy_abi=abi)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="set of bit names"):
        SnpPolicy(measurement=m, min_tcb=TCB, allowed_policy_bits=frozenset({16}))  # type: ignore[arg-type]
