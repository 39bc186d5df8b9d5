"""``blindai attest``: verify evidence files, or a running server, against a policy.

Exit status: 0 accepted (claims printed), 1 refused (one line per violation), 2 unusable
arguments or malformed evidence. Without ``--policy``, ``attest verify`` applies
:meth:`Policy.defaults_only <blindai.attestation.Policy.defaults_only>`: every default, only
the measurement left unpinned, and it says so. ``--kind nvidia-gpu`` takes the report as raw
bytes or as hex text (as NVIDIA's and trustee's tools store it), its chain with ``--certs`` and
the expected requester nonce with ``--nonce``. ``attest HOST`` is
:func:`blindai.client.attest`: the evidence of the attested port's connection (``--fresh``:
over a nonce of this client), or, for a server without ``GET /attestation``, of the unattested
port; it prints which certificate (SHA-256) was verified, and over which port.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from blindai.attestation import Endorsements, EvidenceKind, Policy, VerifiedClaims
from blindai.attestation.kinds import KINDS, spec_for
from blindai.cli._commands import seconds
from blindai.cli._terminal import shown
from blindai.errors import CollateralUnavailable, ConfigurationError, EvidenceError, PolicyError
from blindai.localfiles import read_small

if TYPE_CHECKING:
    from blindai.attestation import KdsCertificateSource, PcsCollateralSource
    from blindai.client import Attested

__all__ = ["MAX_EVIDENCE_FILE_BYTES", "add_attest_command"]

_T = TypeVar("_T")


def add_attest_command(sub: Any) -> None:
    """``blindai attest verify ...`` and ``blindai attest HOST``."""
    p = sub.add_parser(
        "attest",
        help="verify TEE evidence (files, or a running server)",
        description="`blindai attest verify --kind K --evidence FILE ...` verifies evidence "
        "files; `blindai attest HOST` opens one TLS connection to a running server's attested "
        "port, verifies the evidence it serves there (GET /attestation; a server without it on "
        "the unattested port) and its binding to that connection's certificate, and prints the "
        "claims and the certificate's SHA-256. Exit 0 accepted, 1 refused, 2 unusable arguments "
        "or malformed evidence.",
    )
    p.add_argument("target", metavar="verify|HOST", help="`verify`, or a server address")
    p.add_argument("--kind", choices=[s.kind.value for s in KINDS], help="evidence kind (verify)")
    p.add_argument("--evidence", type=Path, help="evidence file: quote, report or document")
    p.add_argument("--collateral", type=Path, help="SGX/TDX PCS collateral JSON")
    p.add_argument(
        "--certs",
        type=Path,
        nargs="+",
        default=[],
        help="certificate files, DER or PEM (SEV-SNP VCEK/VLEK, ASK/ARK; the GPU's chain)",
    )
    p.add_argument(
        "--nonce",
        metavar="HEX",
        help="nvidia-gpu: the requester nonce the report must answer (32 bytes, hex)",
    )
    p.add_argument(
        "--policy",
        type=Path,
        help="TOML policy; without it (verify), every default applies but the measurement is "
        "not pinned",
    )
    p.add_argument("--at", help="verification time, ISO-8601 (default: now)")
    p.add_argument("--json", action="store_true", help="print the claims as JSON")
    p.add_argument(
        "--simulation", action="store_true", help="HOST: accept a simulation server (UNSAFE)"
    )
    p.add_argument(
        "--unattested-port",
        type=int,
        default=9923,
        help="HOST: unattested port, read only for a server without GET /attestation",
    )
    p.add_argument(
        "--attested-port",
        type=int,
        default=9924,
        help="HOST: attested port, where the evidence (and the GPU's, with [nvidia_gpu]) is read",
    )
    p.add_argument(
        "--fresh",
        action="store_true",
        help="HOST: ask for evidence over a random nonce of this client, so that replayed "
        "evidence is refused (the server makes new evidence: slower on real TEEs)",
    )
    p.add_argument(
        "--timeout",
        type=seconds,
        default=60.0,
        metavar="SECONDS",
        help="HOST: longest wait for connecting and for each answer; default 60",
    )
    p.add_argument(
        "--pccs-url",
        metavar="URL",
        help="SGX/TDX: fetch the collateral from this PCCS, or Intel's PCS "
        "(https://api.trustedservices.intel.com), when the server (or --collateral) gives none",
    )
    p.add_argument(
        "--kds",
        metavar="URL",
        nargs="?",
        const="https://kdsintf.amd.com",
        help="SEV-SNP: fetch the VCEK, ASK and ARK from AMD's KDS (or a mirror at URL) when the "
        "server (or --certs) gives none",
    )
    p.set_defaults(func=_attest)


def _when(text: str | None) -> datetime:
    if text is None:
        return datetime.now(timezone.utc)
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigurationError(f"--at {text!r} is not an ISO-8601 time") from None
    if when.tzinfo is None:
        return when.replace(tzinfo=timezone.utc)
    try:  # the verifiers work in UTC: 9999-12-31T23:59-05:00 is past datetime's range there
        return when.astimezone(timezone.utc)
    except OverflowError:
        raise ConfigurationError(f"--at {text!r} is out of range once in UTC") from None


MAX_EVIDENCE_FILE_BYTES = 16 << 20
"""Largest evidence, collateral or certificate file read (the largest, SGX/TDX collateral with
its CRLs, is some hundred KiB); a FIFO or a device is refused rather than read without end."""


def _read(path: Path, what: str) -> bytes:
    return read_small(path, what, limit=MAX_EVIDENCE_FILE_BYTES)


# bit fields, shown in hex as a policy file gives them (td_attributes = "0x10000000"); the
# JSON keeps them integers
_BIT_FIELDS = frozenset({"td_attributes", "xfam", "attributes", "xfrm", "misc_select"})


def _print(claims: VerifiedClaims, as_json: bool, note: str | None) -> None:
    if as_json:
        print(json.dumps(claims.to_dict(), indent=2, sort_keys=True))
    else:
        for key, value in claims.to_dict().items():
            if key in _BIT_FIELDS and type(value) is int:
                value = hex(value)
            print(f"{key:22} {shown(value)}")
    if note:
        print(note, file=sys.stderr)


def _attest(args: argparse.Namespace) -> int:
    when = _when(args.at)
    if args.target == "verify":
        return _verify_files(args, when)
    return _verify_host(args, when)


def _hex_or_raw(data: bytes) -> bytes:
    """A GPU report stored as hex text (NVIDIA's and trustee's tools) or as raw bytes."""
    text = data.strip()
    if text and len(text) % 2 == 0 and all(c in b"0123456789abcdefABCDEF" for c in text):
        return bytes.fromhex(text.decode("ascii"))
    return data


def _nonce(text: str | None, kind: EvidenceKind) -> bytes | None:
    if text is None:
        return None
    if kind is not EvidenceKind.NVIDIA_GPU:
        raise ConfigurationError("--nonce applies to --kind nvidia-gpu only")
    try:
        nonce = bytes.fromhex(text)
    except ValueError:
        raise ConfigurationError(f"--nonce {text!r} is not hex") from None
    if len(nonce) != 32:
        raise ConfigurationError(f"--nonce must be 32 bytes (64 hex digits), got {len(nonce)}")
    return nonce


def _verify_files(args: argparse.Namespace, when: datetime) -> int:
    if not args.kind or not args.evidence:
        raise ConfigurationError("attest verify needs --kind and --evidence")
    for flag, given in (("--simulation", args.simulation), ("--fresh", args.fresh)):
        if given:  # it was ignored: files are verified as they are
            raise ConfigurationError(f"{flag} applies to attest HOST, not to attest verify")
    kind = EvidenceKind(args.kind)
    nonce = _nonce(args.nonce, kind)
    evidence = _read(args.evidence, "evidence")
    if kind is EvidenceKind.NVIDIA_GPU:
        evidence = _hex_or_raw(evidence)
    collateral = _read(args.collateral, "collateral") if args.collateral else None
    if collateral is None and args.pccs_url and kind in (EvidenceKind.SGX, EvidenceKind.TDX):
        collateral = _parsed(
            lambda: _collateral_source(args.pccs_url).for_quote(evidence)
        ).to_json()
    certs = tuple(_read(p, "certificate") for p in args.certs)
    if not certs and args.kds and kind is EvidenceKind.SEV_SNP:
        certs = _parsed(lambda: _kds_source(args.kds).for_report(evidence))
    endorsements = Endorsements(collateral, certs)
    note = None
    if args.policy:
        policy = Policy.from_file(args.policy)
    else:
        policy = Policy.defaults_only(kind)
        spec = spec_for(kind)
        note = (
            f"NOTE: no --policy given: the default [{spec.section}] policy applies "
            f"({spec.defaults}); the measurement is NOT pinned: any code in a genuine TEE passes"
        )
    if policy.server is not None:  # held to a server's attested reply, not to its evidence
        note = (note + "\n" if note else "") + (
            "NOTE: the policy's [server] section is not checked: evidence files do not state the "
            "server's configuration (blindai attest HOST checks it, over the attested connection)"
        )
    if kind is EvidenceKind.NVIDIA_GPU and nonce is None:
        note = (note + "\n" if note else "") + "NOTE: no --nonce given: freshness not checked"
    try:
        claims = _verify(kind, evidence, policy, when, endorsements, nonce)
    except PolicyError:
        if note:  # authentic, but refused: say by which policy, before the violations
            print(note, file=sys.stderr)
        raise
    _print(claims, args.json, note)
    return 0


def _verify(
    kind: EvidenceKind,
    evidence: bytes,
    policy: Policy,
    when: datetime,
    endorsements: Endorsements,
    nonce: bytes | None,
) -> VerifiedClaims:
    from blindai.attestation import verifier_for

    verifier = verifier_for(kind)
    sub = policy.for_kind(kind)
    if nonce is None:
        return verifier.verify(evidence, sub, now=when, endorsements=endorsements)
    from blindai.attestation.nvidia_gpu import NvidiaGpuPolicy, NvidiaGpuVerifier

    assert isinstance(verifier, NvidiaGpuVerifier) and isinstance(sub, NvidiaGpuPolicy)
    return verifier.verify(evidence, sub, now=when, endorsements=endorsements, expected_nonce=nonce)


def _parsed(fetch: Callable[[], _T]) -> _T:
    """``fetch()``; but evidence too malformed to name its collateral is the EvidenceError
    (status 2) it is without --pccs-url or --kds, not CollateralUnavailable (status 1)."""
    try:
        return fetch()
    except CollateralUnavailable as exc:
        if isinstance(exc.__cause__, EvidenceError):
            raise exc.__cause__ from None
        raise


def _collateral_source(url: str) -> PcsCollateralSource:
    from blindai.attestation import PcsCollateralSource

    return PcsCollateralSource.online(url)


def _kds_source(url: str) -> KdsCertificateSource:
    from blindai.attestation import KdsCertificateSource

    return KdsCertificateSource.online(url)


def _verify_host(args: argparse.Namespace, when: datetime) -> int:
    from blindai.client import attest

    if args.policy is None and not args.simulation:
        raise ConfigurationError("attest HOST needs --policy (or --simulation for a simulation)")
    if args.nonce is not None:
        raise ConfigurationError("--nonce applies to attest verify; a server's GPU answers its own")
    for flag, given in (("--kind", args.kind), ("--evidence", args.evidence),
                        ("--collateral", args.collateral), ("--certs", args.certs)):  # fmt: skip
        if given:  # it was ignored: the server's evidence was verified, not the file
            raise ConfigurationError(f"{flag} applies to attest verify, not to attest HOST")
    attested = attest(
        args.target,
        args.unattested_port,
        policy=Policy.from_file(args.policy) if args.policy else None,
        simulation_mode=args.simulation,
        now=when,
        collateral_fetcher=_collateral_source(args.pccs_url) if args.pccs_url else None,
        snp_certificate_source=_kds_source(args.kds) if args.kds else None,
        attested_server_port=args.attested_port,
        nonce=args.fresh,
        simulation_option="--simulation",
        timeout=args.timeout,
    )
    gpu = attested.gpu_claims
    if gpu is None:
        _print(attested.claims, args.json, "certificate bound to the evidence: yes")
    elif args.json:
        both = {"cpu": attested.claims.to_dict(), "nvidia_gpu": gpu.to_dict()}
        print(json.dumps(both, indent=2, sort_keys=True))
        print("certificate bound to the CPU and the GPU evidence: yes", file=sys.stderr)
    else:
        _print(attested.claims, False, None)
        print("-- nvidia-gpu")
        _print(gpu, False, "certificate bound to the CPU and the GPU evidence: yes")
    print(_provenance(attested, args), file=sys.stderr)
    return 0


def _provenance(attested: Attested, args: argparse.Namespace) -> str:
    """Which certificate was verified, and where its evidence was read."""
    host = args.target.split("://", 1)[-1].rstrip("/")
    if attested.verified_on == "attested":
        where = f"GET /attestation on the attested port {host}:{args.attested_port}"
        where += ", evidence for this client's nonce" if attested.fresh else ""
    else:
        where = (
            f"the unattested port {host}:{args.unattested_port} (the server serves no GET "
            f"/attestation); the attested port {host}:{args.attested_port} presented this "
            "certificate"
        )
    return f"certificate SHA-256 {attested.digest.hex()} verified over {where}"
