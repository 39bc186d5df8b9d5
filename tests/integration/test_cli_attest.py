"""``blindai attest`` and ``blindai serve`` as a user runs them: a subprocess, exit codes, stderr.

Exit status: 0 accepted, 1 refused (one line per violation), 2 unusable arguments or malformed
evidence; never a traceback. Real evidence comes from the committed vectors (tests/data/evidence);
derived negative vectors (bit flip, truncation) are written to ``tmp_path``.
"""

from __future__ import annotations

import hashlib
import json
import os
import ssl
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests._fakes.mitm import UnattestedMitm
from tests._server import REPO, ServerProcess, free_ports
from tests.unit.attestation.dcap_sets import pcs_set

SGX_SET = ("sgx-dcap", "phala-dcap-qvl-sgx")
SGX_AT = "2025-07-01T00:00:00Z"
SGX_MR_ENCLAVE = "33d8736db756ed4997e04ba358d27833188f1932ff7b1d156904d3f560452fbb"
SGX_REPORT_DATA = b"Hello, world!".hex() + "00" * 51
SNP_SET = ("sev-snp", "virtee-sev-milan")
SNP_AT = "2025-06-01T00:00:00Z"
SNP_MEASUREMENT = (
    "7a1e5c266c0108dbc9bb94fa926951320940915d0aafb42464bd88b579ea158d"
    "3e1a0dc39b2c60bd95b9c480cd81841f"
)
SNP_MIN_TCB = "0300000000000873"  # the set's REPORTED_TCB: bootloader 3, snp 8, microcode 115
NITRO_SET = ("nitro", "evervault-production-pcrs")
NITRO_AT = "2022-10-13T09:00:00Z"


