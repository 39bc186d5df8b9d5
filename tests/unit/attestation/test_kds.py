"""AMD KDS as a source of SEV-SNP certificates, offline: a fake KDS serves the real sets' files.

The URLs each real report leads to are checked against the CHIP_ID and REPORTED_TCB documented
in tests/data/evidence/README.md; what the fake KDS answers then verifies through SnpVerifier
at 2025-06-01T00:00:00Z, like certificates from the host would.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

import blindai.attestation
from blindai.attestation import Endorsements
from blindai.attestation._collateral import FetchResponse, UrllibFetcher
from blindai.attestation._kds import (
    AMD_KDS_URL,
    KdsCertificateSource,
    chain_url,
    product_of,
    vcek_url,
)
from blindai.attestation.snp import SnpPolicy, SnpVerifier, TcbVersion
from blindai.attestation.snp._layout import parse_report
from blindai.errors import CollateralUnavailable, ConfigurationError, SignatureError

from .pcs_fakes import FakeFetcher

NOW = datetime(2025, 6, 1, tzinfo=timezone.utc)
KDS = "https://kdsintf.amd.com/vcek/v1"


@dataclass(frozen=True)
class KdsSet:
    """A real VCEK-signed set: where its files are, and its documented values."""

    path: str
    product: str
    chip_id: str
    query: str  # the SPLs of REPORTED_TCB as KDS takes them
    measurement: str
    vcek_file: str
    chain_file: str


SETS = {
    "go-sev-guest-milan": KdsSet(
        "go-sev-guest-milan",
        "Milan",
        "3ac3fe21e13fb0990eb28a802e3fb6a29483a6b0753590c951bdd3b8"
        "e53786184ca39e359669a2b76a1936776b564ea464cdce40c05f63c9b610c5068b006b5d",
        "blSPL=02&teeSPL=00&snpSPL=05&ucodeSPL=68",
        "b07af9620f3b839b47996422ddec6058338951d984e312115131ea82705eaf5b6bdf8a9ece31a5a608eb0cf2e4872b01",
        "vcek.der",
        "ask_ark_milan.pem",
    ),
    "virtee-sev-milan": KdsSet(
        "virtee-sev-milan",
        "Milan",
        "d49554ec717f4e5b0fe6b143bcf0405bd7ae304727edf46603f2a76a"
        "ef6a3abc15d7af38db757039029f0efacfd08e244324884738c72b082e2f87a44d541eb6",
        "blSPL=03&teeSPL=00&snpSPL=08&ucodeSPL=115",
        "7a1e5c266c0108dbc9bb94fa926951320940915d0aafb42464bd88b579ea158d3e1a0dc39b2c60bd95b9c480cd81841f",
        "vcek.der",
        "ask_ark_milan.pem",
    ),
    "trustee-azure-genoa": KdsSet(
        "trustee-azure-genoa",
        "Genoa",
        "0506ffba875e939c2729d20c74eb72b4c5ba6bf7ea1faaa640141f12"
        "c6d64782fb487f68ce69dcd021e914cc0d9244327bc121f0242d6470903ad1d4aaea4ad1",
        "blSPL=10&teeSPL=00&snpSPL=23&ucodeSPL=84",
        "f57dc09a507c6ecd82369bffb600f0003792f4d99bc26e985ec0c266fc34faf3706faf814c9e61065768a6ff917c89ae",
        "derived/vcek.pem",
        "genoa_ask_ark_asvk.pem",
    ),
}


def _load_pems(data: bytes) -> list[x509.Certificate]:
    with warnings.catch_warnings():  # AMD leaf certificates have serial number 0
        warnings.simplefilter("ignore")
        return x509.load_pem_x509_certificates(data)


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(Encoding.DER)


def _kds_answers(s: KdsSet, root: Path) -> tuple[bytes, bytes]:
    """What KDS serves for the set: the VCEK as DER, the ASK then the ARK as PEM."""
    vcek = (root / s.vcek_file).read_bytes()
    if vcek.startswith(b"-----"):
        vcek = _der(_load_pems(vcek)[0])
    chain = [
        c
        for c in _load_pems((root / s.chain_file).read_bytes())
        if "VLEK" not in c.subject.rfc4514_string()  # KDS's vcek cert_chain has no ASVK
    ]
    assert len(chain) == 2
    return vcek, b"".join(c.public_bytes(Encoding.PEM) for c in chain)


@dataclass
class Case:
    kds: KdsSet
    report: bytes
    vcek: bytes
    chain: bytes

    @property
    def vcek_url(self) -> str:
        return f"{KDS}/{self.kds.product}/{self.kds.chip_id}?{self.kds.query}"

    @property
    def chain_url(self) -> str:
        return f"{KDS}/{self.kds.product}/cert_chain"

    def fetcher(self) -> FakeFetcher:
        return FakeFetcher(
            {self.vcek_url: FetchResponse(self.vcek), self.chain_url: FetchResponse(self.chain)}
        )


@pytest.fixture(params=sorted(SETS))
def case(request: pytest.FixtureRequest, evidence_dir: Path) -> Case:
    s = SETS[request.param]
    root = evidence_dir / "sev-snp" / s.path
    report = root / ("derived/report.bin" if s.vcek_file.startswith("derived") else "report.bin")
    return Case(s, report.read_bytes(), *_kds_answers(s, root))


@pytest.fixture
def milan(evidence_dir: Path) -> Case:
    s = SETS["go-sev-guest-milan"]
    root = evidence_dir / "sev-snp" / s.path
    return Case(s, (root / "report.bin").read_bytes(), *_kds_answers(s, root))


def test_urls_carry_the_documented_chip_id_and_tcb(case: Case):
    report = parse_report(case.report)
    url = vcek_url(AMD_KDS_URL, case.kds.product, report.chip_id, report.reported_tcb)
    assert url == case.vcek_url
    assert chain_url(AMD_KDS_URL + "/", case.kds.product) == case.chain_url


def test_fetched_certificates_verify_the_report(case: Case):
    fetcher = case.fetcher()
    certs = KdsCertificateSource(fetcher).for_report(case.report)
    assert certs == (case.vcek, case.chain)
    policy = SnpPolicy.from_mapping(
        {
            "measurement": case.kds.measurement,
            "allow_debug": True,
            "max_vmpl": 3,
            "allow_any_tcb": True,
        }
    )
    claims = SnpVerifier.with_embedded_roots().verify(
        case.report, policy, now=NOW, endorsements=Endorsements(certificates=certs)
    )
    assert claims.measurement.hex() == case.kds.measurement
    assert claims.product.startswith(case.kds.product)
    assert claims.chip_id.hex() == case.kds.chip_id


def test_version_2_reports_try_each_product(milan: Case):
    fetcher = milan.fetcher()
    certs = KdsCertificateSource(fetcher, products=("Genoa", "Milan")).for_report(milan.report)
    assert certs == (milan.vcek, milan.chain)
    genoa_url = milan.vcek_url.replace("/Milan/", "/Genoa/")
    assert fetcher.asked == [genoa_url, milan.vcek_url, milan.chain_url]


def test_a_version_3_report_names_its_product(evidence_dir: Path):
    report = parse_report(
        (evidence_dir / "sev-snp/trustee-azure-genoa/derived/report.bin").read_bytes()
    )
    assert product_of(report) == "Genoa"
    vlek = parse_report((evidence_dir / "sev-snp/trustee-milan-vlek/report.bin").read_bytes())
    assert product_of(vlek) == "Milan"
    v2 = parse_report((evidence_dir / "sev-snp/go-sev-guest-milan/report.bin").read_bytes())
    assert product_of(v2) is None


def test_unknown_cpu_model_is_unavailable(evidence_dir: Path):
    raw = bytearray((evidence_dir / "sev-snp/trustee-azure-genoa/derived/report.bin").read_bytes())
    raw[0x189] = 0x51  # a family 0x19 model KDS has no product line for
    with pytest.raises(CollateralUnavailable, match="model 0x51"):
        KdsCertificateSource(FakeFetcher({})).for_report(bytes(raw))


def test_answers_are_cached_per_chip_and_tcb(milan: Case):
    fetcher = milan.fetcher()
    source = KdsCertificateSource(fetcher)
    assert source.for_report(milan.report) == source.for_report(milan.report)
    assert fetcher.asked == [milan.vcek_url, milan.chain_url]
    # another REPORTED_TCB is another VCEK: asked again (and here unavailable)
    raw = bytearray(milan.report)
    raw[0x187] += 1
    with pytest.raises(CollateralUnavailable, match="ucodeSPL=69"):
        source.for_report(bytes(raw))
    assert len(fetcher.asked) == 4  # Milan then Genoa, both for the new TCB


def test_vlek_report_is_unavailable(evidence_dir: Path):
    report = (evidence_dir / "sev-snp/trustee-milan-vlek/report.bin").read_bytes()
    fetcher = FakeFetcher({})
    with pytest.raises(CollateralUnavailable, match=r"VLEK.*cloud provider"):
        KdsCertificateSource(fetcher).for_report(report)
    assert fetcher.asked == []


def test_masked_chip_id_is_unavailable(milan: Case):
    raw = bytearray(milan.report)
    raw[0x1A0:0x1E0] = bytes(64)
    fetcher = milan.fetcher()
    with pytest.raises(CollateralUnavailable, match="CHIP_ID is masked"):
        KdsCertificateSource(fetcher).for_report(bytes(raw))
    assert fetcher.asked == []


def test_not_a_report_is_unavailable():
    with pytest.raises(CollateralUnavailable, match="not an SEV-SNP report"):
        KdsCertificateSource(FakeFetcher({})).for_report(b"\x02" + bytes(100))


class FailingFetcher:
    def __init__(self, exc: Exception) -> None:
        self.exc = exc

    def get(self, url: str) -> FetchResponse:
        raise self.exc


@pytest.mark.parametrize(
    "exc", [CollateralUnavailable("GET failed: 503"), ConnectionRefusedError("refused")]
)
def test_fetch_failure_is_unavailable(milan: Case, exc: Exception):
    with pytest.raises(CollateralUnavailable, match="no VCEK from KDS"):
        KdsCertificateSource(FailingFetcher(exc)).for_report(milan.report)


def test_chain_failure_is_unavailable(milan: Case):
    fetcher = FakeFetcher({milan.vcek_url: FetchResponse(milan.vcek)})
    with pytest.raises(CollateralUnavailable, match="cert_chain"):
        KdsCertificateSource(fetcher).for_report(milan.report)


@pytest.mark.parametrize("body", [b"", b"<html>rate limited</html>", b"\x30\x03\x02\x01\x00"])
def test_an_answer_that_is_not_a_certificate_is_unavailable(milan: Case, body: bytes):
    fetcher = milan.fetcher()
    fetcher.answers[milan.vcek_url] = FetchResponse(body)
    with pytest.raises(CollateralUnavailable, match="not certificates"):
        KdsCertificateSource(fetcher, products=("Milan",)).for_report(milan.report)


def test_a_chain_of_one_certificate_is_unavailable(milan: Case):
    fetcher = milan.fetcher()
    fetcher.answers[milan.chain_url] = FetchResponse(
        _load_pems(milan.chain)[0].public_bytes(Encoding.PEM)
    )
    with pytest.raises(CollateralUnavailable, match="not two certificates"):
        KdsCertificateSource(fetcher).for_report(milan.report)


def test_a_vcek_answer_of_two_certificates_is_unavailable(milan: Case):
    fetcher = milan.fetcher()
    fetcher.answers[milan.vcek_url] = FetchResponse(milan.chain)  # ASK and ARK: no VCEK
    with pytest.raises(CollateralUnavailable, match="not one certificate"):
        KdsCertificateSource(fetcher, products=("Milan",)).for_report(milan.report)


def test_nothing_fetched_is_trusted(milan: Case, evidence_dir: Path):
    """Another chip's VCEK served for this chip: fetched, then refused by the verifier."""
    other = (evidence_dir / "sev-snp/virtee-sev-milan/vcek.der").read_bytes()
    fetcher = milan.fetcher()
    fetcher.answers[milan.vcek_url] = FetchResponse(other)
    certs = KdsCertificateSource(fetcher).for_report(milan.report)
    with pytest.raises(SignatureError, match="does not verify with any VCEK"):
        SnpVerifier.with_embedded_roots().verify_authenticity(
            milan.report, now=NOW, endorsements=Endorsements(certificates=certs)
        )


