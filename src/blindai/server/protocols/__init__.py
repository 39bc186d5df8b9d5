"""The protocols the server speaks, one folder each; each calls only the data plane.

* :mod:`.v06`: BlindAI 0.6 (CBOR): the unattested routes (certificate, evidence, collateral,
  ``/info``, ``/endorsements``) and ``/upload``, ``/run``, ``/delete``.
* :mod:`.v2`: the Open Inference Protocol v2 (KServe v2) REST routes, JSON and binary.

A route decodes its request into names and numpy arrays, makes one call on
:class:`~blindai.server.dataplane.DataPlane`, and encodes the reply; errors become replies
through :func:`._http.error_replies`, their status taken from the error class.
"""

from __future__ import annotations

__all__: list[str] = []