def blindai(*args: str | Path | int, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run ``python -m blindai ARGS``; no stderr may ever hold a traceback."""
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"), PYTHONUNBUFFERED="1")
    done = subprocess.run(
        [sys.executable, "-m", "blindai", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        cwd=REPO,
    )
    assert "Traceback" not in done.stderr, done.stderr
    return done


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


@pytest.fixture
def sgx(evidence_dir: Path) -> Path:
    return evidence_dir.joinpath(*SGX_SET)


@pytest.fixture
def snp(evidence_dir: Path) -> Path:
    return evidence_dir.joinpath(*SNP_SET)


def _sgx_args(sgx: Path, evidence: Path | None = None) -> list[str | Path]:
    return [
        "attest",
        "verify",
        "--kind",
        "sgx",
        "--evidence",
        evidence or sgx / "quote.bin",
        "--collateral",
        sgx / "collateral.json",
        "--at",
        SGX_AT,
    ]


def _snp_args(snp: Path, evidence: Path | None = None) -> list[str | Path]:
    return [
        "attest",
        "verify",
        "--kind",
        "sev-snp",
        "--evidence",
        evidence or snp / "report.bin",
        "--certs",
        snp / "vcek.der",
        snp / "ask_ark_milan.pem",
        "--at",
        SNP_AT,
    ]


# --------------------------------------------------------------------------------------------
# SGX (Phala set, complete collateral)


def test_sgx_verify_json(sgx: Path, tmp_path: Path) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text(
        f'[sgx]\nmr_enclave = "{SGX_MR_ENCLAVE}"\n'
        'allowed_tcb_statuses = ["ConfigurationAndSWHardeningNeeded"]\n'
    )
    done = blindai(*_sgx_args(sgx), "--policy", policy, "--json")
    assert done.returncode == 0, done.stderr
    claims = json.loads(done.stdout)
    assert claims["kind"] == "sgx"
    assert claims["measurement"] == SGX_MR_ENCLAVE
    assert claims["report_data"] == SGX_REPORT_DATA
    assert claims["debug"] is False
    assert claims["tcb_status"] == "ConfigurationAndSWHardeningNeeded"
    assert done.stderr == ""


def test_verifying_files_says_the_server_section_is_not_checked(snp: Path, tmp_path: Path) -> None:
    """Evidence files state no server configuration: a policy's [server] section cannot be
    held to them (before, it passed in silence, as if checked)."""
    policy = tmp_path / "policy.toml"
    policy.write_text(
        f'[sev_snp]\nmeasurement = "{SNP_MEASUREMENT}"\nmin_tcb = "{SNP_MIN_TCB}"\n\n'
        "[server]\nallow_model_export = false\n"
    )
    done = blindai(*_snp_args(snp), "--policy", policy, "--json")
    assert done.returncode == 0, done.stderr
    assert _lines(done.stderr) == [
        "NOTE: the policy's [server] section is not checked: evidence files do not state the "
        "server's configuration (blindai attest HOST checks it, over the attested connection)"
    ]


def test_bit_fields_are_shown_in_hex_as_a_policy_gives_them(
    sgx: Path, evidence_dir: Path, tmp_path: Path
) -> None:
    tdx = evidence_dir / "tdx" / "phala-dcap-qvl-tdx-v4"
    table = blindai(
        "attest", "verify", "--kind", "tdx", "--evidence", tdx / "quote.bin",
        "--collateral", tdx / "collateral.json", "--at", SGX_AT,
    )  # fmt: skip
    assert table.returncode == 0, table.stderr
    rows = dict(line.split(maxsplit=1) for line in _lines(table.stdout))
    assert rows["td_attributes"] == "0x10000000"  # SEPT_VE_DISABLE, as docs/attestation.md says
    assert rows["xfam"] == "0x602e7"
    assert rows["quote_version"] == "4"  # a number, not a bit field
    policy = tmp_path / "policy.toml"
    policy.write_text(
        f'[sgx]\nmr_enclave = "{SGX_MR_ENCLAVE}"\n'
        'allowed_tcb_statuses = ["ConfigurationAndSWHardeningNeeded"]\n'
    )
    sgx_args = [*_sgx_args(sgx), "--policy", policy]
    as_json = json.loads(blindai(*sgx_args, "--json").stdout)
    sgx_rows = dict(line.split(maxsplit=1) for line in _lines(blindai(*sgx_args).stdout))
    for key in ("attributes", "xfrm", "misc_select"):
        assert sgx_rows[key] == hex(as_json[key])


def test_sgx_policy_default_tcb_refuses(sgx: Path, tmp_path: Path) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text(f'[sgx]\nmr_enclave = "{SGX_MR_ENCLAVE}"\n')
    done = blindai(*_sgx_args(sgx), "--policy", policy)
    assert done.returncode == 1
    assert done.stdout == ""
    assert _lines(done.stderr) == [
        "PolicyError: tcb_status: expected UpToDate, got ConfigurationAndSWHardeningNeeded"
    ]


def test_sgx_policy_two_violations_two_lines(sgx: Path, tmp_path: Path) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text(f'[sgx]\nmr_enclave = "{"00" * 32}"\n')
    done = blindai(*_sgx_args(sgx), "--policy", policy)
    assert done.returncode == 1
    lines = _lines(done.stderr)
    assert len(lines) == 2, lines
    assert all(line.startswith("PolicyError: ") for line in lines)
    assert {line.split(":")[1].strip() for line in lines} == {"mr_enclave", "tcb_status"}


def test_sgx_policy_accepting_the_tcb_status(sgx: Path, tmp_path: Path) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text(
        f'[sgx]\nmr_enclave = "{SGX_MR_ENCLAVE}"\n'
        'allowed_tcb_statuses = ["UpToDate", "ConfigurationAndSWHardeningNeeded"]\n'
    )
    done = blindai(*_sgx_args(sgx), "--policy", policy, "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["measurement"] == SGX_MR_ENCLAVE


# --------------------------------------------------------------------------------------------
# SEV-SNP (virtee Milan set) and derived negative vectors


def test_snp_verify(snp: Path) -> None:
    done = blindai(*_snp_args(snp), "--json")
    assert done.returncode == 0, done.stderr
    claims = json.loads(done.stdout)
    assert claims["kind"] == "sev-snp"
    assert claims["measurement"] == SNP_MEASUREMENT
    assert claims["debug"] is False


def test_snp_bit_flip_refused(snp: Path, tmp_path: Path) -> None:
    flipped = bytearray((snp / "report.bin").read_bytes())
    flipped[0x90] ^= 0x01  # first byte of MEASUREMENT: signed, so the signature fails
    path = tmp_path / "flipped.bin"
    path.write_bytes(bytes(flipped))
    done = blindai(*_snp_args(snp, path))
    assert done.returncode == 1
    assert done.stdout == ""
    assert _lines(done.stderr)[0].startswith("SignatureError: ")


def test_snp_truncated_is_malformed(snp: Path, tmp_path: Path) -> None:
    path = tmp_path / "truncated.bin"
    path.write_bytes((snp / "report.bin").read_bytes()[:600])
    done = blindai(*_snp_args(snp, path))
    assert done.returncode == 2
    assert _lines(done.stderr) == ["EvidenceError: an SEV-SNP report is 1184 bytes, got 600"]


def test_missing_evidence_file(snp: Path, tmp_path: Path) -> None:
    done = blindai(*_snp_args(snp, tmp_path / "absent.bin"))
    assert done.returncode == 2
    assert len(_lines(done.stderr)) == 1
    assert "absent.bin" in done.stderr and "ConfigurationError" in done.stderr


def test_bad_at(snp: Path) -> None:
    args = _snp_args(snp)
    args[args.index("--at") + 1] = "yesterday"
    done = blindai(*args)
    assert done.returncode == 2
    assert _lines(done.stderr) == ["ConfigurationError: --at 'yesterday' is not an ISO-8601 time"]


# --------------------------------------------------------------------------------------------
# Nitro (evervault production enclave)


@pytest.fixture
def nitro_doc(evidence_dir: Path) -> Path:
    return evidence_dir.joinpath(*NITRO_SET) / "attestation_doc.cbor"


def test_nitro_verify(nitro_doc: Path) -> None:
    doc = nitro_doc
    done = blindai(
        "attest", "verify", "--kind", "nitro", "--evidence", doc, "--at", NITRO_AT, "--json"
    )
    assert done.returncode == 0, done.stderr
    claims = json.loads(done.stdout)
    assert claims["kind"] == "nitro"
    assert claims["debug"] is False


def test_nitro_bit_flip_refused(nitro_doc: Path, tmp_path: Path) -> None:
    doc = bytearray(nitro_doc.read_bytes())
    doc[-1] ^= 0x01  # last byte of the COSE signature
    path = tmp_path / "flipped.cbor"
    path.write_bytes(bytes(doc))
    done = blindai("attest", "verify", "--kind", "nitro", "--evidence", path, "--at", NITRO_AT)
    assert done.returncode == 1
    assert _lines(done.stderr)[0].startswith("SignatureError: ")


# --------------------------------------------------------------------------------------------
# without --policy: the defaults still apply (debug refused, TCB UpToDate only, ...), only the
# measurement is left unpinned; exit 1 with the violations listed, as with a policy


@dataclass(frozen=True)
class Unpinned:
    kind: str
    folder: str
    at: str
    violation: str
    certs: tuple[str, ...] = ()
    pcs_collateral: bool = False


REFUSED_BY_DEFAULT = {
    "nitro debug enclave": Unpinned(
        "nitro", "nitro/evervault-debug-userdata", "2022-10-12T14:00:00Z", "debug"
    ),
    "snp guest allowing debug": Unpinned(
        "sev-snp",
        "sev-snp/go-sev-guest-milan",
        SNP_AT,
        "debug",
        certs=("vcek.der", "ask_ark_milan.pem"),
    ),
    "sgx SWHardeningNeeded": Unpinned(
        "sgx",
        "sgx-dcap/automata-fmspc-00606a000000",
        "2025-09-01T00:00:00Z",
        "tcb_status: expected UpToDate, got SWHardeningNeeded",
        pcs_collateral=True,
    ),
    "tdx OutOfDate": Unpinned(
        "tdx",
        "tdx/automata-dcap-rs-tdx-v4",
        "2025-03-01T00:00:00Z",
        "tcb_status: expected UpToDate, got OutOfDate",
        pcs_collateral=True,
    ),
}


def _unpinned_args(case: Unpinned, evidence_dir: Path, tmp_path: Path) -> list[str | Path]:
    folder = evidence_dir / case.folder
    evidence = folder / ("attestation_doc.cbor" if case.kind == "nitro" else "report.bin")
    args: list[str | Path] = ["attest", "verify", "--kind", case.kind, "--at", case.at]
    if case.pcs_collateral:
        evidence = folder / "quote.bin"
        collateral = tmp_path / "collateral.json"
        collateral.write_bytes(pcs_set(folder, case.at).collateral)
        args += ["--collateral", collateral]
    if case.certs:
        args += ["--certs", *(folder / name for name in case.certs)]
    return [*args, "--evidence", evidence]


@pytest.mark.parametrize("name", sorted(REFUSED_BY_DEFAULT))
def test_without_a_policy_the_defaults_still_refuse(
    name: str, evidence_dir: Path, tmp_path: Path
) -> None:
    case = REFUSED_BY_DEFAULT[name]
    done = blindai(*_unpinned_args(case, evidence_dir, tmp_path))
    assert done.returncode == 1, done.stderr
    assert done.stdout == ""
    note, *violations = _lines(done.stderr)
    assert note.startswith("NOTE: no --policy given: the default [")
    assert "the measurement is NOT pinned" in note
    (violation,) = violations
    assert violation.startswith(f"PolicyError: {case.violation}")


def test_without_a_policy_an_up_to_date_production_tee_is_accepted(snp: Path) -> None:
    done = blindai(*_snp_args(snp), "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["measurement"] == SNP_MEASUREMENT
    (note,) = _lines(done.stderr)
    assert note == (
        "NOTE: no --policy given: the default [sev_snp] policy applies (debug refused (guest "
        "policy bit 19), a migration agent refused (bit 18), CXL refused (bit 21), the most "
        "privileged VMPL only; any firmware TCB (no min_tcb)); the measurement is NOT pinned: "
        "any code in a genuine TEE passes"
    )


# --------------------------------------------------------------------------------------------
# a running server: `blindai attest HOST`


def _attested_cert_sha256(server: ServerProcess) -> str:
    """SHA-256 of the certificate the attested port presents (read here, independently)."""
    pem = ssl.get_server_certificate((server.host, server.attested_port))
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem)).hexdigest()


def _host_args(server: ServerProcess, unattested_port: int | None = None) -> list[str | int]:
    return [
        "attest",
        server.host,
        "--unattested-port",
        server.unattested_port if unattested_port is None else unattested_port,
        "--attested-port",
        server.attested_port,
    ]


def test_attest_simulation_host(server: ServerProcess, previous_server: ServerProcess) -> None:
    """The evidence is read on the attested port, for the certificate of that connection; the
    unattested port (here another replica's, as a balancer may route it) is not even asked."""
    with UnattestedMitm(previous_server.host, previous_server.unattested_port) as other:
        done = blindai(*_host_args(server, other.port), "--simulation", "--json")
    assert done.returncode == 0, done.stderr
    claims = json.loads(done.stdout)
    assert claims["kind"] == "simulation"
    assert "SIMULATION" in done.stderr  # warned, in one line each
    assert "certificate bound to the evidence: yes" in done.stderr
    assert _lines(done.stderr)[-1] == (
        f"certificate SHA-256 {_attested_cert_sha256(server)} verified over GET /attestation "
        f"on the attested port {server.host}:{server.attested_port}"
    )
    assert other.paths == []


def test_attest_simulation_host_fresh(server: ServerProcess) -> None:
    done = blindai(*_host_args(server), "--simulation", "--fresh")
    assert done.returncode == 0, done.stderr
    assert "kind                   simulation" in done.stdout
    assert _lines(done.stderr)[-1] == (
        f"certificate SHA-256 {_attested_cert_sha256(server)} verified over GET /attestation "
        f"on the attested port {server.host}:{server.attested_port}, evidence for this "
        "client's nonce"
    )


def test_attest_host_without_the_attestation_route(previous_server: ServerProcess) -> None:
    """A server without GET /attestation: the 0.6 flow on its unattested port, and the
    attested port must present the certificate found there."""
    server = previous_server
    with UnattestedMitm(server.host, server.unattested_port) as unattested:
        done = blindai(*_host_args(server, unattested.port), "--simulation", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["kind"] == "simulation"
    assert _lines(done.stderr)[-1] == (
        f"certificate SHA-256 {_attested_cert_sha256(server)} verified over the unattested "
        f"port {server.host}:{unattested.port} (the server serves no GET /attestation); the "
        f"attested port {server.host}:{server.attested_port} presented this certificate"
    )
    assert "/quote" in unattested.paths


def test_attest_host_fresh_refuses_a_server_without_the_route(
    previous_server: ServerProcess,
) -> None:
    with UnattestedMitm(previous_server.host, previous_server.unattested_port) as unattested:
        done = blindai(*_host_args(previous_server, unattested.port), "--simulation", "--fresh")
    assert done.returncode == 1
    assert done.stdout == ""
    assert _lines(done.stderr) == [
        "VerificationError: fresh evidence was asked (nonce), but the server serves no "
        "GET /attestation: it can only show evidence it made in advance"
    ]
    assert unattested.paths == []  # refused before reading evidence made in advance


def test_attest_host_attested_port_not_listening(server: ServerProcess) -> None:
    (closed,) = free_ports(1)
    args = ["attest", server.host, "--unattested-port", server.unattested_port]
    done = blindai(*args, "--attested-port", closed, "--simulation")
    assert done.returncode == 1
    assert _lines(done.stderr) == [
        f"NetworkError: cannot reach the attested port {server.host}:{closed}: Connection refused"
    ]


def test_attest_host_needs_a_policy(server: ServerProcess) -> None:
    done = blindai(*_host_args(server))
    assert done.returncode == 2
    assert _lines(done.stderr) == [
        "ConfigurationError: attest HOST needs --policy (or --simulation for a simulation)"
    ]


def test_attest_simulation_host_with_a_policy_refused(
    server: ServerProcess, tmp_path: Path
) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text(f'[sev_snp]\nmeasurement = "{SNP_MEASUREMENT}"\nmin_tcb = "{SNP_MIN_TCB}"\n')
    done = blindai(*_host_args(server), "--policy", policy)
    assert done.returncode == 1
    (line,) = _lines(done.stderr)
    assert line.startswith("VerificationError: ") and "SIMULATION" in line
    assert "Pass --simulation only for development" in line  # the CLI's opt-in, by its name
    assert "simulation_mode" not in line


# --------------------------------------------------------------------------------------------
# `blindai serve --tee auto` without a TEE


def test_serve_auto_without_a_tee_fails_in_one_line() -> None:
    present = [
        p
        for p in ("/dev/attestation", "/sys/kernel/config/tsm/report", "/dev/nsm")
        if os.path.exists(p)
    ]
    if present:
        pytest.skip(f"this machine has a TEE interface: {', '.join(present)}")
    u, a, m = free_ports(3)
    done = blindai(
        "serve",
        "--tee",
        "auto",
        "--host",
        "127.0.0.1",
        "--unattested-port",
        u,
        "--attested-port",
        a,
        "--management-port",
        m,
        "--grpc-port",
        "0",
        timeout=30,
    )
    assert done.returncode != 0
    lines = _lines(done.stderr)
    assert len(lines) == 1, lines
    assert lines[0].startswith("ConfigurationError: --tee auto found no TEE")
    assert "--tee simulation" in lines[0]


def test_attest_a_host_name_with_an_empty_label_is_one_line() -> None:
    """``a..b`` made the resolver's idna codec raise UnicodeError: a traceback."""
    done = blindai("attest", "a..b", "--simulation")
    assert done.returncode == 2
    assert _lines(done.stderr) == [
        "ConfigurationError: 'a..b' is not a valid host name: a label (between dots) is empty, "
        "longer than 63 characters, or not valid IDNA"
    ]


def test_attest_verify_at_a_time_past_the_range_in_utc_is_one_line(tmp_path: Path) -> None:
    """The Nitro verifier's conversion to UTC raised OverflowError: a traceback."""
    evidence = tmp_path / "doc.cbor"
    evidence.write_bytes(b"\xd2")
    at = "9999-12-31T23:59:59-05:00"
    done = blindai("attest", "verify", "--kind", "nitro", "--evidence", evidence, "--at", at)
    assert done.returncode == 2
    assert _lines(done.stderr) == [f"ConfigurationError: --at '{at}' is out of range once in UTC"]
