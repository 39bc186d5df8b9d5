"""``python -m tests._fakes.gpu_server serve --gpu-dir DIR ...``: a real server with a fake NVML.

The command is the real ``blindai serve`` with all its flags (a simulation or a hardware-path
CPU side); only NVML is replaced,
by :class:`FakeNvml`, which answers every nonce with an SPDM report signed by the generated
GPU key stored in ``DIR`` (written by :func:`save_gpu`), the way
``nvmlDeviceGetConfComputeGpuAttestationReport`` would on a GPU in confidential-computing
mode, or with the fixed report in ``DIR/replay`` when that file exists (a replay). Every
nonce it was asked is appended to ``DIR/reports``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import Encoding

from tests._fakes.nvidia_gpu import FakeGpu, sign, unsigned_report

KEY = "leaf-key.pem"
CHAIN = "chain.pem"
MEASUREMENTS = "measurements.hex"


def save_gpu(gpu: FakeGpu, directory: Path) -> None:
    """Write what the fake NVML of another process needs: the leaf key, chain, measurements."""
    directory.mkdir(parents=True, exist_ok=True)
    key = gpu.leaf_key.private_bytes(
        Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    directory.joinpath(KEY).write_bytes(key)
    directory.joinpath(CHAIN).write_bytes(gpu.chain_pem())
    lines = [f"{i} {v.hex()}" for i, v in sorted(gpu.measurements.items())]
    directory.joinpath(MEASUREMENTS).write_text("\n".join(lines) + "\n")


class FakeNvml:
    """The :class:`~blindai.server.attesters.nvidia_gpu.Nvml` calls, answered from ``directory``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        key = serialization.load_pem_private_key(directory.joinpath(KEY).read_bytes(), None)
        self.key = key
        self.measurements = {
            int(i): bytes.fromhex(v)
            for i, v in (
                line.split() for line in directory.joinpath(MEASUREMENTS).read_text().splitlines()
            )
        }

    def attestation_report(self, nonce: bytes) -> bytes:
        with open(self.directory / "reports", "a") as log:
            log.write(nonce.hex() + "\n")
        replay = self.directory / "replay"
        if replay.exists():
            return replay.read_bytes()
        return sign(unsigned_report(nonce, self.measurements), self.key)  # type: ignore[arg-type]

    def certificate_chain(self) -> bytes:
        return self.directory.joinpath(CHAIN).read_bytes()


def main(argv: list[str]) -> int:
    """``blindai`` itself, its ``serve`` given a GPU attester over :class:`FakeNvml`."""
    import functools

    import blindai.server
    from blindai.cli import main as cli_main
    from blindai.server.attesters.nvidia_gpu import NvidiaGpuAttester

    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--gpu-dir", type=Path, required=True)
    ours, rest = parser.parse_known_args(argv)
    attester = NvidiaGpuAttester(FakeNvml(ours.gpu_dir))
    # the CLI imports serve from blindai.server when it runs: hand it the hardware double
    blindai.server.serve = functools.partial(blindai.server.serve, gpu_attester=attester)
    return cli_main(rest)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
