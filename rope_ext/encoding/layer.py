"""The rotary layer's declared interface (``RotaryLayer``), which every encoding's layer implements.

Attention, ``fold_for_inference`` and ``basis_motion`` talk to a layer only through it: ``rotate`` /
``rotate_qk`` (the rotation of queries and keys, from rotation tables built once per grid and
cached while the parameters are frozen), ``rotation`` (the dense R(p), from ``generators``, for the
checks), ``fold_into_projection`` / ``project_qkv`` (a basis applied to the q/k rows of the qkv
weight instead of to every token), ``foldable`` / ``fold`` (that basis baked in for inference) and
``basis_motion`` (how far training moved a learned basis). A subclass implements
``generators``, ``_build_tables`` and ``_rotate``, and overrides the rest where it has a basis.
"""

from __future__ import annotations

from collections.abc import Hashable

import torch
from torch import Tensor, nn

from rope_ext.encoding.functional import check_positions
from rope_ext.encoding.spec import RopeSpec


def stacked(tensors: list[Tensor], dim: int = 0) -> Tensor:
    """``torch.stack(tensors, dim)``, a view for one tensor: a layer that builds its tables alone
    (``tables_layers([self], ...)``) pays no copy for the stacking."""
    return tensors[0].unsqueeze(dim) if len(tensors) == 1 else torch.stack(tensors, dim)


class TableCache:
    """Rotation tables keyed by grid and parameter versions: reused while parameters are frozen."""

    def __init__(self) -> None:
        self.key: Hashable | None = None
        self.value: tuple[Tensor, ...] | None = None

    def __reduce__(self) -> tuple:
        # A copy or pickle starts empty: its keys name the original's parameter storage.
        return (TableCache, ())

    def get(self, key: Hashable | None) -> tuple[Tensor, ...] | None:
        return self.value if key is not None and key == self.key else None

    def put(self, key: Hashable | None, value: tuple[Tensor, ...]) -> None:
        if key is not None:
            self.key, self.value = key, value


