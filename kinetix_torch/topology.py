"""Joint connectivity, written once for any array module (``numpy``, ``jax.numpy``, ``torch``).

Two shapes never exchange contact impulses when a chain of active joints connects them; the
``collision_matrix`` state field holds the complement of that relation (False on the diagonal).
"""

from __future__ import annotations


def collision_matrix(a_index, b_index, active, num_shapes: int, xp):
    """``(..., N, N)`` bool: True where shapes i != j are *not* joint-connected.

    ``a_index``, ``b_index``, ``active``: ``(..., J)`` joint fields in the global shape index.
    Connectivity is the transitive closure of the joint graph, found by repeated squaring of the
    reachability matrix (``ceil(log2(N))`` boolean matrix products).
    """
    shape_ids = xp.arange(num_shapes)
    one_hot_a = (a_index[..., :, None] == shape_ids) & active[..., :, None]  # (..., J, N)
    one_hot_b = (b_index[..., :, None] == shape_ids) & active[..., :, None]
    one_hot_a = xp.asarray(one_hot_a, dtype=xp.float32)
    one_hot_b = xp.asarray(one_hot_b, dtype=xp.float32)
    # Edges a->b and b->a, plus self loops.
    edges = _transpose(one_hot_a, xp) @ one_hot_b
    reach = (edges + _transpose(edges, xp) + xp.eye(num_shapes, dtype=xp.float32)) > 0
    steps = max(1, (num_shapes - 1).bit_length())
    for _ in range(steps):
        reach_f = xp.asarray(reach, dtype=xp.float32)
        reach = (reach_f @ reach_f) > 0
    return ~reach


def _transpose(x, xp):
    return xp.swapaxes(x, -1, -2)