def test_a_mirror_base_url(milan: Case):
    mirror = "https://kds-mirror.example/amd/"
    answers = {
        u.replace("https://kdsintf.amd.com/", mirror): a for u, a in milan.fetcher().answers.items()
    }
    source = KdsCertificateSource(FakeFetcher(answers), base_url=mirror)
    assert source.for_report(milan.report) == (milan.vcek, milan.chain)


def test_configuration():
    with pytest.raises(ConfigurationError):
        KdsCertificateSource(FakeFetcher({}), products=())
    online = KdsCertificateSource.online(timeout=3.0)
    assert isinstance(online.fetcher, UrllibFetcher)
    assert online.fetcher.timeout == 3.0
    assert online.base_url == AMD_KDS_URL
    assert blindai.attestation.KdsCertificateSource is KdsCertificateSource
    assert "KdsCertificateSource" in blindai.attestation.__all__
    assert "KdsCertificateSource" in dir(blindai.attestation)


def test_tcb_formatting_pads_to_two_digits():
    tcb = TcbVersion(bootloader=1, tee=0, snp=9, microcode=210)
    url = vcek_url("https://k", "Milan", bytes([0xAB]) * 64, tcb)
    assert url == f"https://k/vcek/v1/Milan/{'ab' * 64}?blSPL=01&teeSPL=00&snpSPL=09&ucodeSPL=210"
