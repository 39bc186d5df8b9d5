"""Every verifier, fed mutated real evidence, raises only :mod:`blindai.errors`, and soon.

A deterministic mutation fuzzer (seeded by the set's name, so a failure replays) over the
real vectors in ``tests/data/evidence``: each case mutates the evidence, its collateral or
one of its certificates (cut at a random or a structural offset, bytes overwritten, bit
flips, a 4-byte length set to 0, 2**31 or 2**32-1, bytes inserted or deleted), and CBOR
documents are also mutated as values (a field replaced by a value of another type, a giant
integer, a deep nesting, a huge byte string, a map of many entries), then re-encoded. The
verifier runs at the set's pinned time with its kind's default policy (measurement unpinned),
so mutations reach the signature, chain, collateral and policy checks, not only the parser.
The GET /attestation reply and the simulated document are fuzzed the same way.

What must hold for every case: the verifier returns claims or raises a
:class:`~blindai.errors.BlindAIError` (never IndexError, struct.error, KeyError, ValueError,
RecursionError, MemoryError...), within :data:`CASE_SECONDS`.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import cbor2
import pytest

from blindai.attestation import Endorsements, simulation, verifier_for
from blindai.attestation.claims import EvidenceKind
from blindai.attestation.dcap._quote import parse_envelope
from blindai.attestation.kinds import spec_for
from blindai.attestation.policy import UNPINNED
from blindai.errors import BlindAIError
from blindai.protocol.attestation import AttestationReply, decode_reply, encode_reply
from tests.unit.attestation.dcap_sets import phala_set
from tests.unit.attestation.nvidia_gpu._gpu_kit import REAL_AT
from tests.unit.attestation.nvidia_gpu._gpu_kit import RealSet as GpuSet
from tests.unit.attestation.snp._snp_kit import SET_NAMES, load_set

pytestmark = pytest.mark.filterwarnings(
    "ignore::blindai.attestation.simulation.SimulationModeWarning"
)

CASES = 300
"""Cases per evidence set (a few thousand in all, a few seconds)."""
CASE_SECONDS = 2.0
"""The most one case may take (the slowest seen here: 25 ms)."""
_LENGTHS = (b"\0\0\0\0", b"\0\0\0\x80", b"\xff\xff\xff\x7f", b"\xff\xff\xff\xff")


@dataclass(frozen=True)
class Target:
    """One real evidence set: what a server would send, and the time it verifies at."""

    kind: EvidenceKind
    evidence: bytes
    collateral: bytes | None
    certificates: tuple[bytes, ...]
    now: datetime


def _targets(evidence_dir: Path) -> dict[str, Target]:
    sgx = phala_set(evidence_dir / "sgx-dcap" / "phala-dcap-qvl-sgx", "2025-07-01T00:00:00Z")
    v4 = phala_set(evidence_dir / "tdx" / "phala-dcap-qvl-tdx-v4", "2025-07-01T00:00:00Z")
    v5 = phala_set(evidence_dir / "tdx" / "phala-dcap-qvl-tdx-v5-outdated", "2026-03-01T00:00:00Z")
    out = {
        "sgx": Target(EvidenceKind.SGX, sgx.quote, sgx.collateral, (), sgx.now),
        "tdx-v4": Target(EvidenceKind.TDX, v4.quote, v4.collateral, (), v4.now),
        "tdx-v5": Target(EvidenceKind.TDX, v5.quote, v5.collateral, (), v5.now),
    }
    snp_now = datetime(2025, 6, 1, tzinfo=timezone.utc)
    for name in SET_NAMES:
        snp = load_set(evidence_dir, name)
        out[name] = Target(EvidenceKind.SEV_SNP, snp.report, None, snp.certificates, snp_now)
    gpu = GpuSet.load()
    out["nvidia-gpu"] = Target(EvidenceKind.NVIDIA_GPU, gpu.report, None, (gpu.chain_pem,), REAL_AT)
    for name, when in _nitro_sets(evidence_dir).items():
        doc = (evidence_dir / "nitro" / name / "attestation_doc.cbor").read_bytes()
        out[name] = Target(EvidenceKind.NITRO, doc, None, (), when)
    return out


def _nitro_sets(evidence_dir: Path) -> dict[str, datetime]:
    """Each Nitro set and the verification time its README row gives (its last column)."""
    row = re.compile(r"\| `nitro/([a-z0-9-]+)` \|.*\| `([0-9T:-]+)Z` \|")
    readme = (evidence_dir / "README.md").read_text()
    found = {m[1]: datetime.fromisoformat(m[2]).replace(tzinfo=timezone.utc)
             for m in row.finditer(readme)}  # fmt: skip
    assert len(found) == 3, found
    return found


_NITRO = ["evervault-production-pcrs", "evervault-debug-userdata", "evervault-debug-nonce"]


# --- mutations ------------------------------------------------------------------------------


def mutate_bytes(rng: random.Random, data: bytes) -> bytes:
    """One byte-level mutation of ``data``."""
    b = bytearray(data)
    op = rng.randrange(7)
    if not b or op == 0:
        return bytes(b) + bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
    i = rng.randrange(len(b))
    if op == 1:  # cut anywhere
        return bytes(b[:i])
    if op == 2:  # cut at a structural offset (a multiple of 4, 16 or 64)
        step = rng.choice((4, 16, 64))
        return bytes(b[: i - i % step])
    if op == 3:
        for _ in range(rng.randint(1, 4)):
            b[rng.randrange(len(b))] = rng.randrange(256)
        return bytes(b)
    if op == 4:
        b[i] ^= 1 << rng.randrange(8)
        return bytes(b)
    if op == 5:  # a 4-byte length or count made empty, negative or huge
        b[i : i + 4] = rng.choice(_LENGTHS)
        return bytes(b)
    del b[i : i + rng.randint(1, 64)]
    return bytes(b)


def _hostile_value(rng: random.Random) -> Any:
    depth = rng.choice((2, 63, 64, 65, 500))
    nested: Any = 0
    for _ in range(depth):
        nested = [nested]
    return rng.choice(
        (
            nested,
            2**64,
            -(2**64) - 1,
            10**300,
            10**5000,  # past str()'s 4300 digits: printing it raises ValueError
            1.5,
            None,
            True,
            "x" * rng.choice((0, 1, 10_000)),
            b"\0" * rng.choice((0, 1, 100_000)),
            {i: i for i in range(rng.choice((1, 40)))},
            list(range(rng.choice((0, 1000)))),
            cbor2.CBORTag(rng.choice((0, 1, 18, 30, 258, 55799)), [1, 2]),
        )
    )


def _replace_one(rng: random.Random, value: Any) -> Any:
    """``value`` with one of its nested values (or itself) replaced by a hostile one."""
    if isinstance(value, cbor2.CBORTag):
        return cbor2.CBORTag(value.tag, _replace_one(rng, value.value))
    if isinstance(value, dict) and value and rng.random() < 0.8:
        keys = list(value)
        key = rng.choice(keys)
        out = dict(value)
        if rng.random() < 0.2:
            del out[key]
        else:
            out[key] = _replace_one(rng, value[key])
        return out
    if isinstance(value, list | tuple) and value and rng.random() < 0.8:
        out_list = list(value)
        i = rng.randrange(len(out_list))
        out_list[i] = _replace_one(rng, out_list[i])
        return out_list
    if isinstance(value, bytes) and value and rng.random() < 0.5:
        try:  # a byte string that holds CBOR (a COSE payload): mutate inside it
            inner = cbor2.loads(value)
        except Exception:  # not CBOR: mutate its bytes
            return mutate_bytes(rng, value)
        return cbor2.dumps(_replace_one(rng, inner))
    return _hostile_value(rng)


def mutate_cbor(rng: random.Random, data: bytes, prefix: bytes = b"") -> bytes:
    """One value-level mutation of the CBOR document after ``prefix``, re-encoded."""
    doc = cbor2.loads(data[len(prefix) :])
    return prefix + cbor2.dumps(_replace_one(rng, doc))


# --- the runs -------------------------------------------------------------------------------


def _run_cases(name: str, check: Callable[[random.Random], None], cases: int = CASES) -> None:
    rng = random.Random(name)
    for case in range(cases):
        state = rng.getstate()
        start = time.monotonic()
        try:
            check(rng)
        except BlindAIError:
            pass
        except Exception as exc:
            pytest.fail(f"{name} case {case} (random state {hash(state)}) leaked {exc!r}")
        took = time.monotonic() - start
        assert took < CASE_SECONDS, f"{name} case {case} took {took:.1f} s"


_NAMES = ["sgx", "tdx-v4", "tdx-v5", *SET_NAMES, "nvidia-gpu", *_NITRO]


@pytest.mark.parametrize("name", _NAMES)
def test_mutated_evidence_raises_only_blindai_errors(name: str, evidence_dir: Path) -> None:
    target = _targets(evidence_dir)[name]
    verifier = verifier_for(target.kind)
    policy = spec_for(target.kind).policy_class().from_mapping(UNPINNED)
    fields = ["evidence", "evidence"]
    fields += ["collateral"] if target.collateral is not None else []
    fields += ["certificate"] if target.certificates else []

    def check(rng: random.Random) -> None:
        evidence, collateral, certs = target.evidence, target.collateral, target.certificates
        what = rng.choice(fields)
        if what == "collateral" and collateral is not None:
            collateral = mutate_bytes(rng, collateral)
        elif what == "certificate":
            i = rng.randrange(len(certs))
            certs = (*certs[:i], mutate_bytes(rng, certs[i]), *certs[i + 1 :])
        elif target.kind is EvidenceKind.NITRO and rng.random() < 0.5:
            evidence = mutate_cbor(rng, evidence)
        else:
            evidence = mutate_bytes(rng, evidence)
        verifier.verify(
            evidence, policy, now=target.now, endorsements=Endorsements(collateral, certs)
        )

    _run_cases(name, check)


def _needed(target: Target) -> int:
    """How many bytes of the evidence are read (a DCAP quote may carry padding after it)."""
    if target.kind in (EvidenceKind.SGX, EvidenceKind.TDX):
        return len(parse_envelope(target.evidence).quote)
    return len(target.evidence)


def test_evidence_cut_at_every_offset_is_refused(evidence_dir: Path) -> None:
    """Each set's evidence cut at every offset (every 7th for the long ones) before its end."""
    for name, target in _targets(evidence_dir).items():
        verifier = verifier_for(target.kind)
        policy = spec_for(target.kind).policy_class().from_mapping(UNPINNED)
        endorsements = Endorsements(target.collateral, target.certificates)
        step = 1 if len(target.evidence) <= 2048 else 7
        for cut in range(0, _needed(target), step):
            try:
                verifier.verify(
                    target.evidence[:cut], policy, now=target.now, endorsements=endorsements
                )
            except BlindAIError:
                continue
            pytest.fail(f"{name} cut at {cut} was accepted")


