"""The models a caller may find: the registry's lookups, with access control.

Every lookup names its caller (a :class:`~blindai.server.access.Principal`) and finds only the
models that caller may see that way (the rules: :mod:`blindai.server.access`): a model the
caller may not run is reported exactly like a missing one. :func:`runnable` and
:func:`listable` are the filters the protocols pass to :meth:`Catalog.entries`.
"""

from __future__ import annotations

from blindai.errors import InvalidInput, ModelNotFound, ModelNotReady, PermissionDenied
from blindai.protocol.replication import ListedModel
from blindai.server.access import Principal
from blindai.server.registry import ModelEntry, ModelRef, ModelRegistry, Visible
from blindai.server.replication import ModelExport, RequiredModels, UploadOptions

__all__ = ["Catalog", "every", "listable", "runnable"]


def runnable(caller: Principal) -> Visible:
    """The models ``caller`` may run (and see the metadata and statistics of)."""
    return lambda e: caller.may_run(owner=e.owner, public=e.public)


def listable(caller: Principal) -> Visible:
    """The models ``caller`` sees in lists (the model list, the repository index)."""
    return lambda e: caller.may_list(owner=e.owner, public=e.public)


def _managed(caller: Principal) -> Visible:
    """The models ``caller`` may find to delete, load, unload or export (else: a 403)."""
    return lambda e: (
        caller.may_delete(owner=e.owner) or caller.may_run(owner=e.owner, public=e.public)
    )


def every(entry: ModelEntry) -> bool:
    """Every model (the server's own view)."""
    return True


class Catalog:
    """Finds the models a caller may run, list or change (see the module)."""

    def __init__(
        self,
        registry: ModelRegistry,
        *,
        exports: UploadOptions | None,
        required: RequiredModels | None,
    ) -> None:
        self.registry = registry
        self.exports = exports
        """How each model was uploaded, for export (None: export is off)."""
        self.required = required
        """What this replica must hold to be ready (None: nothing)."""

    def model(self, ref: ModelRef, *, caller: Principal) -> ModelEntry:
        """The model a request means among those ``caller`` may run (ModelNotFound when there
        is none, ModelNotReady when it is unloaded)."""
        entry = self.registry.get(ref, runnable(caller), owner=caller.key_id)
        if not self.registry.is_ready(entry):
            raise ModelNotReady(
                f"model {entry.label!r} is unloaded; load it first "
                "(POST /v2/repository/models/NAME/load)"
            )
        return entry

    def versions(self, key: str, *, caller: Principal) -> list[ModelEntry]:
        """The model with id ``key``, else every upload named ``key``, that ``caller`` may run,
        oldest first."""
        return self.registry.versions(key, runnable(caller), owner=caller.key_id)

    def entries(self, visible: Visible) -> list[ModelEntry]:
        """The models ``visible`` (:func:`runnable` or :func:`listable` by a caller), oldest
        first."""
        return self.registry.entries(visible)

    def is_ready(self, entry: ModelEntry) -> bool:
        """Whether the model is loaded (an unloaded one answers ModelNotReady)."""
        return self.registry.is_ready(entry)

    def managed(self, ref: ModelRef, *, caller: Principal) -> ModelEntry:
        """The model ``caller`` means to delete: its own (any for the admin); another key's
        public model is PermissionDenied, a private one ModelNotFound."""
        entry = self.registry.get(ref, _managed(caller), owner=caller.key_id)
        if not caller.may_delete(owner=entry.owner):
            raise PermissionDenied("only the key that uploaded this model may change it")
        return entry

    def managed_versions(self, name: str, *, caller: Principal) -> list[ModelEntry]:
        """The versions of ``name`` (or the model with that id) ``caller`` may load, unload or
        delete; PermissionDenied when it sees only others' public ones, else ModelNotFound."""
        found = self.registry.versions(name, _managed(caller), owner=caller.key_id)
        if not found:
            raise ModelNotFound(f"no model with id or name {name!r}")
        mine = [e for e in found if caller.may_delete(owner=e.owner)]
        if not mine:
            raise PermissionDenied("only the key that uploaded this model may change it")
        return mine

    def missing_models(self) -> int:
        """How many required models this replica does not hold loaded yet (0: ready)."""
        if self.required is None:
            return 0
        held = [e.hash for e in self.registry.entries(every) if self.registry.is_ready(e)]
        return self.required.missing(held)

    def listed_models(self, *, caller: Principal) -> list[ListedModel]:
        """The models ``caller`` may list, oldest first, with the size of their bytes, their
        owner (a key id), visibility and upload time."""
        return [
            ListedModel(
                e.model_id,
                e.name,
                e.hash,
                e.size,
                owner=e.owner,
                public=e.public,
                uploaded_ns=e.uploaded_ns,
            )
            for e in self.registry.entries(listable(caller))
        ]

    def export(self, ref: ModelRef, *, caller: Principal) -> ModelExport:
        """A model as uploaded, to be sent piece by piece (the caller closes it);
        PermissionDenied unless export is allowed and the model is the caller's (a model's
        bytes go to its owner only, not to the admin key)."""
        if self.exports is None:
            raise PermissionDenied(
                "model export is off on this server (serve --allow-model-export)"
            )
        if not ref.key:
            raise InvalidInput("give the id or name of the model to export")
        entry = self.registry.get(ref, _managed(caller), owner=caller.key_id)
        if not caller.may_export(owner=entry.owner):
            raise PermissionDenied("only the key that uploaded this model may export it")
        source = self.registry.source(entry)
        options = self.exports.get(entry.model_id)
        if source is None or options is None:  # removed meanwhile
            raise ModelNotFound(f"no model with id or name {ref.key!r}")
        try:
            return ModelExport.of(entry, source, *options)
        except OSError:  # the server's file of its bytes: removed meanwhile
            raise ModelNotFound(f"no model with id or name {ref.key!r}") from None
