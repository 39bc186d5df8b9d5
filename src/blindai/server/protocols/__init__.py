"""The protocols the server speaks, one folder each; each calls only the data plane.

* :mod:`.v06`: BlindAI 0.6 (CBOR): the unattested routes (certificate, evidence, collateral,
  ``/info``, ``/endorsements``) and ``/upload``, ``/run``, ``/delete``.
* :mod:`.v2`: the Open Inference Protocol v2 (KServe v2) REST routes, JSON and binary, and
  the protocol's semantics shared with gRPC (``v2/service.py``).
* :mod:`.grpc`: the Open Inference Protocol v2 over gRPC (``GRPCInferenceService``).

A route decodes its request into names and numpy arrays, calls only
:class:`~blindai.server.dataplane.DataPlane` (never the registry), and encodes the reply;
errors become replies through :func:`._http.error_replies`, their status taken from the error
class.
"""

from __future__ import annotations

__all__: list[str] = []
