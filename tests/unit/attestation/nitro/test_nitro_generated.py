"""Documents built and signed here, under a generated P-384 chain shaped like AWS's.

They reach what the real vectors cannot: well-signed documents with a wrong alg, digest or
field type, tagged COSE, non-preferred CBOR, broken or reordered chains, odd algorithms.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone
from typing import Any

import cbor2
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from blindai.attestation.endorsements import Endorsements
from blindai.attestation.nitro import NitroClaims, NitroPolicy, NitroVerifier
from blindai.errors import (
    ChainError,
    ConfigurationError,
    EvidenceError,
    SignatureError,
)

ANY = NitroPolicy(allow_any_measurement=True)


@pytest.fixture
def verifier(chain: Any) -> NitroVerifier:
    return NitroVerifier(trusted_root_fingerprints=[chain.root_fingerprint])


def _verify(verifier: NitroVerifier, doc: bytes, kit: Any, **kwargs: Any) -> NitroClaims:
    return verifier.verify(doc, kwargs.pop("policy", ANY), now=kwargs.pop("now", kit.NOW), **kwargs)


def test_generated_document_verifies(verifier: NitroVerifier, chain: Any, kit: Any) -> None:
    claims = _verify(verifier, kit.make_document(chain), kit)
    assert claims.timestamp == kit.DOC_TIME
    assert claims.user_data == claims.report_data == b"\x01" * 32
    assert claims.nonce == b"\x02" * 16
    assert claims.public_key is None
    assert claims.debug is False
    assert claims.certificate == chain.leaf.der


def test_embedded_roots_refuse_generated_chain(chain: Any, kit: Any) -> None:
    with pytest.raises(ChainError, match="pinned"):
        _verify(NitroVerifier.with_embedded_roots(), kit.make_document(chain), kit)


def test_endorsements_are_ignored(verifier: NitroVerifier, chain: Any, kit: Any) -> None:
    endorsements = Endorsements(certificates=(b"unused",))
    assert _verify(verifier, kit.make_document(chain), kit, endorsements=endorsements)


def test_absent_optional_fields(verifier: NitroVerifier, chain: Any, kit: Any) -> None:
    doc = kit.make_document(chain, public_key=kit.DROP, user_data=kit.DROP, nonce=kit.DROP)
    claims = _verify(verifier, doc, kit)
    assert (claims.public_key, claims.user_data, claims.nonce) == (None, None, None)
    assert claims.report_data == b""


def test_empty_user_data_and_nonce_allowed(verifier: NitroVerifier, chain: Any, kit: Any) -> None:
    claims = _verify(verifier, kit.make_document(chain, user_data=b"", nonce=b""), kit)
    assert (claims.user_data, claims.nonce) == (b"", b"")


# -- the COSE envelope ----------------------------------------------------------------------


def test_tag_18_accepted(verifier: NitroVerifier, chain: Any, kit: Any) -> None:
    assert _verify(verifier, kit.make_document(chain, kit.DocSpec(tag=18)), kit)


@pytest.mark.parametrize("tag", [17, 98, 24, 1234])
def test_other_tags_refused(verifier: NitroVerifier, chain: Any, kit: Any, tag: int) -> None:
    with pytest.raises(EvidenceError, match=f"tag {tag}"):
        _verify(verifier, kit.make_document(chain, kit.DocSpec(tag=tag)), kit)


def test_self_describe_tag_refused(verifier: NitroVerifier, chain: Any, kit: Any) -> None:
    # cbor2 drops tag 55799 while decoding; the re-encoding check notices
    with pytest.raises(EvidenceError, match="preferred"):
        _verify(verifier, kit.make_document(chain, kit.DocSpec(tag=55799)), kit)


@pytest.mark.parametrize(
    "header",
    [
        {1: -7},  # ES256
        {1: -36},  # ES512
        {1: -37},  # PS256
        {1: "ES384"},
        {},
        {1: -35, 4: b"kid"},
        {1: -35, 2: [1]},
        {True: -35},
    ],
    ids=repr,
)
def test_protected_header_other_than_es384(
    verifier: NitroVerifier, chain: Any, kit: Any, header: dict[Any, Any]
) -> None:
    spec = kit.DocSpec(protected=cbor2.dumps(header))
    with pytest.raises(EvidenceError, match="protected header"):
        _verify(verifier, kit.make_document(chain, spec), kit)


def test_empty_protected_bstr(verifier: NitroVerifier, chain: Any, kit: Any) -> None:
    with pytest.raises(EvidenceError, match="protected header"):
        _verify(verifier, kit.make_document(chain, kit.DocSpec(protected=b"")), kit)


def test_non_empty_unprotected_header(verifier: NitroVerifier, chain: Any, kit: Any) -> None:
    spec = kit.DocSpec(unprotected={1: -35})
    with pytest.raises(EvidenceError, match="unprotected"):
        _verify(verifier, kit.make_document(chain, spec), kit)


def _envelope(chain: Any, kit: Any) -> list[Any]:
    envelope: list[Any] = cbor2.loads(kit.make_document(chain))
    return envelope


@pytest.mark.parametrize(
    ("index", "value", "message"),
    [
        (0, {1: -35}, "protected header"),
        (1, [], "unprotected"),
        (2, None, "payload"),
        (2, "text", "payload"),
        (3, b"\x00" * 95, "96 bytes"),
        (3, b"\x00" * 97, "96 bytes"),
        (3, "sig", "96 bytes"),
    ],
)
def test_envelope_member_types(
    verifier: NitroVerifier, chain: Any, kit: Any, index: int, value: Any, message: str
) -> None:
    envelope = _envelope(chain, kit)
    envelope[index] = value
    with pytest.raises(EvidenceError, match=message):
        _verify(verifier, cbor2.dumps(envelope), kit)


@pytest.mark.parametrize("shape", ["three", "five", "map", "bytes", "int"])
def test_envelope_shape(verifier: NitroVerifier, chain: Any, kit: Any, shape: str) -> None:
    envelope = _envelope(chain, kit)
    item: Any = {
        "three": envelope[:3],
        "five": [*envelope, b""],
        "map": dict(enumerate(envelope)),
        "bytes": envelope[2],
        "int": 18,
    }[shape]
    with pytest.raises(EvidenceError, match="COSE_Sign1"):
        _verify(verifier, cbor2.dumps(item), kit)


def test_indefinite_length_envelope(verifier: NitroVerifier, chain: Any, kit: Any) -> None:
    raw = kit.make_document(chain)
    assert raw[0] == 0x84
    with pytest.raises(EvidenceError, match="preferred"):
        _verify(verifier, b"\x9f" + raw[1:] + b"\xff", kit)


def test_oversized_document(verifier: NitroVerifier, chain: Any, kit: Any) -> None:
    with pytest.raises(EvidenceError, match="larger than"):
        _verify(verifier, kit.make_document(chain, user_data=b"\x00" * 65536), kit)


def test_evidence_must_be_bytes(verifier: NitroVerifier, chain: Any, kit: Any) -> None:
    with pytest.raises(EvidenceError, match="bytes"):
        _verify(verifier, bytearray(kit.make_document(chain)), kit)  # type: ignore[arg-type]


# -- the payload ----------------------------------------------------------------------------


@pytest.mark.parametrize("digest", ["SHA256", "SHA512", "sha384", ""])
def test_digest_other_than_sha384(
    verifier: NitroVerifier, chain: Any, kit: Any, digest: str
) -> None:
    with pytest.raises(EvidenceError):
        _verify(verifier, kit.make_document(chain, digest=digest), kit)


@pytest.mark.parametrize(
    "name", ["module_id", "digest", "timestamp", "pcrs", "certificate", "cabundle"]
)
def test_missing_required_field(verifier: NitroVerifier, chain: Any, kit: Any, name: str) -> None:
    with pytest.raises(EvidenceError, match=rf"lacks field.*{name}"):
        _verify(verifier, kit.make_document(chain, **{name: kit.DROP}), kit)


def test_unknown_field(verifier: NitroVerifier, chain: Any, kit: Any) -> None:
    with pytest.raises(EvidenceError, match=r"unknown.*region"):
        _verify(verifier, kit.make_document(chain, region="us-east-1"), kit)


def _pcrs(kit: Any, chain: Any, **changes: Any) -> dict[Any, Any]:
    pcrs: dict[Any, Any] = dict(kit.default_payload(chain)["pcrs"])
    pcrs.update(changes.get("set", {}))
    for index in changes.get("drop", ()):
        pcrs.pop(index)
    return pcrs


BAD_VALUES: list[tuple[str, Any]] = [
    ("module_id", b"i-0123"),
    ("module_id", ""),
    ("module_id", 7),
    ("timestamp", "1665651482136"),
    ("timestamp", 0),
    ("timestamp", -1),
    ("timestamp", 1.5),
    ("timestamp", True),
    ("timestamp", 2**64),
    ("timestamp", 253402300800000),  # year 10000
    ("pcrs", [b"\x00" * 48]),
    ("pcrs", {}),
    ("certificate", "MIIC..."),
    ("certificate", b""),
    ("certificate", b"\x30" * 1025),
    ("cabundle", []),
    ("cabundle", b"\x30"),
    ("cabundle", [b""]),
    ("cabundle", ["MIIC..."]),
    ("public_key", b""),
    ("public_key", b"\x04" * 1025),
    ("public_key", "key"),
    ("user_data", b"\x00" * 513),
    ("user_data", "hello"),
    ("user_data", 0),
    ("nonce", b"\x00" * 513),
    ("nonce", ["n"]),
]


@pytest.mark.parametrize(
    ("name", "value"), BAD_VALUES, ids=[f"{n}={v!r:.20}" for n, v in BAD_VALUES]
)
def test_field_types_and_bounds(
    verifier: NitroVerifier, chain: Any, kit: Any, name: str, value: Any
) -> None:
    with pytest.raises(EvidenceError, match=name):
        _verify(verifier, kit.make_document(chain, **{name: value}), kit)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"set": {1: b"\x00" * 32}}, "PCR1"),
        ({"set": {1: b"\x00" * 64}}, "PCR1"),
        ({"set": {2: None}}, "PCR2"),
        ({"set": {32: b"\x00" * 48}}, "index"),
        ({"set": {-1: b"\x00" * 48}}, "index"),
        ({"set": {"3": b"\x00" * 48}}, "index"),
        ({"drop": [0]}, "PCR0"),
        ({"set": {i: b"\x00" * 48 for i in range(16, 33)}}, "1..32"),
    ],
)
def test_pcr_map(
    verifier: NitroVerifier, chain: Any, kit: Any, changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(EvidenceError, match=message):
        _verify(verifier, kit.make_document(chain, pcrs=_pcrs(kit, chain, **changes)), kit)


def test_32_pcrs_accepted(verifier: NitroVerifier, chain: Any, kit: Any) -> None:
    pcrs = _pcrs(kit, chain, set={i: b"\x00" * 48 for i in range(16, 32)})
    assert sorted(_verify(verifier, kit.make_document(chain, pcrs=pcrs), kit).pcrs) == list(
        range(32)
    )


def test_payload_not_a_map(verifier: NitroVerifier, chain: Any, kit: Any) -> None:
    spec = kit.DocSpec(payload_bytes=cbor2.dumps([1, 2, 3]))
    with pytest.raises(EvidenceError, match="map with text keys"):
        _verify(verifier, kit.make_document(chain, spec), kit)


def test_payload_with_integer_keys(verifier: NitroVerifier, chain: Any, kit: Any) -> None:
    payload = dict(enumerate(kit.default_payload(chain).values()))
    spec = kit.DocSpec(payload_bytes=cbor2.dumps(payload))
    with pytest.raises(EvidenceError, match="map with text keys"):
        _verify(verifier, kit.make_document(chain, spec), kit)


def _items(payload: dict[str, Any]) -> bytes:
    return b"".join(cbor2.dumps(k) + cbor2.dumps(v) for k, v in payload.items())


@pytest.mark.parametrize("form", ["indefinite map", "duplicate key", "long length", "trailing"])
def test_non_preferred_payload_encoding(
    verifier: NitroVerifier, chain: Any, kit: Any, form: str
) -> None:
    payload = kit.default_payload(chain)
    n = len(payload)
    if form == "indefinite map":
        body = b"\xbf" + _items(payload) + b"\xff"
    elif form == "duplicate key":
        body = bytes([0xA0 + n + 1]) + _items(payload) + _items({"nonce": b"\x03"})
    elif form == "long length":
        body = cbor2.dumps(payload).replace(b"\x66digest", b"\x78\x06digest")
        assert cbor2.loads(body) == payload
    else:
        body = cbor2.dumps(payload) + b"\x00"
    spec = kit.DocSpec(payload_bytes=body)
    with pytest.raises(EvidenceError, match="preferred"):
        _verify(verifier, kit.make_document(chain, spec), kit)


@pytest.mark.parametrize(
    "value",
    [cbor2.CBORTag(1234, b"x"), cbor2.CBORTag(24, cbor2.dumps(b"\x01"))],
    ids=["unknown tag", "embedded CBOR tag"],
)
def test_tags_inside_payload(verifier: NitroVerifier, chain: Any, kit: Any, value: Any) -> None:
    with pytest.raises(EvidenceError, match="tags"):
        _verify(verifier, kit.make_document(chain, user_data=value), kit)


def test_bignum_timestamp_refused(verifier: NitroVerifier, chain: Any, kit: Any) -> None:
    payload = kit.default_payload(chain)
    stamp = cbor2.dumps("timestamp") + cbor2.dumps(payload["timestamp"])
    raw = payload["timestamp"].to_bytes(6, "big")
    bignum = cbor2.dumps("timestamp") + b"\xc2" + cbor2.dumps(raw)
    body = cbor2.dumps(payload).replace(stamp, bignum)
    assert cbor2.loads(body)["timestamp"] == payload["timestamp"]
    with pytest.raises(EvidenceError, match="preferred"):
        _verify(verifier, kit.make_document(chain, kit.DocSpec(payload_bytes=body)), kit)


def test_tagged_protected_header_refused(verifier: NitroVerifier, chain: Any, kit: Any) -> None:
    spec = kit.DocSpec(protected=cbor2.dumps(cbor2.CBORTag(1234, {1: -35})))
    with pytest.raises(EvidenceError, match="protected header"):
        _verify(verifier, kit.make_document(chain, spec), kit)


# -- signature and chain --------------------------------------------------------------------


def test_signed_by_another_key(verifier: NitroVerifier, chain: Any, kit: Any) -> None:
    spec = kit.DocSpec(signer=ec.generate_private_key(ec.SECP384R1()))
    with pytest.raises(SignatureError):
        _verify(verifier, kit.make_document(chain, spec), kit)


def test_signed_by_the_issuer_of_the_leaf(verifier: NitroVerifier, chain: Any, kit: Any) -> None:
    spec = kit.DocSpec(signer=chain.cas[-1].key)
    with pytest.raises(SignatureError):
        _verify(verifier, kit.make_document(chain, spec), kit)


def _bundle_variants(chain: Any) -> dict[str, list[bytes]]:
    root, regional, zonal, instance = chain.cabundle
    return {
        "reversed": [root, instance, zonal, regional],
        "swapped": [root, zonal, regional, instance],
        "duplicate": [root, regional, zonal, zonal, instance],
        "extra root": [root, regional, zonal, instance, root],
        "no root": [regional, zonal, instance],
        "root only": [root],
        "missing zonal": [root, regional, instance],
    }


@pytest.mark.parametrize(
    ("variant", "message"),
    [
        ("reversed", "ordered chain"),
        ("swapped", "ordered chain"),
        ("duplicate", "ordered chain"),
        ("extra root", "ordered chain"),
        ("no root", "pinned"),
        ("root only", "chain rejected"),
        ("missing zonal", "chain rejected"),
    ],
)
def test_cabundle_not_the_ordered_chain(
    verifier: NitroVerifier, chain: Any, kit: Any, variant: str, message: str
) -> None:
    doc = kit.make_document(chain, cabundle=_bundle_variants(chain)[variant])
    with pytest.raises(ChainError, match=message):
        _verify(verifier, doc, kit)


def test_leaf_directly_under_root(kit: Any) -> None:
    root = kit.make_chain().root
    leaf = kit.issue(
        "enclave",
        root,
        not_before=kit.T0,
        not_after=kit.T0 + timedelta(hours=3),
        ca=False,
        key_ids=False,
    )
    short = type(kit.make_chain())(root=root, cas=[], leaf=leaf)
    verifier = NitroVerifier(trusted_root_fingerprints=[short.root_fingerprint])
    assert _verify(verifier, kit.make_document(short), kit).certificate == leaf.der


def test_certificate_not_der(verifier: NitroVerifier, chain: Any, kit: Any) -> None:
    with pytest.raises(EvidenceError, match="certificate is not a DER"):
        _verify(verifier, kit.make_document(chain, certificate=b"\x30\x03\x02\x01\x01"), kit)


def test_cabundle_member_not_der(verifier: NitroVerifier, chain: Any, kit: Any) -> None:
    bundle = [*chain.cabundle[:2], b"not a certificate", chain.cabundle[3]]
    with pytest.raises(EvidenceError, match=r"cabundle\[2\]"):
        _verify(verifier, kit.make_document(chain, cabundle=bundle), kit)


@pytest.mark.parametrize(
    ("leaf_kwargs", "message"),
    [
        ({"hash_alg": hashes.SHA256()}, "ECDSA/SHA-384"),
        ({"key": ec.generate_private_key(ec.SECP256R1())}, "P-384"),
        ({"key": ec.generate_private_key(ec.SECP521R1())}, "P-384"),
    ],
    ids=["sha256 signature", "p256 key", "p521 key"],
)
def test_leaf_algorithms(kit: Any, leaf_kwargs: dict[str, Any], message: str) -> None:
    odd = kit.make_chain(**leaf_kwargs)
    verifier = NitroVerifier(trusted_root_fingerprints=[odd.root_fingerprint])
    with pytest.raises(ChainError, match=message):
        _verify(verifier, kit.make_document(odd, kit.DocSpec(signer=odd.cas[-1].key)), kit)


@pytest.mark.parametrize(
    "usage", [{"digital_signature": False}, {"key_usage": False}], ids=["no bit", "no extension"]
)
def test_leaf_without_digital_signature_usage(kit: Any, usage: dict[str, bool]) -> None:
    odd = kit.make_chain(**usage)
    verifier = NitroVerifier(trusted_root_fingerprints=[odd.root_fingerprint])
    with pytest.raises(ChainError, match="digitalSignature"):
        _verify(verifier, kit.make_document(odd), kit)


def test_leaf_that_is_a_ca_refused(kit: Any) -> None:
    odd = kit.make_chain(ca=True)
    verifier = NitroVerifier(trusted_root_fingerprints=[odd.root_fingerprint])
    with pytest.raises(ChainError):
        _verify(verifier, kit.make_document(odd), kit)


def test_intermediate_that_is_not_a_ca_refused(kit: Any) -> None:
    good = kit.make_chain()
    fake = kit.issue(
        "instance",
        good.cas[1],
        not_before=kit.T0 - timedelta(hours=2),
        not_after=kit.T0 + timedelta(days=1),
        ca=False,
        key_ids=False,
    )
    leaf = kit.issue(
        "enclave",
        fake,
        not_before=kit.T0,
        not_after=kit.T0 + timedelta(hours=3),
        ca=False,
        key_ids=False,
    )
    odd = type(good)(root=good.root, cas=[*good.cas[:2], fake], leaf=leaf)
    verifier = NitroVerifier(trusted_root_fingerprints=[odd.root_fingerprint])
    with pytest.raises(ChainError):
        _verify(verifier, kit.make_document(odd), kit)


# -- time -----------------------------------------------------------------------------------

LAX = NitroPolicy(allow_any_measurement=True, max_age_seconds=10**9, max_clock_skew_seconds=10**9)


@pytest.mark.parametrize(
    ("stamp", "now", "label"),
    [
        (timedelta(seconds=-1), timedelta(hours=1), "document's timestamp"),
        (timedelta(hours=3, seconds=1), timedelta(hours=1), "document's timestamp"),
        (timedelta(hours=1), timedelta(hours=3, seconds=1), "verification time"),
        (timedelta(hours=1), timedelta(seconds=-1), "verification time"),
        (timedelta(hours=1), timedelta(days=40), "verification time"),
    ],
)
def test_chain_validity_at_both_times(
    verifier: NitroVerifier, chain: Any, kit: Any, stamp: timedelta, now: timedelta, label: str
) -> None:
    doc = kit.make_document(chain, timestamp=kit.ms(kit.T0 + stamp))
    with pytest.raises(ChainError, match=label):
        _verify(verifier, doc, kit, now=kit.T0 + now, policy=LAX)


def test_chain_validity_edges_inclusive(verifier: NitroVerifier, chain: Any, kit: Any) -> None:
    doc = kit.make_document(chain, timestamp=kit.ms(kit.T0))
    assert _verify(verifier, doc, kit, now=kit.T0 + timedelta(hours=3), policy=LAX)


def test_expired_root_refused(kit: Any) -> None:
    root = kit.issue(
        "short root",
        None,
        not_before=datetime(2019, 1, 1, tzinfo=timezone.utc),
        not_after=kit.T0 + timedelta(minutes=30),
        ca=True,
    )
    leaf = kit.issue(
        "enclave",
        root,
        not_before=kit.T0,
        not_after=kit.T0 + timedelta(hours=3),
        ca=False,
        key_ids=False,
    )
    short = type(kit.make_chain())(root=root, cas=[], leaf=leaf)
    verifier = NitroVerifier(trusted_root_fingerprints=[short.root_fingerprint])
    doc = kit.make_document(short, timestamp=kit.ms(kit.T0 + timedelta(minutes=10)))
    assert _verify(verifier, doc, kit, now=kit.T0 + timedelta(minutes=15))
    with pytest.raises(ChainError, match="verification time"):
        _verify(verifier, doc, kit, now=kit.T0 + timedelta(minutes=31), policy=LAX)


def test_now_in_another_timezone(verifier: NitroVerifier, chain: Any, kit: Any) -> None:
    paris = timezone(timedelta(hours=1))
    claims = _verify(verifier, kit.make_document(chain), kit, now=kit.NOW.astimezone(paris))
    assert claims.verified_at == kit.NOW
    assert claims.verified_at.tzinfo == timezone.utc


# -- arguments ------------------------------------------------------------------------------


def test_naive_now_refused(verifier: NitroVerifier, chain: Any, kit: Any) -> None:
    with pytest.raises(ConfigurationError, match="timezone"):
        _verify(verifier, kit.make_document(chain), kit, now=kit.NOW.replace(tzinfo=None))


@pytest.mark.parametrize("policy", [None, {"allow_any_measurement": True}, "nitro"])
def test_policy_must_be_a_nitro_policy(
    verifier: NitroVerifier, chain: Any, kit: Any, policy: Any
) -> None:
    with pytest.raises(ConfigurationError, match="NitroPolicy"):
        _verify(verifier, kit.make_document(chain), kit, policy=policy)


@pytest.mark.parametrize("roots", [[], [b"\x00" * 31], ["00" * 32]])
def test_trusted_roots_must_be_sha256_digests(roots: list[Any]) -> None:
    with pytest.raises(ConfigurationError):
        NitroVerifier(trusted_root_fingerprints=roots)


def test_random_garbage_is_evidence_error(verifier: NitroVerifier, kit: Any) -> None:
    rng = random.Random(7)
    for _ in range(500):
        garbage = rng.randbytes(rng.randrange(1, 200))
        with pytest.raises(EvidenceError):
            _verify(verifier, garbage, kit)


def test_every_prefix_of_generated_document(verifier: NitroVerifier, chain: Any, kit: Any) -> None:
    raw = kit.make_document(chain, kit.DocSpec(tag=18))
    for cut in range(len(raw)):
        with pytest.raises(EvidenceError):
            _verify(verifier, raw[:cut], kit)


def test_unknown_field_names_are_escaped_and_few(
    verifier: NitroVerifier, chain: Any, kit: Any
) -> None:
    """The names came from unverified bytes and went raw into the error the CLI prints: a
    newline and terminal escapes forged a line of its output, a long name flooded it."""
    forged = "\x1b[2J\nattestation OK" + "x" * 10_000
    names = {forged: 1, **{f"extra{i}": i for i in range(10)}}
    with pytest.raises(EvidenceError) as info:
        _verify(verifier, kit.make_document(chain, **names), kit)
    message = str(info.value)
    assert message.isprintable() and len(message) < 400
    assert "'\\x1b[2J\\nattestation OK" in message and message.endswith(" and 6 more")
