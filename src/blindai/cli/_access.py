"""``blindai models`` and ``blindai keys create | list | revoke | generate-admin``.

``keys create`` prints the new key alone on the last line of stdout (``KEY=$(blindai keys
create alice ... | tail -n 1)``); nothing else ever prints a key.
"""

from __future__ import annotations

import argparse
import hashlib
from typing import Any

from blindai.cli._commands import connect_from_args, connection_args
from blindai.cli._terminal import shown

__all__ = ["add_access_commands", "models_table"]


def add_access_commands(sub: Any) -> None:
    """Register ``models`` and ``keys``."""
    p = sub.add_parser(
        "models",
        help="list the models this key may see",
        description="Verify the server, then list the models the API key may see: its own "
        "and public ones (every model for the admin key, or on a server without access "
        "control).",
    )
    connection_args(p)
    p.set_defaults(func=_models)

    keys = sub.add_parser(
        "keys",
        help="manage API keys (admin key)",
        description="Create, list and revoke tenant API keys with the admin key (--api-key or "
        "BLINDAI_API_KEY), over attested TLS; or make a new admin key.",
    )
    actions = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    p = actions.add_parser("create", help="create a tenant key; prints it on the last line")
    p.add_argument("name", help="the key's name: 1-64 letters, digits, '.', '_', '-' (not 'admin')")
    connection_args(p)
    p.set_defaults(func=_create)
    p = actions.add_parser("list", help="list the tenant keys")
    connection_args(p)
    p.set_defaults(func=_list)
    p = actions.add_parser("revoke", help="revoke a tenant key (its models stay)")
    p.add_argument("name")
    connection_args(p)
    p.set_defaults(func=_revoke)
    p = actions.add_parser(
        "generate-admin",
        help="make a new admin key and the hash to give the server (no connection)",
        description="Print a new admin key and its SHA-256 for blindai serve "
        "--admin-key-sha256. The key is printed alone on the last line of stdout.",
    )
    p.set_defaults(func=_generate_admin)


def _time(value: Any) -> str:
    return str(value.strftime("%Y-%m-%dT%H:%M:%SZ"))


def _models(args: argparse.Namespace) -> int:
    with connect_from_args(args) as conn:
        models = conn.list_models()
    for line in models_table(models):
        print(line)
    return 0


def models_table(models: Any) -> list[str]:
    """The lines ``blindai models`` prints for ``models`` (ListedModel), the server's words
    escaped (:func:`~blindai.cli._terminal.shown`)."""
    rows = [
        (
            shown(m.model_id),
            shown(m.name or "-"),
            m.hash.hex()[:16],
            shown(m.owner or "-"),
            "yes" if m.public else "no",
            str(m.size),
            _time(m.uploaded),
        )
        for m in models
    ]
    header = ("MODEL_ID", "NAME", "SHA256", "OWNER", "PUBLIC", "BYTES", "UPLOADED")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]


def _create(args: argparse.Namespace) -> int:
    with connect_from_args(args) as conn:
        created = conn.create_key(args.name)
    print(
        f"created key {shown(created.name)} (id {shown(created.key_id)}); it is shown once, below:"
    )
    print(shown(created.key))
    return 0


def _list(args: argparse.Namespace) -> int:
    with connect_from_args(args) as conn:
        keys = conn.list_keys()
    for key in keys:
        print(f"{shown(key.name)}\t{shown(key.key_id)}\t{_time(key.created)}")
    return 0


def _revoke(args: argparse.Namespace) -> int:
    with connect_from_args(args) as conn:
        revoked = conn.revoke_key(args.name)
    print(f"revoked key {shown(revoked.name)} (id {shown(revoked.key_id)})")
    return 0


def _generate_admin(args: argparse.Namespace) -> int:
    from blindai.protocol.apikeys import generate_key

    key = generate_key()
    print(f"--admin-key-sha256 {hashlib.sha256(key.encode()).hexdigest()}")
    print("admin key (keep it secret; the server only needs the hash above):")
    print(key)
    return 0