def test_mutated_simulated_documents_raise_only_blindai_errors() -> None:
    good = simulation.encode(simulation.SimulatedDocument(b"\1" * 32, b"\2" * 64, "1.0"))
    verifier = simulation.UnsafeSimulationVerifier()
    now = datetime(2026, 1, 1, tzinfo=timezone.utc)

    def check(rng: random.Random) -> None:
        if rng.random() < 0.5:
            doc = mutate_cbor(rng, good, prefix=simulation.MAGIC)
        else:
            doc = mutate_bytes(rng, good)
        verifier.verify(doc, now=now)

    _run_cases("simulation", check, cases=2000)


def test_mutated_attestation_replies_raise_only_blindai_errors(evidence_dir: Path) -> None:
    """The GET /attestation reply, decoded before anything in it is verified."""
    target = _targets(evidence_dir)["virtee-sev-milan"]
    reply = encode_reply(
        AttestationReply(
            kind="sev-snp",
            certificate=b"\x30" * 400,
            evidence=target.evidence,
            nonce=b"\5" * 32,
            certificates=target.certificates,
            info={"tee": "sev-snp", "version": "1.0"},
        )
    )

    def check(rng: random.Random) -> None:
        body = mutate_cbor(rng, reply) if rng.random() < 0.6 else mutate_bytes(rng, reply)
        decode_reply(body)

    _run_cases("attestation-reply", check, cases=2000)
