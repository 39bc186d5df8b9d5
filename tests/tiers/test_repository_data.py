"""A clone from the web has no folder of reference material beside it: the data the tests and
scripts read travels with the repository (``tests/data``), and nothing names that folder."""

from __future__ import annotations

import re
from pathlib import Path

from scripts._verify_sets import EVIDENCE, real_sets

REPO = Path(__file__).resolve().parents[2]
_FOLDER = "".join(("sha", "red"))  # spelled apart, so that this file names no such path
_BESIDE = re.compile(rf"\.\./{_FOLDER}|/\s*[\"']{_FOLDER}[\"']")


def test_the_benchmarks_evidence_sets_come_from_the_repository() -> None:
    assert EVIDENCE.is_relative_to(REPO) and EVIDENCE.is_dir()
    platforms = [platform for platform, _, _ in real_sets()]
    assert platforms == ["sgx", "tdx", "sev-snp", "nitro"]


def test_no_code_reads_the_folder_beside_the_checkout() -> None:
    offenders = [
        str(path.relative_to(REPO))
        for folder in ("src", "tests", "scripts")
        for path in (REPO / folder).rglob("*")
        if path.suffix in (".py", ".sh")
        and path != Path(__file__).resolve()
        and "data" not in path.relative_to(REPO).parts
        and _BESIDE.search(path.read_text(errors="replace"))
    ]
    assert not offenders, offenders
