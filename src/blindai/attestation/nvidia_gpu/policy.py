"""What an NVIDIA GPU report must show to be accepted: section ``[nvidia_gpu]`` of a policy.

Example::

    [nvidia_gpu]
    measurements = { 2 = "8048dfd1...a338", 12 = ["413d008c...1773", "758af960...71d5"] }
    rim = ["/etc/blindai/rim/driver-550.90.07.swidtag", "/etc/blindai/rim/vbios.swidtag"]
    min_driver_version = "550.90.07"
    min_vbios_version = "96.00.9f.00.01"
    models = ["GH100"]

Keys: ``measurements`` (SPDM block index, 1-based as NVIDIA's tools print them, to one value or
a list of accepted values, hex), ``rim`` (paths of NVIDIA reference integrity manifests, driver
and VBIOS, read when the policy is loaded, relative paths from the current directory: every
active golden measurement must match, and each RIM's version must be the report's driver or
VBIOS version; needs ``blindai[rim]``; see :mod:`blindai.attestation.nvidia_gpu._rim` for what is
not checked offline), ``min_driver_version`` (dotted decimal), ``min_vbios_version`` (dotted
hex, as NVIDIA prints it), ``models`` (the leaf certificate's model, e.g. ``"GH100"``).
One of ``measurements`` and ``rim`` is required unless ``allow_any_measurement = true`` is
given explicitly. Unknown keys are errors; every violation is reported at once. In a client's
policy the presence of this section means the server must prove its GPU.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from blindai.attestation.claims import VerifiedClaims
from blindai.attestation.nvidia_gpu._claims import NvidiaGpuClaims
from blindai.attestation.nvidia_gpu._rim import ReferenceManifest
from blindai.errors import CollateralError, ConfigurationError, Violation
from blindai.localfiles import read_small

__all__ = ["MAX_RIM_BYTES", "NvidiaGpuPolicy", "check_reference"]

MAX_RIM_BYTES = 16 << 20
"""Largest RIM file a policy's ``rim`` may name (NVIDIA's are tens of KiB): one naming
``/dev/zero`` was read into memory without end, a FIFO waited for a writer for ever."""

_KEYS = frozenset(
    {
        "measurements",
        "rim",
        "allow_any_measurement",
        "min_driver_version",
        "min_vbios_version",
        "models",
    }
)
_NVDEC_MEASUREMENT = 36  # RIM index 35: not compared while NVDEC0 is disabled (NVIDIA's rule)


@dataclass(frozen=True, kw_only=True)
class NvidiaGpuPolicy:
    """Expected values for a verified GPU report; never silently permissive.

    ``reference_manifests`` holds ``(name, RIM bytes)`` pairs; the verifier checks their
    signatures (at the verification time, against its pinned RIM roots) before comparing.
    """

    measurements: Mapping[int, tuple[bytes, ...]] = field(default_factory=dict)
    reference_manifests: tuple[tuple[str, bytes], ...] = ()
    allow_any_measurement: bool = False
    min_driver_version: str | None = None
    min_vbios_version: str | None = None
    models: frozenset[str] | None = None

    def __post_init__(self) -> None:
        pinned = bool(self.measurements) or bool(self.reference_manifests)
        if not pinned and self.allow_any_measurement is not True:
            raise ConfigurationError(
                "[nvidia_gpu] give measurements or rim (or allow_any_measurement = true)"
            )
        if pinned and self.allow_any_measurement:
            raise ConfigurationError(
                "[nvidia_gpu] measurements/rim and allow_any_measurement = true contradict"
            )
        for index, values in self.measurements.items():
            if type(index) is not int or not 1 <= index <= 0xFE:
                raise ConfigurationError("[nvidia_gpu] measurement index must be 1..254")
            if not values or not all(isinstance(v, bytes) and v for v in values):
                raise ConfigurationError(f"[nvidia_gpu] measurements.{index}: give hex values")
        if self.min_driver_version is not None:
            _driver(self.min_driver_version, ConfigurationError)
        if self.min_vbios_version is not None:
            _vbios(self.min_vbios_version, ConfigurationError)
        if self.models is not None and not self.models:
            raise ConfigurationError("[nvidia_gpu] models must not be empty")
        object.__setattr__(self, "measurements", MappingProxyType(dict(self.measurements)))

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> NvidiaGpuPolicy:
        """Build from a ``[nvidia_gpu]`` TOML section; RIM paths are read here."""
        unknown = sorted(set(data) - _KEYS)
        if unknown:
            raise ConfigurationError(f"[nvidia_gpu] unknown key(s): {', '.join(unknown)}")
        allow_any = data.get("allow_any_measurement", False)
        if not isinstance(allow_any, bool):
            raise ConfigurationError("[nvidia_gpu] allow_any_measurement must be true or false")
        return cls(
            measurements=_measurements(data.get("measurements", {})),
            reference_manifests=_read_rims(data.get("rim", [])),
            allow_any_measurement=allow_any,
            min_driver_version=_text(data, "min_driver_version"),
            min_vbios_version=_text(data, "min_vbios_version"),
            models=_models(data.get("models")),
        )

    def check(self, claims: VerifiedClaims) -> list[Violation]:
        """Every way in which ``claims`` fail this policy, RIMs aside (see check_reference)."""
        if not isinstance(claims, NvidiaGpuClaims):
            return [Violation("kind", "nvidia-gpu", claims.kind.value)]
        out: list[Violation] = []
        for index, values in sorted(self.measurements.items()):
            actual = claims.measurements.get(index)
            if actual not in values:
                shown = actual.hex() if actual is not None else "absent"
                out.append(Violation(f"measurements.{index}", _any_of(values), shown))
        out.extend(self._versions(claims))
        if self.models is not None and claims.model not in self.models:
            out.append(Violation("model", " or ".join(sorted(self.models)), str(claims.model)))
        return out

    def _versions(self, claims: NvidiaGpuClaims) -> list[Violation]:
        out: list[Violation] = []
        pairs = (
            ("driver_version", self.min_driver_version, claims.driver_version, _driver),
            ("vbios_version", self.min_vbios_version, claims.vbios_version, _vbios),
        )
        for name, minimum, actual, parse in pairs:
            if minimum is None:
                continue
            try:
                ok = parse(actual, ValueError) >= parse(minimum, ConfigurationError)
            except ValueError:
                ok = False
            if not ok:
                out.append(Violation(name, f">= {minimum}", actual))
        return out


def check_reference(
    claims: NvidiaGpuClaims, manifests: Iterable[tuple[str, ReferenceManifest]]
) -> list[Violation]:
    """Compare ``claims`` with verified RIMs: versions, then every active golden value.

    Raises :class:`CollateralError` when two RIMs give the same measurement index.
    """
    out: list[Violation] = []
    golden: dict[int, tuple[str, tuple[bytes, ...]]] = {}
    versions = {claims.driver_version.lower(), claims.vbios_version.lower()}
    for name, manifest in manifests:
        if manifest.version not in versions:
            wanted = f"driver {claims.driver_version} or VBIOS {claims.vbios_version}"
            out.append(Violation(f"rim {name}: version", wanted, manifest.version))
        for index, entry in manifest.measurements.items():
            if index in golden:
                raise CollateralError(f"two RIMs give measurement index {index - 1}")
            golden[index] = (name, entry.values)
    for index, (name, values) in sorted(golden.items()):
        if index == _NVDEC_MEASUREMENT and claims.nvdec0_status == "disabled":
            continue
        actual = claims.measurements.get(index)
        if actual not in values:
            shown = actual.hex() if actual is not None else "absent"
            out.append(Violation(f"rim {name}: measurements.{index}", _any_of(values), shown))
    return out


def _any_of(values: tuple[bytes, ...]) -> str:
    return " or ".join(v.hex() for v in values)


def _measurements(value: Any) -> dict[int, tuple[bytes, ...]]:
    if not isinstance(value, Mapping):
        raise ConfigurationError("[nvidia_gpu] measurements must be a table index = hex")
    out: dict[int, tuple[bytes, ...]] = {}
    for key, item in value.items():
        text = str(key)
        if not text.isdigit():
            raise ConfigurationError(f"[nvidia_gpu] measurement index {key!r} is not a number")
        items = item if isinstance(item, list) else [item]
        out[int(text)] = tuple(_hex(v, f"measurements.{text}") for v in items)
    return out


def _hex(value: Any, name: str) -> bytes:
    if not isinstance(value, str):
        raise ConfigurationError(f"[nvidia_gpu] {name} must be a hex string")
    try:
        return bytes.fromhex(value)
    except ValueError as exc:
        raise ConfigurationError(f"[nvidia_gpu] {name} is not valid hex") from exc


def _read_rims(value: Any) -> tuple[tuple[str, bytes], ...]:
    paths = [value] if isinstance(value, str) else value
    if not isinstance(paths, list) or not all(isinstance(p, str) and p for p in paths):
        raise ConfigurationError("[nvidia_gpu] rim must be a path or a list of paths")
    out = []
    for path in paths:
        try:  # a regular file only, of at most MAX_RIM_BYTES
            out.append((Path(path).name, read_small(path, "RIM", limit=MAX_RIM_BYTES)))
        except ConfigurationError as exc:
            raise ConfigurationError(f"[nvidia_gpu] {exc}") from None
    return tuple(out)


def _text(data: Mapping[str, Any], name: str) -> str | None:
    value = data.get(name)
    if value is not None and not isinstance(value, str):
        raise ConfigurationError(f"[nvidia_gpu] {name} must be a string")
    return value


def _models(value: Any) -> frozenset[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ConfigurationError("[nvidia_gpu] models must be a list of strings")
    return frozenset(value)


def _driver(text: str, error: type[Exception]) -> tuple[int, ...]:
    return _dotted(text, 10, "driver version", error)


def _vbios(text: str, error: type[Exception]) -> tuple[int, ...]:
    return _dotted(text, 16, "VBIOS version", error)


def _dotted(text: str, base: int, what: str, error: type[Exception]) -> tuple[int, ...]:
    try:
        parts = tuple(int(p, base) for p in text.split("."))
    except ValueError:
        parts = ()
    if not parts or any(p < 0 for p in parts):
        raise error(f"[nvidia_gpu] {what} {text!r} is not dotted numbers")
    return parts
