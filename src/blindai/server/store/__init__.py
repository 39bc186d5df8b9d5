"""The sealed persistent store: models and API-key records, encrypted inside the TEE.

:class:`SealedStore` keeps one AES-256-GCM file per entry, written atomically; its key comes
from a :class:`StoreKeySource` chosen per TEE kind by :func:`store_key_source`.

Example (simulation: the key is a file beside the store, which protects nothing)::

    >>> import tempfile, hashlib
    >>> from pathlib import Path
    >>> from blindai.attestation.claims import EvidenceKind
    >>> from blindai.server.store import (KeySourcePaths, SealedStore, StoredModel,
    ...     store_key_source)
    >>> directory = Path(tempfile.mkdtemp()) / "store"
    >>> source = store_key_source(EvidenceKind.SIMULATION,
    ...     paths=KeySourcePaths(store_dir=directory))
    >>> store = SealedStore(directory, key_material=source.material())
    >>> model = b"onnx bytes"
    >>> store.put_model(StoredModel(model_id="m1", name=None, owner=None, public=False,
    ...     hash=hashlib.sha256(model).digest(), uploaded_ns=1, optimize=True, model=model))
    >>> [m.model_id for m in store.load_models()]
    ['m1']
    >>> store.close()
"""

from __future__ import annotations

from blindai.server.store.keysources import (
    PLATFORM_SOURCES,
    GramineSealingKey,
    KeyFile,
    KeySourcePaths,
    SimulationKeyFile,
    SnpDerivedKey,
    StoreKeySource,
    store_key_source,
)
from blindai.server.store.sealed import (
    REVOKED_KEYS_KEPT,
    RevokedKey,
    SealedStore,
    StoredKey,
    StoredModel,
)

__all__ = [
    "PLATFORM_SOURCES",
    "REVOKED_KEYS_KEPT",
    "GramineSealingKey",
    "KeyFile",
    "KeySourcePaths",
    "RevokedKey",
    "SealedStore",
    "SimulationKeyFile",
    "SnpDerivedKey",
    "StoreKeySource",
    "StoredKey",
    "StoredModel",
    "store_key_source",
]
