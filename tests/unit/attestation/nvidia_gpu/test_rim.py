"""NVIDIA RIMs verified offline: generated SWID tags signed with XMLDSig by a generated chain.

No NVIDIA RIM file travels with the repository; these RIMs have the same shape (SWID 2015,
``Meta/@colloquialVersion``, ``Payload/Resource`` with ``Hash0..`` in the SHA-384 namespace,
an enveloped ECDSA-SHA384 signature with the signer's chain in ``X509Data``), signed by
``signxml`` with a chain generated here. Verification is the real code.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from lxml import etree
from signxml import XMLSigner
from signxml.algorithms import (
    CanonicalizationMethod,
    DigestAlgorithm,
    SignatureConstructionMethod,
    SignatureMethod,
)

from blindai.attestation import Endorsements, EvidenceKind, Policy
from blindai.attestation.nvidia_gpu import NvidiaGpuPolicy, NvidiaGpuVerifier
from blindai.attestation.nvidia_gpu._rim import verify_manifest
from blindai.attestation.nvidia_gpu.policy import MAX_RIM_BYTES
from blindai.errors import (
    ChainError,
    CollateralError,
    ConfigurationError,
    PolicyError,
    SignatureError,
)
from tests._fakes.nvidia_gpu import FakeGpu, leaf_usage, make_cert
from tests.unit.attestation.nvidia_gpu._gpu_kit import NONCE, NOW

SWID = "http://standards.iso.org/iso/19770/-2/2015/schema.xsd"
SHA384 = "http://www.w3.org/2001/04/xmlenc#sha384"


class RimSigner:
    """A generated RIM PKI: root -> CA -> signer, P-384, like NVIDIA's CoRIM chain."""

    def __init__(self, gpu: FakeGpu) -> None:
        span = {"not_before": gpu.not_before, "not_after": gpu.not_after}
        self.root_key = ec.generate_private_key(ec.SECP384R1())
        self.ca_key = ec.generate_private_key(ec.SECP384R1())
        self.key = ec.generate_private_key(ec.SECP384R1())
        self.root = make_cert("Test CoRIM signing Root CA", self.root_key, ca=True, **span)
        self.ca = make_cert(
            "Test Reference Value CA", self.ca_key, issuer=self.root, issuer_key=self.root_key,
            ca=True, **span,
        )  # fmt: skip
        self.leaf = make_cert(
            "Test RIM Signer", self.key, issuer=self.ca, issuer_key=self.ca_key, ca=False,
            extensions=[(leaf_usage(), True)], **span,
        )  # fmt: skip

    @property
    def fingerprint(self) -> bytes:
        import hashlib

        return hashlib.sha256(self.root.public_bytes(Encoding.DER)).digest()

    def rim(
        self,
        version: str,
        entries: dict[int, tuple[list[bytes], bool]],
        tweak: Callable[[Any], None] | None = None,
    ) -> bytes:
        """A signed RIM; ``entries`` maps the RIM index (0-based) to (values, active).

        ``tweak`` edits the tree before it is signed (for malformed but signed RIMs).
        """
        root = etree.Element(f"{{{SWID}}}SoftwareIdentity", nsmap={None: SWID, "ns2": SHA384})
        root.set("name", "GH100")
        root.set("tagId", "test")
        meta = etree.SubElement(root, f"{{{SWID}}}Meta")
        meta.set("colloquialVersion", version)
        payload = etree.SubElement(root, f"{{{SWID}}}Payload")
        for index, (values, active) in sorted(entries.items()):
            res = etree.SubElement(payload, f"{{{SWID}}}Resource")
            res.set("type", "Measurement")
            res.set("index", str(index))
            res.set("active", "True" if active else "False")
            res.set("alternatives", str(len(values)))
            res.set("name", f"Measurement_{index}")
            res.set("size", "48")
            for i, value in enumerate(values):
                res.set(f"{{{SHA384}}}Hash{i}", value.hex())
        if tweak is not None:
            tweak(root)
        signer = XMLSigner(
            method=SignatureConstructionMethod.enveloped,
            signature_algorithm=SignatureMethod.ECDSA_SHA384,
            digest_algorithm=DigestAlgorithm.SHA384,
            c14n_algorithm=CanonicalizationMethod.CANONICAL_XML_1_1,
        )
        key_pem = self.key.private_bytes(
            Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        certs = [c.public_bytes(Encoding.PEM).decode() for c in (self.leaf, self.ca, self.root)]
        signed = signer.sign(root, key=key_pem, cert=certs)
        return etree.tostring(signed)  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def rim_signer(gpu: FakeGpu) -> RimSigner:
    return RimSigner(gpu)


@pytest.fixture(scope="module")
def verifier(gpu: FakeGpu, rim_signer: RimSigner) -> NvidiaGpuVerifier:
    return NvidiaGpuVerifier(
        trusted_root_fingerprints=[gpu.root_fingerprint],
        rim_root_fingerprints=[rim_signer.fingerprint],
    )


def golden(gpu: FakeGpu) -> dict[int, tuple[list[bytes], bool]]:
    """RIM entries matching the generated GPU (RIM index = SPDM index - 1)."""
    return {i - 1: ([bytes(48), v], True) for i, v in gpu.measurements.items()}


def check(verifier: NvidiaGpuVerifier, gpu: FakeGpu, *rims: bytes, report: bytes | None = None):
    policy = NvidiaGpuPolicy(reference_manifests=tuple((f"rim{i}", r) for i, r in enumerate(rims)))
    return verifier.verify(
        report or gpu.report(NONCE), policy, now=NOW,
        endorsements=Endorsements(certificates=(gpu.chain_pem(),)), expected_nonce=NONCE,
    )  # fmt: skip


def test_rim_verified_and_read(rim_signer: RimSigner, gpu: FakeGpu) -> None:
    data = rim_signer.rim("550.90.07", {**golden(gpu), 9: ([bytes(48)], False)})
    manifest = verify_manifest(data, trusted_roots=[rim_signer.fingerprint], now=NOW)
    assert manifest.version == "550.90.07"
    assert manifest.signer == "O=Test NVIDIA,CN=Test RIM Signer"
    assert sorted(manifest.measurements) == [1, 2, 3, 4]  # the inactive entry is left out
    assert manifest.measurements[2].values == (bytes(48), gpu.measurements[2])


def test_matching_rims_accept(
    verifier: NvidiaGpuVerifier, rim_signer: RimSigner, gpu: FakeGpu
) -> None:
    entries = golden(gpu)
    driver = rim_signer.rim("550.90.07", {k: v for k, v in entries.items() if k < 2})
    vbios = rim_signer.rim("96.00.9F.00.01", {k: v for k, v in entries.items() if k >= 2})
    assert check(verifier, gpu, driver, vbios).driver_version == "550.90.07"


def test_every_mismatch_listed(
    verifier: NvidiaGpuVerifier, rim_signer: RimSigner, gpu: FakeGpu
) -> None:
    entries = golden(gpu)
    entries[0] = ([b"\1" * 48], True)
    entries[3] = ([b"\2" * 48], True)
    entries[40] = ([b"\3" * 48], True)  # SPDM block 41: absent from the report
    with pytest.raises(PolicyError) as caught:
        check(verifier, gpu, rim_signer.rim("551.00", entries))
    fields = [v.field for v in caught.value.violations]
    assert fields == [
        "rim rim0: version",
        "rim rim0: measurements.1",
        "rim rim0: measurements.4",
        "rim rim0: measurements.41",
    ]


def test_nvdec_measurement_skipped_while_disabled(
    verifier: NvidiaGpuVerifier, rim_signer: RimSigner, gpu: FakeGpu
) -> None:
    entries = {**golden(gpu), 35: ([b"\7" * 48], True)}  # SPDM block 36
    assert check(verifier, gpu, rim_signer.rim("550.90.07", entries))  # NVDEC0 disabled
    from tests._fakes.nvidia_gpu import default_opaque, opaque_item

    enabled = default_opaque().replace(opaque_item(11, b"\x55"), opaque_item(11, b"\xaa"))
    with pytest.raises(PolicyError, match=r"measurements\.36"):
        check(
            verifier,
            gpu,
            rim_signer.rim("550.90.07", entries),
            report=gpu.report(NONCE, opaque=enabled),
        )


def test_two_rims_with_one_index(
    verifier: NvidiaGpuVerifier, rim_signer: RimSigner, gpu: FakeGpu
) -> None:
    rim = rim_signer.rim("550.90.07", golden(gpu))
    with pytest.raises(CollateralError, match="two RIMs"):
        check(verifier, gpu, rim, rim)


def test_tampered_rim(verifier: NvidiaGpuVerifier, rim_signer: RimSigner, gpu: FakeGpu) -> None:
    rim = rim_signer.rim("550.90.07", golden(gpu))
    value = gpu.measurements[1].hex().encode()
    with pytest.raises(SignatureError):
        check(verifier, gpu, rim.replace(value, b"0" * 96))
    with pytest.raises(SignatureError):
        check(verifier, gpu, rim.replace(b"550.90.07", b"550.90.08"))


def test_unpinned_rim_root(rim_signer: RimSigner, gpu: FakeGpu) -> None:
    rim = rim_signer.rim("550.90.07", golden(gpu))
    nvidia_rims = NvidiaGpuVerifier(trusted_root_fingerprints=[gpu.root_fingerprint])
    with pytest.raises(ChainError, match="pinned"):
        check(nvidia_rims, gpu, rim)


def test_expired_rim_signer(rim_signer: RimSigner, gpu: FakeGpu) -> None:
    rim = rim_signer.rim("550.90.07", golden(gpu))
    with pytest.raises(ChainError):
        verify_manifest(
            rim, trusted_roots=[rim_signer.fingerprint], now=gpu.not_after + timedelta(1)
        )


def test_rim_signed_by_another_key(rim_signer: RimSigner, gpu: FakeGpu) -> None:
    other = RimSigner(gpu)
    rim = other.rim("550.90.07", golden(gpu))
    # the other signer's chain, our root: the chain ends elsewhere
    with pytest.raises(ChainError):
        verify_manifest(rim, trusted_roots=[rim_signer.fingerprint], now=NOW)


@pytest.mark.parametrize(
    ("data", "error", "match"),
    [
        (b"<not xml", ConfigurationError, "well-formed"),
        (b'<!DOCTYPE x [<!ENTITY e "x">]><x/>', ConfigurationError, "DOCTYPE"),
        (b"<x/>", ConfigurationError, "SoftwareIdentity"),
        (f'<SoftwareIdentity xmlns="{SWID}"/>'.encode(), SignatureError, "exactly one"),
        (b"x" * ((1 << 20) + 1), ConfigurationError, "larger"),
    ],
)
def test_malformed_rims(data: bytes, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        verify_manifest(data, trusted_roots=[bytes(32)], now=NOW)


def test_rim_without_its_chain(rim_signer: RimSigner, gpu: FakeGpu) -> None:
    rim = rim_signer.rim("550.90.07", golden(gpu))
    root = etree.fromstring(rim)
    certs = root.findall(".//{http://www.w3.org/2000/09/xmldsig#}X509Certificate")
    for cert in certs[1:]:
        cert.getparent().remove(cert)
    with pytest.raises(ChainError, match="X509Data"):
        verify_manifest(etree.tostring(root), trusted_roots=[rim_signer.fingerprint], now=NOW)


@pytest.mark.parametrize(
    ("entries", "match"),
    [
        ({}, "no active"),
        ({0: ([bytes(48)], False)}, "no active"),
        ({0: ([bytes(47)], True)}, "Hash0"),
        ({300: ([bytes(48)], True)}, "out of range"),
    ],
)
def test_rim_content_errors(rim_signer: RimSigner, entries: dict, match: str) -> None:
    rim = rim_signer.rim("550.90.07", entries)
    with pytest.raises(CollateralError, match=match):
        verify_manifest(rim, trusted_roots=[rim_signer.fingerprint], now=NOW)


def test_policy_reads_rim_files(tmp_path: Path, rim_signer: RimSigner, gpu: FakeGpu) -> None:
    path = tmp_path / "driver.swidtag"
    path.write_bytes(rim_signer.rim("550.90.07", golden(gpu)))
    policy = Policy.from_toml(f'[nvidia_gpu]\nrim = ["{path}"]\n')
    sub = policy.for_kind(EvidenceKind.NVIDIA_GPU)
    assert isinstance(sub, NvidiaGpuPolicy)
    assert sub.reference_manifests == (("driver.swidtag", path.read_bytes()),)
    with pytest.raises(ConfigurationError, match="cannot read RIM"):
        Policy.from_toml(f'[nvidia_gpu]\nrim = "{tmp_path / "absent"}"\n')


def _payload(root: Any) -> Any:
    return root.find(f"{{{SWID}}}Payload")


def _first(root: Any) -> Any:
    return _payload(root)[0]


@pytest.mark.parametrize(
    ("tweak", "match"),
    [
        (lambda r: r.remove(r.find(f"{{{SWID}}}Meta")), "colloquialVersion"),
        (lambda r: r.remove(_payload(r)), "no Payload"),
        (lambda r: _payload(r).append(etree.fromstring(etree.tostring(_first(r)))), "twice"),
        (lambda r: _first(r).set("index", "one"), "numeric"),
        (lambda r: _first(r).attrib.pop("size"), "numeric"),
        (lambda r: _first(r).set("alternatives", "0"), "out of range"),
        (lambda r: _first(r).set("active", "yes"), "True or False"),
        (lambda r: _first(r).set(f"{{{SHA384}}}Hash0", "zz" * 48), "Hash0"),
        (lambda r: _first(r).attrib.pop(f"{{{SHA384}}}Hash0"), "Hash0"),
    ],
)
def test_signed_but_malformed_rims(
    rim_signer: RimSigner, gpu: FakeGpu, tweak: Callable[[Any], None], match: str
) -> None:
    rim = rim_signer.rim("550.90.07", golden(gpu), tweak)
    with pytest.raises(CollateralError, match=match):
        verify_manifest(rim, trusted_roots=[rim_signer.fingerprint], now=NOW)


def test_rim_signer_certificate_not_x509(rim_signer: RimSigner, gpu: FakeGpu) -> None:
    rim = rim_signer.rim("550.90.07", golden(gpu))
    root = etree.fromstring(rim)
    cert = root.find(".//{http://www.w3.org/2000/09/xmldsig#}X509Certificate")
    cert.text = "AAAA"
    with pytest.raises(ChainError, match=r"not valid X\.509"):
        verify_manifest(etree.tostring(root), trusted_roots=[rim_signer.fingerprint], now=NOW)


@pytest.mark.parametrize("kind", ["fifo", "device", "too large"])
def test_a_rim_path_that_is_not_a_small_regular_file_is_refused_unread(
    tmp_path: Path, kind: str
) -> None:
    """A ``rim`` naming ``/dev/zero`` was read without end into memory (3.9 GB in 8 s before it
    was killed), and a FIFO made ``Policy.from_file`` wait for a writer for ever: a RIM is read
    as the CLI reads evidence files, a regular file of at most 16 MiB."""
    if kind == "fifo":
        path = tmp_path / "rim.fifo"
        os.mkfifo(path)
        expected = "not a regular file"
    elif kind == "device":
        path = Path("/dev/zero")
        expected = "not a regular file"
    else:
        path = tmp_path / "rim.swidtag"
        with path.open("wb") as f:
            f.truncate(MAX_RIM_BYTES + 1)  # sparse
        expected = f"over {MAX_RIM_BYTES} bytes"
    with pytest.raises(ConfigurationError, match=expected):
        Policy.from_toml(f'[nvidia_gpu]\nrim = "{path}"\n')
