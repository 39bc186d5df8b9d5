"""Who is calling, and what each caller may do with a model: the rules, as data and pure code.

======================  ==============  ===============  ==============  =====================
caller                  run             delete           list            export (the bytes)
======================  ==============  ===============  ==============  =====================
anonymous (no admin     every model     every model      every model     every model
key set: open server)
tenant key              own + public    own              own + public    own
admin key               own + public    every model      every model     own + ownerless
======================  ==============  ===============  ==============  =====================

A model's ``owner`` is the key id of its uploader (``admin`` for the admin key). Models
uploaded while the server was open have no owner: every valid key may run them, only the
admin may delete them. A model a caller may not run is reported exactly like a missing one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["ADMIN", "ADMIN_ID", "ANONYMOUS", "Principal", "PrincipalKind"]

PrincipalKind = Literal["anonymous", "admin", "tenant"]
#: the owner recorded for models the admin key uploads (tenant key ids start with ``k_``)
ADMIN_ID = "admin"


@dataclass(frozen=True)
class Principal:
    """The authenticated caller of one request."""

    kind: PrincipalKind
    key_id: str | None
    """The key's stable id (owner of what it uploads); None when anonymous."""
    name: str | None
    """The key's name, for listings and the audit log; None when anonymous."""

    @property
    def is_admin(self) -> bool:
        """Whether this is the admin key."""
        return self.kind == "admin"

    def may_run(self, *, owner: str | None, public: bool) -> bool:
        """Run, and see the metadata of, a model."""
        if self.kind == "anonymous":
            return True
        return public or owner is None or owner == self.key_id

    def may_delete(self, *, owner: str | None) -> bool:
        """Delete a model."""
        if self.kind in ("anonymous", "admin"):
            return True
        return owner is not None and owner == self.key_id

    def may_export(self, *, owner: str | None) -> bool:
        """Receive a model's bytes (replication): its owner only; the admin manages models
        but does not read other keys' weights."""
        if self.kind == "anonymous":
            return True
        if owner is None:
            return self.is_admin
        return owner == self.key_id

    def may_list(self, *, owner: str | None, public: bool) -> bool:
        """See a model in the list of models."""
        return self.is_admin or self.may_run(owner=owner, public=public)


#: the caller when access control is off
ANONYMOUS = Principal("anonymous", None, None)
#: the holder of the admin key
ADMIN = Principal("admin", ADMIN_ID, ADMIN_ID)
