"""Writers for the store's kill -9 test: streams of writes, each announced and acknowledged.

Usage: python _crash_child.py DIR. A zygote: it imports once, then for each seed read from
stdin forks a writer, prints ``pid PID``, relays the writer's lines (``begin OP ARGS`` before
each operation, ``ack`` once it returned) and, when the writer is gone, ``end``. Forking from
this single-threaded process makes a writer cost milliseconds, not an interpreter start.
"""

from __future__ import annotations

import hashlib
import os
import random
import sys
from pathlib import Path
from typing import TextIO

from blindai.server.store import SealedStore, StoredKey, StoredModel

KEY = bytes(range(32))


def writer(directory: Path, seed: int, out: TextIO) -> None:
    rng = random.Random(seed)
    store = SealedStore(directory, key_material=KEY)
    models = [m.model_id for m in store.load_models()]
    keys = [k.name for k in store.load_keys()]
    n = 0
    while True:
        n += 1
        op = rng.choice(["put", "put", "delete", "delete", "key", "revoke"])
        if len(models) > 12:  # keep the store small: each check reads it all
            op = "delete"
        if op == "put":
            payload = os.urandom(rng.choice([10, 1000, 100_000, 1_200_000]))
            model_id = f"{seed}-{n}"
            digest = hashlib.sha256(payload).digest()
            out.write(f"begin put {model_id} {digest.hex()}\n")
            out.flush()
            store.put_model(
                StoredModel(
                    model_id=model_id,
                    name=None,
                    owner=None,
                    public=False,
                    hash=digest,
                    uploaded_ns=n,
                    optimize=True,
                    model=payload,
                )
            )
            models.append(model_id)
        elif op == "delete" and models:
            model_id = models.pop(rng.randrange(len(models)))
            out.write(f"begin delete {model_id}\n")
            out.flush()
            store.delete_model(model_id)
        elif op == "key":
            name = f"key-{seed}-{n}"
            out.write(f"begin key {name}\n")
            out.flush()
            store.put_key(StoredKey(key_id=name, name=name, key_hash=bytes(32), created_ns=n))
            keys.append(name)
        elif op == "revoke" and keys:
            name = keys.pop(rng.randrange(len(keys)))
            out.write(f"begin revoke {name}\n")
            out.flush()
            store.delete_key(name)
        else:
            continue
        out.write("ack\n")
        out.flush()


def zygote(directory: Path) -> None:
    for line in sys.stdin:
        seed = int(line)
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read_end)
            try:
                writer(directory, seed, os.fdopen(write_end, "w"))
            finally:
                os._exit(1)
        os.close(write_end)
        print(f"pid {pid}", flush=True)
        with os.fdopen(read_end) as relayed:
            for text in relayed:
                sys.stdout.write(text)
                sys.stdout.flush()
        os.waitpid(pid, 0)
        print("end", flush=True)


if __name__ == "__main__":
    zygote(Path(sys.argv[1]))