class RotaryLayer(nn.Module):
    """A rotary encoding's layer, built as ``layer(spec, head_dim=, num_heads=)`` from a resolved
    spec. Shared plumbing: position checks, table caching, the dense rotation from generators; the
    basis hooks default to "no basis" (nothing to move, fold or measure)."""

    def __init__(self, spec: RopeSpec, *, head_dim: int, num_heads: int) -> None:
        super().__init__()
        self.spec = spec  # resolved (validate_pe): every option a plain value
        self.head_dim, self.num_heads, self.dims, self.block = head_dim, num_heads, spec.dims, spec.block
        self.variant, self.impl, self.init, self.coords, self.theta = (
            spec.name,
            spec.impl,
            spec.init,
            spec.coords,
            spec.theta,
        )
        self.num_blocks = head_dim // spec.block
        self._cache = TableCache()

    def generators(self) -> Tensor:
        """Dense skew generators A_a per axis and head: [A, H, D, D]."""
        raise NotImplementedError(f"{type(self).__name__} must implement generators()")

    def rotation(self, pos: Tensor) -> Tensor:
        """Dense R(p) = matrix_exp(Σ_a p_a A_a) per head and position: [T, A] -> [H, T, D, D]."""
        check_positions(pos, self.dims)
        gens = self.generators()
        return torch.linalg.matrix_exp(torch.einsum("ta,ahij->htij", pos.to(gens.dtype), gens).contiguous())

    def tables(
        self, pos: Tensor, num_prefix: int = 0, grid_key: Hashable | None = None
    ) -> tuple[Tensor, ...]:
        """Per-forward rotation tables, shared by the whole batch; cached while parameters are frozen.
        Under torch.compile they are part of the graph: a Python cache keyed by storage and version
        would only make dynamo guard on it and recompile."""
        if torch.compiler.is_compiling():
            return self._build_tables(pos, num_prefix)
        key = self._cache_key(grid_key)
        cached = self._cache.get(key)
        if cached is None:
            cached = self._build_tables(pos, num_prefix)
            self._cache.put(key, cached)
        return cached

    def _build_tables(self, pos: Tensor, num_prefix: int) -> tuple[Tensor, ...]:
        """The rotation tables for positions [T, A] (``num_prefix`` unrotated rows first)."""
        raise NotImplementedError(f"{type(self).__name__} must implement _build_tables()")

    def _table_params(self) -> list[Tensor]:
        """The parameters the tables are computed from."""
        return list(self.parameters())

    def _rotate(self, x: Tensor, tables: tuple[Tensor, ...], in_basis: bool) -> Tensor:
        """x [..., H, T, D] rotated by ``tables`` (``in_basis``: x came from ``project_qkv``)."""
        raise NotImplementedError(f"{type(self).__name__} must implement _rotate()")

    # -- a basis that moves into the projection (none here) -----------------------------------------

    @property
    def fold_into_projection(self) -> bool:
        """Attention applies ``project_qkv`` to its qkv weight and rotates ``in_basis``."""
        return False

    def project_qkv(self, weight: Tensor, bias: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """The fused qkv weight [3·H·D, C] and bias [3·H·D] with the q/k rows moved into the
        rotation basis; unchanged without a basis."""
        return weight, bias

    def project_qkv_layers(
        self, layers: list[RotaryLayer], weights: list[Tensor], biases: list[Tensor] | None
    ) -> list[tuple[Tensor, Tensor | None]]:
        """``project_qkv`` of several layers shaped as this one (the model calls it once per step for
        all of them); a layer with a basis does them together. Here: one by one."""
        pairs = zip(layers, weights, biases or [None] * len(layers), strict=True)
        return [layer.project_qkv(w, b) for layer, w, b in pairs]

    @property
    def foldable(self) -> bool:
        """A basis that ``fold_for_inference`` can move into the projection for good."""
        return False

    def fold(self) -> None:
        """Drop the basis after ``project_qkv`` moved it into the projection's weights."""
        if self.foldable:
            raise NotImplementedError(f"{type(self).__name__} is foldable but does not implement fold()")

    def basis_motion(self) -> dict[str, float] | None:
        """How far training moved a learned basis (degrees: ``angle_max_deg``, ``angle_mean_deg``,
        ``tilt_max_deg``, ``tilt_mean_deg``), or None without one."""
        return None

    def rotate(
        self,
        x: Tensor,
        pos: Tensor,
        num_prefix: int = 0,
        in_basis: bool = False,
        grid_key: Hashable | None = None,
    ) -> Tensor:
        """Rotate x [..., H, T, D]. Positions [T - num_prefix, A]; the first ``num_prefix`` tokens
        stay put.

        ``in_basis``: x came from ``project_qkv`` weights, so only the plane rotation is left.
        """
        return self._rotate(x, self.tables(pos, num_prefix, grid_key), in_basis)

    def rotate_qk(
        self,
        q: Tensor,
        k: Tensor,
        pos: Tensor,
        num_prefix: int = 0,
        in_basis: bool = False,
        grid_key: Hashable | None = None,
        tables: tuple[Tensor, ...] | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Attention's queries and keys [B, H, T, D]: one set of tables, two rotations. (Rotating
        them stacked as one tensor is slower: the backward then zero-fills all of qkv's grad.)
        ``tables``: this layer's tables when the model built them for all layers (``tables_layers``)."""
        if tables is None:
            tables = self.tables(pos, num_prefix, grid_key)
        return self._rotate(q, tables, in_basis), self._rotate(k, tables, in_basis)

    def shares_tables(self) -> Hashable | None:
        """What layers must have in common for ``tables_layers`` to build their tables together, or
        None where this layer builds its own (the default)."""
        return None

    def tables_layers(
        self, layers: list[RotaryLayer], pos: Tensor, num_prefix: int
    ) -> list[tuple[Tensor, ...]]:
        """The tables of several layers with the same ``shares_tables`` at once."""
        return [layer._build_tables(pos, num_prefix) for layer in layers]

    def forward(self, x: Tensor, pos: Tensor) -> Tensor:
        """R(p)·x for x [B, H, T, D] and positions [T, A] (after ``fold``: in the folded basis)."""
        if not isinstance(x, Tensor):
            raise TypeError(f"x must be a tensor [..., H, T, D={self.head_dim}]; got {type(x).__name__}")
        if x.ndim < 3 or x.shape[-3] != self.num_heads or x.shape[-1] != self.head_dim:
            raise ValueError(
                f"x must have shape [..., H={self.num_heads}, T, D={self.head_dim}]; got {tuple(x.shape)}"
            )
        check_positions(pos, self.dims, x.shape[-2])
        return self.rotate(x, pos)

    def _cache_key(self, grid_key: Hashable | None) -> Hashable | None:
        """Tables depend on positions and parameters only; reuse them while no gradient can flow."""
        if grid_key is None:
            return None
        params = self._table_params()
        if torch.is_grad_enabled() and any(p.requires_grad for p in params):
            return None
        versions = tuple((p.data_ptr(), p._version, p.dtype, p.device) for p in params)
        return (grid_key, torch.is_inference_mode_enabled(), versions)

    def options(self) -> dict[str, object]:
        """The encoding's options as this layer applies them (package defaults resolved), for the
        run's records; ``augment`` (it belongs to the model's positions) is left out."""
        return {k: v for k, v in self.spec.options().items() if k != "augment"}

    def extra_repr(self) -> str:
        return (
            f"variant={self.variant}, impl={self.impl}, block={self.block}, dims={self.dims}, "
            f"heads={self.num_heads}, head_dim={self.head_dim}"
        )
