"""One of two writers for the store's two-writer race test, driven line by line on stdin.

Usage: python _race_child.py ROOT WHO. ``open N``: open the store ROOT/N and remove its
``.lock``, as a host would to start a second server on it (answers ``opened``, or ``busy``
while the other writer still holds the lock); ``write N``: store a key record named WHO-N
(``ack`` once stored, ``refused`` on OSError); ``close``: close the store (``closed``).
"""

from __future__ import annotations

import sys
from pathlib import Path

from blindai.errors import ConfigurationError
from blindai.server.store import SealedStore, StoredKey

KEY = bytes(range(32))


def main(root: Path, who: str) -> None:
    store: SealedStore | None = None
    for line in sys.stdin:
        command, _, arg = line.strip().partition(" ")
        if command == "open":
            try:
                store = SealedStore(root / arg, key_material=KEY)
            except ConfigurationError:
                print("busy", flush=True)
                continue
            (root / arg / ".lock").unlink()
            print("opened", flush=True)
        elif command == "write":
            assert store is not None
            record = StoredKey(
                key_id="k_" + "0" * 16, name=f"{who}-{arg}", key_hash=bytes(32), created_ns=1
            )
            try:
                store.put_key(record)
            except OSError:
                print("refused", flush=True)
            else:
                print("ack", flush=True)
        elif command == "close":
            assert store is not None
            store.close()
            print("closed", flush=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])
