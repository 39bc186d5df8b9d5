"""``blindai upload --replicas`` and ``blindai sync``: models on every replica of a deployment."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from blindai.cli._terminal import shown
from blindai.errors import BlindAIError, ConfigurationError

__all__ = ["add_sync_command", "replica_list", "upload_to_each"]


def replica_list(text: str) -> list[str]:
    """The addresses behind ``ADDR[,ADDR...]`` (names resolved, e.g. a headless Service)."""
    from blindai.client.replicas import resolve_replicas

    return resolve_replicas([part for part in text.split(",")])


def _connector(args: argparse.Namespace) -> Any:
    from blindai.cli._commands import connect_from_args

    def connect(address: str) -> Any:
        return connect_from_args(args, host=address)

    return connect


def _line(address: str, text: str) -> None:
    print(f"{shown(address):<16} {shown(text)}")


def upload_to_each(args: argparse.Namespace, pipeline: Any) -> int:
    """Verify each replica of ``--replicas`` and upload the model to it; 1 if any failed."""
    from blindai.client.replicas import upload_to_replicas

    addresses = replica_list(args.replicas)
    results = upload_to_replicas(
        addresses,
        args.model,
        connect=_connector(args),
        model_name=args.name,
        optimize=not args.no_optimize,
        pipeline=pipeline,
        public=args.public,
        max_batch_size=args.max_batch_size,
        max_queue_delay_us=args.max_queue_delay_us,
        max_concurrent_runs=args.max_concurrent_runs,
        intra_op_threads=args.intra_op_threads,
    )
    for r in results:
        if r.error is None:
            assert r.hash is not None
            _line(r.address, f"model_id {r.model_id}  sha256 {r.hash.hex()}")
        else:
            _line(r.address, f"error: {r.error.diagnostics()}")
    failed = sum(not r.ok for r in results)
    if failed:
        print(f"{failed} of {len(results)} replicas did not receive the model", file=sys.stderr)
    return 1 if failed else 0


def add_sync_command(sub: Any, connection_args: Any) -> None:
    """``blindai sync --from ADDR --to ADDR[,ADDR...]``."""
    p = sub.add_parser(
        "sync",
        help="copy the models of one replica to others",
        description="Verify the replica --from and each replica --to (the same policy and port "
        "flags for all), then copy to each target every model of the source it lacks: "
        "exported from the source's management port (the source must run with "
        "--allow-model-export) and uploaded to the target, through this client.",
    )
    p.add_argument("--from", dest="source", required=True, metavar="ADDR", help="a replica")
    p.add_argument(
        "--to",
        dest="targets",
        required=True,
        metavar="ADDR[,ADDR...]",
        help="replicas to bring up to date (addresses, or a name resolving to several)",
    )
    connection_args(p, host=False)
    p.set_defaults(func=_sync)


def _sync(args: argparse.Namespace) -> int:
    from blindai.client.replicas import sync_models

    sources = replica_list(args.source)
    if len(sources) != 1:
        raise ConfigurationError(f"--from names {len(sources)} replicas: give one")
    targets = [t for t in replica_list(args.targets) if t != sources[0]]
    connect = _connector(args)
    failed = 0
    with connect(sources[0]) as source:
        for address in targets:
            try:
                with connect(address) as target:
                    report = sync_models(source, target)
            except BlindAIError as exc:
                _line(address, f"error: {exc.diagnostics()}")
                failed += 1
                continue
            _line(address, f"copied {len(report.copied)}, present {len(report.present)}")
            for model_id, error in report.errors:
                _line(address, f"error: model {model_id}: {error.diagnostics()}")
            failed += bool(report.errors)
    return 1 if failed else 0
