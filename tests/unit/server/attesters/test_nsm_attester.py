"""NsmAttester: the CBOR request it builds, real attestation documents, NSM error answers.

The ioctl itself needs a Nitro enclave; here it is exercised up to the kernel only (a regular
file answers ENOTTY), and a transport fake stands for the device.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import cbor2
import pytest

from blindai.attestation.claims import EvidenceKind
from blindai.errors import ConfigurationError, EvidenceError
from blindai.server.attesters import IoctlTransport, NsmAttester
from blindai.server.attesters.nitro import NSM_IOCTL_REQUEST

NITRO_SETS = ["evervault-production-pcrs", "evervault-debug-userdata", "evervault-debug-nonce"]
DIGEST = hashlib.sha256(b"a TLS certificate").digest()
REPORT_DATA = DIGEST + bytes(32)


def carrying(document: bytes, user_data: bytes) -> bytes:
    """A real attestation document re-encoded with ``user_data`` in its payload (its signature
    no longer verifies: the attester checks the layout and the user data, never the
    signature)."""
    item = cbor2.loads(document)
    tagged = isinstance(item, cbor2.CBORTag)
    protected, unprotected, payload, signature = item.value if tagged else item
    fields = dict(cbor2.loads(payload))
    fields["user_data"] = user_data
    rebuilt = [protected, dict(unprotected), cbor2.dumps(fields), signature]
    return cbor2.dumps(cbor2.CBORTag(item.tag, rebuilt) if tagged else rebuilt)


def answer(document: bytes) -> bytes:
    """The NSM's CBOR answer carrying ``document``."""
    return cbor2.dumps({"Attestation": {"document": document}})


class FakeNsm:
    """Answers every request with ``answer``; keeps the requests."""

    def __init__(self, answer: bytes) -> None:
        self.answer = answer
        self.requests: list[bytes] = []

    def request(self, message: bytes) -> bytes:
        self.requests.append(message)
        return self.answer


@pytest.mark.parametrize("name", NITRO_SETS)
def test_document_returned_and_request_encoded(evidence_dir: Path, name: str):
    real = (evidence_dir / "nitro" / name / "attestation_doc.cbor").read_bytes()
    document = carrying(real, DIGEST)
    nsm = FakeNsm(answer(document))
    attester = NsmAttester(nsm)
    assert attester.kind is EvidenceKind.NITRO
    assert attester.evidence(REPORT_DATA) == document
    expected = (
        b"\xa1\x6bAttestation\xa3"
        + b"\x69user_data\x58\x20"
        + DIGEST
        + b"\x65nonce\xf6"
        + b"\x6apublic_key\xf6"
    )
    assert nsm.requests == [expected]
    assert cbor2.loads(expected) == {
        "Attestation": {"user_data": DIGEST, "nonce": None, "public_key": None}
    }
    assert attester.endorsements().certificates == ()
    assert attester.blindai_collateral() is None


@pytest.mark.parametrize(
    "answer,match",
    [
        (cbor2.dumps({"Error": "InvalidArgument"}), "refused.*InvalidArgument"),
        (cbor2.dumps({"Error": "InternalError"}), "InternalError"),
        (cbor2.dumps({"Attestation": {}}), "no attestation document"),
        (cbor2.dumps({"Attestation": {"document": b""}}), "no attestation document"),
        (cbor2.dumps({"Attestation": {"document": "text"}}), "no attestation document"),
        (cbor2.dumps({"DescribePCR": {"lock": False}}), "no attestation document"),
        (cbor2.dumps(["Attestation"]), "no attestation document"),
        (b"", "not CBOR"),
        (b"\xa1\x6bAttes", "not CBOR"),
    ],
)
def test_nsm_answers_other_than_a_document_are_evidence_errors(answer: bytes, match: str):
    with pytest.raises(EvidenceError, match=match):
        NsmAttester(FakeNsm(answer)).evidence(REPORT_DATA)


def test_report_data_shape():
    attester = NsmAttester(FakeNsm(b""))
    with pytest.raises(ValueError, match="64 bytes"):
        attester.evidence(DIGEST)


def test_fresh_report_data_goes_whole_into_user_data(evidence_dir: Path):
    """With a nonce's digest in report_data[32:64], user_data carries all 64 bytes."""
    fresh = DIGEST + hashlib.sha256(b"a client nonce, 16+ bytes").digest()
    real = (evidence_dir / "nitro" / NITRO_SETS[0] / "attestation_doc.cbor").read_bytes()
    nsm = FakeNsm(answer(carrying(real, fresh)))
    assert NsmAttester(nsm).evidence(fresh) == carrying(real, fresh)
    assert cbor2.loads(nsm.requests[0])["Attestation"]["user_data"] == fresh


@pytest.mark.parametrize("name", NITRO_SETS)
def test_a_document_without_our_user_data_is_an_evidence_error(evidence_dir: Path, name: str):
    """The real documents as collected carry another user_data (or none): the attester
    returned them as evidence binding our certificate, where Gramine and configfs-tsm check
    the report data they get back."""
    real = (evidence_dir / "nitro" / name / "attestation_doc.cbor").read_bytes()
    with pytest.raises(EvidenceError, match="does not carry our user_data"):
        NsmAttester(FakeNsm(answer(real))).evidence(REPORT_DATA)
    fresh = DIGEST + bytes(range(32))
    with pytest.raises(EvidenceError, match="does not carry our user_data"):  # the first half
        NsmAttester(FakeNsm(answer(carrying(real, DIGEST)))).evidence(fresh)


@pytest.mark.parametrize("document", [b"doc", cbor2.dumps(["not", "cose"])])
def test_an_answer_that_is_no_attestation_document_is_an_evidence_error(document: bytes):
    with pytest.raises(EvidenceError):
        NsmAttester(FakeNsm(answer(document))).evidence(REPORT_DATA)


def test_device_failure_is_an_evidence_error():
    class Broken:
        def request(self, message: bytes) -> bytes:
            raise OSError(5, "Input/output error")

    with pytest.raises(EvidenceError, match="NSM device failed"):
        NsmAttester(Broken()).evidence(REPORT_DATA)


def test_ioctl_number():
    assert NSM_IOCTL_REQUEST == 0xC0200A00


def test_missing_device_is_a_configuration_error(tmp_path: Path):
    with pytest.raises(ConfigurationError, match="Nitro Secure Module"):
        NsmAttester.open(tmp_path / "nsm")


@pytest.mark.parametrize("stray", ["file", "directory"])
def test_a_stray_file_or_directory_is_no_nsm(tmp_path: Path, stray: str):
    device = tmp_path / "nsm"
    device.write_bytes(b"") if stray == "file" else device.mkdir()
    with pytest.raises(ConfigurationError, match="no character device there"):
        NsmAttester.open(device)


def test_ioctl_on_a_device_that_is_not_the_nsm():
    """The real transport up to the system call: another character device refuses the ioctl
    (ENOTTY)."""
    attester = NsmAttester.open(Path("/dev/null"))
    assert isinstance(attester.transport, IoctlTransport)
    with pytest.raises(EvidenceError, match="NSM device failed"):
        attester.evidence(REPORT_DATA)


def test_oversized_request_is_refused_before_the_ioctl(tmp_path: Path):
    with pytest.raises(ValueError, match="exceeds"):
        IoctlTransport(tmp_path / "absent").request(bytes(0x1001))
