"""Static pair tables and joint connectivity (the latter written once for any array module).

Two shapes never exchange contact impulses when a chain of active joints connects them; the
``collision_matrix`` state field holds the complement of that relation (False on the diagonal).
"""

from __future__ import annotations

import functools

import numpy as np

from .params import StaticEnvParams

MANIFOLD_KINDS = ("rr", "cr", "cc")
"""Contact pair kinds: polygon-polygon, circle-polygon, circle-circle."""


def collision_matrix(a_index, b_index, active, num_shapes: int, xp):
    """``(..., N, N)`` bool: True where shapes i != j are *not* joint-connected.

    ``a_index``, ``b_index``, ``active``: ``(..., J)`` joint fields in the global shape index.
    Connectivity is the transitive closure of the joint graph, found by repeated squaring of the
    reachability matrix (``ceil(log2(N))`` boolean matrix products).
    """
    shape_ids = xp.arange(num_shapes)
    if hasattr(shape_ids, "to"):  # torch: on the joints' device
        shape_ids = shape_ids.to(a_index.device)
    identity = xp.asarray(shape_ids[:, None] == shape_ids[None, :], dtype=xp.float32)
    one_hot_a = (a_index[..., :, None] == shape_ids) & active[..., :, None]  # (..., J, N)
    one_hot_b = (b_index[..., :, None] == shape_ids) & active[..., :, None]
    one_hot_a = xp.asarray(one_hot_a, dtype=xp.float32)
    one_hot_b = xp.asarray(one_hot_b, dtype=xp.float32)
    # Edges a->b and b->a, plus self loops.
    edges = _transpose(one_hot_a, xp) @ one_hot_b
    reach = (edges + _transpose(edges, xp) + identity) > 0
    steps = max(1, (num_shapes - 1).bit_length())
    for _ in range(steps):
        reach_f = xp.asarray(reach, dtype=xp.float32)
        reach = (reach_f @ reach_f) > 0
    return ~reach


def _transpose(x, xp):
    return xp.swapaxes(x, -1, -2)


@functools.lru_cache(maxsize=None)
def pair_tables(static: StaticEnvParams) -> dict[str, np.ndarray]:
    """Global body indices ``(K, 2)`` of every contact pair, in upstream's order.

    ``rr``: polygons i < j, lexicographic, without pairs of two static fixated polygons;
    ``cr``: (circle, polygon), circle-major; ``cc``: circles i < j, lexicographic.
    """
    P, C, F = static.num_polygons, static.num_circles, static.num_static_fixated_polys
    rr = [(i, j) for i in range(P) for j in range(i + 1, P) if not (i < F and j < F)]
    cr = [(P + c, p) for c in range(C) for p in range(P)]
    cc = [(P + i, P + j) for i in range(C) for j in range(i + 1, C)]
    return {k: np.asarray(v, np.int32).reshape(-1, 2) for k, v in zip(MANIFOLD_KINDS, (rr, cr, cc))}


@functools.lru_cache(maxsize=None)
def pair_index_tensors(static: StaticEnvParams, device) -> dict:
    """:func:`pair_tables` as torch int64 tensors on ``device``, built once per sizes and device, so
    that a step copies no index table from the host (CUDA-graph capturable)."""
    import torch  # topology itself stays free of torch: the JAX reference imports it

    return {kind: torch.as_tensor(pairs, dtype=torch.long, device=device) for kind, pairs in pair_tables(static).items()}
