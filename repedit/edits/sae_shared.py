"""What the targets of one SAE-align build share (`repedit.edits.sae_align`), as a value keyed by the content it
was computed from: the model's weights and the SAE, never an object's `id()` (ids are reused once an object is
garbage-collected, so an id-keyed cache could hand one SAE's codes to another)."""

from __future__ import annotations

from dataclasses import dataclass, field

from repedit.forward.weights import state_fingerprint, weights_fingerprint
from repedit.sites import Site


@dataclass(frozen=True)
class SharedReferences:
    """Reference codes per (template, entity), clean-text pools with their original distributions, and
    position-0 key bases, computed once for several `sae_align` calls. Equality and hash are the key: the model
    (id, dtype, device, sha256 of every weight: `weights_fingerprint`), the SAE (class, config and every tensor:
    `state_fingerprint`) and its site. A changed weight or another SAE gives another key, so nothing computed
    from other weights is reused; an equal key (also a reloaded copy of the same SAE) shares."""

    model: str
    dtype: str
    device: str
    weights: str
    sae: str
    site: Site
    codes: dict = field(default_factory=dict, compare=False, repr=False)    #: (template, entity) -> code [d_sae]
    pools: dict = field(default_factory=dict, compare=False, repr=False)    #: LM-term settings -> (pool, ref, entry)
    sinks: dict = field(default_factory=dict, compare=False, repr=False)    #: sink settings -> position-0 key basis

    @classmethod
    def of(cls, handle, sae, site: Site) -> SharedReferences:
        """The key of `handle`'s current weights with `sae` at `site` (hashes memoised per tensor version)."""
        return cls(str(handle.id), str(handle.dtype), str(handle.input_device),
                   weights_fingerprint(handle, handle.n_layers - 1), state_fingerprint(sae), site)

    @classmethod
    def within(cls, shared: dict | None, handle, sae, site: Site) -> SharedReferences:
        """The entry of `shared` (a dict several calls pass) for this model's weights, SAE and site, added when
        new; with `shared` None a private one, nothing hashed."""
        if shared is None:
            return cls("", "", "", "", "", site)
        key = cls.of(handle, sae, site)
        return shared.setdefault(key, key)
