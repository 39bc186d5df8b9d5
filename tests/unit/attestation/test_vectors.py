"""The committed evidence vectors are intact and documented (tests/data/evidence)."""

from __future__ import annotations

import hashlib
from pathlib import Path


def _sums(evidence_dir: Path) -> dict[str, str]:
    lines = (evidence_dir / "SHA256SUMS").read_text().splitlines()
    return {name: digest for digest, name in (line.split("  ", 1) for line in lines)}


def test_every_vector_matches_its_recorded_digest(evidence_dir: Path) -> None:
    sums = _sums(evidence_dir)
    for name, digest in sums.items():
        assert hashlib.sha256((evidence_dir / name).read_bytes()).hexdigest() == digest, name


def test_every_file_of_a_set_is_listed(evidence_dir: Path) -> None:
    kinds = ("sgx-dcap", "tdx", "sev-snp", "nitro", "nvidia-gpu")
    files = {
        p.relative_to(evidence_dir).as_posix()
        for kind in kinds
        for p in (evidence_dir / kind).rglob("*")
        if p.is_file()
    }
    assert files == set(_sums(evidence_dir))


def test_every_set_is_in_the_readme_with_its_licence(evidence_dir: Path) -> None:
    readme = (evidence_dir / "README.md").read_text()
    sets = {"/".join(name.split("/")[:2]) for name in _sums(evidence_dir)}
    rows = [line for line in readme.splitlines() if line.startswith("| `")]
    for name in sets:
        (row,) = [r for r in rows if r.startswith(f"| `{name}` |")]
        assert "MIT" in row or "Apache-2.0" in row, row
    for licence in ("Apache-2.0.txt", "MIT-Phala-Network-dcap-qvl.txt"):
        assert (evidence_dir / "LICENSES" / licence).is_file()
