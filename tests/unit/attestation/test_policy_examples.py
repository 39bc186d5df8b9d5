"""Every [sgx], [tdx], [sev_snp], [nitro] and [server] section the README and docs/ show in a
TOML block loads as a policy: an example a reader copies must not be refused for its keys or
values. Placeholders (``"33d8736d..."``, ``"..."``, ``"<96 hex digits from build-enclave>"``)
stand for full hex values and are filled in at their key's size. ([nvidia_gpu] examples name
RIM files on the reader's disk: they are not loaded here.)"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from blindai.attestation import EvidenceKind, Policy, verifier_for

REPO = Path(__file__).resolve().parents[3]
SECTIONS = ("sgx", "tdx", "sev_snp", "nitro", "server")
#: keys whose values are 32 bytes; every other elided hex value is 48 bytes
_SIZE_32 = {"mr_enclave", "mr_signer", "host_data", "admin_key_sha256", "previous_admin_keys"}
_ELIDED = re.compile(r'"[0-9a-f]*\.\.\.[0-9a-f]*"')
_DIGITS = re.compile(r'"<(\d+) hex digits[^">]*>"')


def _sections() -> list[tuple[str, str, str]]:
    """(document, section, TOML of that section alone) for each policy section shown."""
    found = []
    for doc in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        for block in re.findall(r"```toml\n(.*?)```", doc.read_text(), re.DOTALL):
            for part in re.split(r"^(?=\[)", block, flags=re.MULTILINE):
                head = re.match(r"\[(\w+)\]", part)
                if head and head.group(1) in SECTIONS:
                    found.append((doc.name, head.group(1), part))
    return found


def _filled(section: str) -> str:
    lines = []
    for line in section.splitlines():
        key = re.match(r"\s*(\w+)\s*=", line)
        size = 32 if key and key.group(1) in _SIZE_32 else 48
        line = _DIGITS.sub(lambda m: '"' + "a" * int(m.group(1)) + '"', line)
        lines.append(_ELIDED.sub(f'"{"ab" * size}"', line))
    return "\n".join(lines)


EXAMPLES = _sections()


def test_the_examples_are_found() -> None:
    shown = {(doc, section) for doc, section, _ in EXAMPLES}
    assert {("README.md", s) for s in SECTIONS} <= shown
    assert {("attestation.md", s) for s in SECTIONS} <= shown
    assert ("deploy-nitro.md", "nitro") in shown


@pytest.mark.parametrize(
    ("doc", "section", "toml"),
    EXAMPLES,
    ids=[f"{d}:{s}:{i}" for i, (d, s, _) in enumerate(EXAMPLES)],
)
def test_each_policy_example_loads(doc: str, section: str, toml: str) -> None:
    Policy.from_toml(_filled(toml))


REGISTERS = ("attributes", "xfrm", "misc_select", "td_attributes", "xfam")


@pytest.mark.parametrize(("section", "fixture"), [("sgx", "automata_sgx"), ("tdx", "phala_v4")])
def test_the_reference_examples_flag_registers_accept_the_real_evidence(
    request: pytest.FixtureRequest, section: str, fixture: str
) -> None:
    """The [sgx] and [tdx] examples of docs/attestation.md give attributes, XFRM, MISCSELECT, TD
    attributes and XFAM: a reader copying them must not refuse a real enclave or TD for them.
    ``xfrm = "0x3"`` under the default mask (every bit) refused every real enclave (XFRM 0xe7:
    AVX, AVX-512), as ``attributes = "0x4"`` in SgxPolicy's docstring did (INIT is always set)."""
    dcap = request.getfixturevalue(fixture)
    kind = EvidenceKind.SGX if section == "sgx" else EvidenceKind.TDX
    [toml] = [t for doc, s, t in EXAMPLES if (doc, s) == ("attestation.md", section)]
    example = Policy.from_toml(_filled(toml)).for_kind(kind)
    permissive = Policy.from_toml(
        f"[{section}]\nallow_any_measurement = true\n"
        'allowed_tcb_statuses = ["UpToDate", "SWHardeningNeeded"]'
    ).for_kind(kind)
    claims = verifier_for(kind).verify(
        dcap.quote, permissive, now=dcap.now, endorsements=dcap.endorsements
    )
    assert [v for v in example.check(claims) if v.field in REGISTERS] == []
