"""ai.onnx.ml ops: LabelEncoder, Binarizer, ArrayFeatureExtractor and TreeEnsemble (opset 5).

Lookups are vectorized with sorted keys and ``searchsorted``; trees are walked for every (sample,
tree) pair at once, one level per iteration.
"""
from __future__ import annotations

import numpy as np

from inference.errors import KernelError
from inference.ops.registry import register

_ML = "ai.onnx.ml"


# ---------------------------------------------------------------- LabelEncoder

def _one_of(op: str, what: str, **candidates) -> np.ndarray:
    """The single attribute among ``candidates`` that is set, as a 1D array of its element type."""
    given = {k: v for k, v in candidates.items() if v is not None}
    if len(given) != 1:
        raise KernelError(f"{op}: exactly one of {', '.join(f'{what}_{k}' for k in candidates)} must be set, "
                          f"got {sorted(given) or 'none'}")
    kind, value = next(iter(given.items()))
    if kind == "tensor":
        return np.asarray(value).reshape(-1)
    return np.array(value, dtype={"strings": object, "int64s": np.int64, "floats": np.float32}[kind])


def _label_default(values: np.ndarray, default_tensor, default_int64, default_float, default_string):
    """The value for unknown keys: the default_* matching the values' type, else the schema's."""
    if default_tensor is not None:
        return np.asarray(default_tensor).reshape(-1)[0]
    if values.dtype == object:
        return default_string if default_string is not None else "_Unused"
    if values.dtype.kind in "iu":
        return default_int64 if default_int64 is not None else -1
    return default_float if default_float is not None else -0.0


@register("LabelEncoder", since=2, domain=_ML)
def label_encoder(X, *, keys_strings=None, keys_int64s=None, keys_floats=None, keys_tensor=None,
                  values_strings=None, values_int64s=None, values_floats=None, values_tensor=None,
                  default_string=None, default_int64=None, default_float=None, default_tensor=None):
    keys = _one_of("LabelEncoder", "keys", strings=keys_strings, int64s=keys_int64s, floats=keys_floats,
                   tensor=keys_tensor)
    values = _one_of("LabelEncoder", "values", strings=values_strings, int64s=values_int64s,
                     floats=values_floats, tensor=values_tensor)
    if len(keys) != len(values):
        raise KernelError(f"LabelEncoder: {len(keys)} keys but {len(values)} values")
    default = _label_default(values, default_tensor, default_int64, default_float, default_string)
    is_str = keys.dtype == object
    k = keys.astype(str) if is_str else keys
    x = X.astype(str) if is_str else X
    uniq, first_in_reversed = np.unique(k[::-1], return_index=True)  # the last duplicate key wins
    mapped = values[::-1][first_in_reversed]
    if len(uniq) == 0:
        return np.full(X.shape, default, dtype=values.dtype)
    pos = np.clip(np.searchsorted(uniq, x), 0, len(uniq) - 1)
    found = uniq[pos] == x
    if not is_str and keys.dtype.kind == "f":
        found |= np.isnan(uniq[pos]) & np.isnan(x)
    out = np.where(found, mapped[pos], np.asarray(default, dtype=values.dtype))
    return out.astype(values.dtype)


# ---------------------------------------------------------------- Binarizer, ArrayFeatureExtractor

@register("Binarizer", since=1, domain=_ML)
def binarizer(X, *, threshold=0.0):
    return (X > threshold).astype(X.dtype)


@register("ArrayFeatureExtractor", since=1, domain=_ML)
def array_feature_extractor(X, Y):
    idx = np.asarray(Y).reshape(-1)
    if idx.size and (idx.min() < -X.shape[-1] or idx.max() >= X.shape[-1]):
        raise KernelError(f"ArrayFeatureExtractor: index out of range for last dimension {X.shape[-1]}")
    return np.take(X, idx, axis=-1)


# ---------------------------------------------------------------- TreeEnsemble

_MEMBER = 6  # nodes_modes: LEQ, LT, GTE, GT, EQ, NEQ, MEMBER = 0..6


def _member_table(modes: np.ndarray, membership_values) -> np.ndarray:
    """(nodes, max_members) array of each BRANCH_MEMBER node's set, NaN padded (other rows all NaN)."""
    sets: list[np.ndarray] = []
    if membership_values is not None:
        vals = np.asarray(membership_values, np.float64).reshape(-1)
        pieces = np.split(vals, np.flatnonzero(np.isnan(vals)) + 1)  # each ends with its NaN delimiter
        if pieces and pieces[-1].size == 0:
            pieces.pop()
        sets = [p[~np.isnan(p)] for p in pieces]
    member_nodes = np.flatnonzero(modes == _MEMBER)
    if len(sets) < len(member_nodes):
        raise KernelError(f"TreeEnsemble: {len(member_nodes)} BRANCH_MEMBER nodes but {len(sets)} "
                          f"NaN-delimited sets in membership_values")
    table = np.full((len(modes), max([len(s) for s in sets] + [1])), np.nan)
    for node, s in zip(member_nodes, sets):
        table[node, :len(s)] = s
    return table


def _branch(mode: np.ndarray, x: np.ndarray, split: np.ndarray, members: np.ndarray) -> np.ndarray:
    """Whether each (sample, tree) takes its node's true branch."""
    conds = [x <= split, x < split, x >= split, x > split, x == split, x != split,
             (x[..., None] == members).any(axis=-1)]
    return np.select([mode == m for m in range(7)], conds, default=False)


def _post_transform(scores: np.ndarray, kind: int) -> np.ndarray:
    if kind == 0:
        return scores
    if kind == 2:
        return 1 / (1 + np.exp(-scores))
    if kind in (1, 3):
        shifted = np.exp(scores - scores.max(axis=1, keepdims=True))
        if kind == 3:
            shifted = np.where(scores == 0, 0, shifted)
        total = shifted.sum(axis=1, keepdims=True)
        return shifted / np.where(total == 0, 1, total)
    if kind == 4:
        return np.sqrt(2) * _erfinv(2 * scores - 1)
    raise KernelError(f"TreeEnsemble: post_transform must be 0..4, got {kind}")


def _erfinv(y: np.ndarray) -> np.ndarray:
    """Inverse error function (Giles' approximation, about single precision), for PROBIT."""
    w = -np.log((1 - y) * (1 + y))
    ws, wl = w - 2.5, np.sqrt(np.maximum(w, 5)) - 3
    ps = np.polyval([2.81022636e-08, 3.43273939e-07, -3.5233877e-06, -4.39150654e-06, 0.00021858087,
                     -0.00125372503, -0.00417768164, 0.246640727, 1.50140941], ws)
    pl = np.polyval([-0.000200214257, 0.000100950558, 0.00134934322, -0.00367342844, 0.00573950773,
                     -0.0076224613, 0.00943887047, 1.00167406, 2.83297682], wl)
    return np.where(w < 5, ps, pl) * y


@register("TreeEnsemble", since=5, domain=_ML)
def tree_ensemble(X, *, nodes_featureids, nodes_truenodeids, nodes_falsenodeids, nodes_trueleafs,
                  nodes_falseleafs, nodes_splits, nodes_modes=None, leaf_targetids, leaf_weights, tree_roots,
                  n_targets=None, aggregate_function=1, post_transform=0, membership_values=None,
                  nodes_missing_value_tracks_true=None, nodes_hitrates=None):
    if X.ndim != 2:
        raise KernelError(f"TreeEnsemble: X must be 2D [N, F], got rank {X.ndim}")
    n_nodes = len(nodes_featureids)
    modes = np.zeros(n_nodes, np.int64) if nodes_modes is None else np.asarray(nodes_modes, np.int64)
    feat = np.asarray(nodes_featureids)
    split = np.asarray(nodes_splits, np.float64)
    true_id, false_id = np.asarray(nodes_truenodeids), np.asarray(nodes_falsenodeids)
    true_leaf, false_leaf = np.asarray(nodes_trueleafs, bool), np.asarray(nodes_falseleafs, bool)
    nan_true = (np.zeros(n_nodes, bool) if nodes_missing_value_tracks_true is None
                else np.asarray(nodes_missing_value_tracks_true, bool))
    members = _member_table(modes, membership_values)
    x = X.astype(np.float64)
    rows = np.arange(x.shape[0])[:, None]

    node = np.broadcast_to(np.asarray(tree_roots), (x.shape[0], len(tree_roots))).copy()
    at_leaf = np.zeros(node.shape, bool)
    for _ in range(n_nodes + 1):
        if at_leaf.all():
            break
        cur = np.where(at_leaf, 0, node)  # finished walks hold a leaf index: park them on node 0
        v = x[rows, feat[cur]]
        go_true = _branch(modes[cur], v, split[cur], members[cur])
        go_true = np.where(np.isnan(v), nan_true[cur], go_true)
        node = np.where(at_leaf, node, np.where(go_true, true_id[cur], false_id[cur]))
        at_leaf |= np.where(go_true, true_leaf[cur], false_leaf[cur])
    else:
        raise KernelError("TreeEnsemble: tree walk did not reach a leaf (cycle in nodes_*)")

    targets = np.asarray(leaf_targetids)[node]
    weights = np.asarray(leaf_weights, np.float64)[node]
    n_out = n_targets if n_targets is not None else int(np.max(leaf_targetids)) + 1
    scores = _aggregate(aggregate_function, rows, targets, weights, (x.shape[0], n_out), len(tree_roots))
    return _post_transform(scores, post_transform).astype(X.dtype)


def _aggregate(kind: int, rows, targets, weights, shape, n_trees: int) -> np.ndarray:
    """Combine each tree's leaf weight into its target: AVERAGE (0), SUM (1), MIN (2), MAX (3)."""
    rows = np.broadcast_to(rows, targets.shape)
    if kind in (0, 1):
        out = np.zeros(shape)
        np.add.at(out, (rows, targets), weights)
        return out / n_trees if kind == 0 else out
    if kind in (2, 3):
        ufunc, init = (np.minimum, np.inf) if kind == 2 else (np.maximum, -np.inf)
        out = np.full(shape, init)
        ufunc.at(out, (rows, targets), weights)
        return np.where(np.isinf(out), 0, out)
    raise KernelError(f"TreeEnsemble: aggregate_function must be 0..3, got {kind}")
