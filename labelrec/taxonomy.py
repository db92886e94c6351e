"""The tag hierarchy: category paths (``Toys > Puzzles > Jigsaw``) as parent links, kept
consistent when scored, and measured with hierarchical precision. Used by the taggers and the
fusion alike, so it depends on none of them."""

from __future__ import annotations

import numpy as np

from labelrec.data import Product, TagVocab, is_facet


def parent_index(tags: list[str], separator: str | None) -> np.ndarray:
    """Index of each tag's parent path in ``tags`` (``A > B`` -> ``A``), -1 when it has none
    (a facet, ``brand:Anagram/MD``, has none whatever its value holds: ``is_facet``)."""
    parents = np.full(len(tags), -1, dtype=np.int64)
    if not separator:
        return parents
    index = {t: j for j, t in enumerate(tags)}
    for j, tag in enumerate(tags):
        if separator in tag and not is_facet(tag, separator):
            parents[j] = index.get(tag.rsplit(separator, 1)[0], -1)
    return parents


def tag_depth(parents: np.ndarray) -> np.ndarray:
    """Number of ancestors of each tag (0 for roots) from ``parent_index``."""
    depth = np.zeros(len(parents), dtype=np.int64)
    for j in range(len(parents)):
        p, d = parents[j], 0
        while p >= 0 and d < len(parents):
            p, d = parents[p], d + 1
        depth[j] = d
    return depth


AncestorPlan = tuple[tuple[np.ndarray, np.ndarray, np.ndarray], ...]


def ancestor_plan(parents: np.ndarray) -> AncestorPlan:
    """The steps of ``ancestor_consistent`` for ``parents``, deepest level first.

    Each step holds one level's children grouped by parent, where each group starts among them,
    and the parent each group raises."""
    if not (parents >= 0).any():
        return ()
    depth = tag_depth(parents)
    steps = []
    for d in range(int(depth.max()), 0, -1):
        children = np.flatnonzero((depth == d) & (parents >= 0))
        if not children.size:
            continue
        children = children[np.argsort(parents[children], kind="stable")]
        of = parents[children]
        starts = np.flatnonzero(np.r_[True, of[1:] != of[:-1]])
        steps.append((children, starts, of[starts]))
    return tuple(steps)


def ancestor_consistent(
    scores: np.ndarray,
    parents: np.ndarray,
    plan: AncestorPlan | None = None,
    in_place: bool = False,
) -> np.ndarray:
    """Raise every parent to at least the best score of its children (deepest first).

    ``plan``: ``ancestor_plan(parents)``, when the caller keeps it between calls; ``in_place``:
    raise ``scores`` itself instead of a copy (a caller's scratch matrix)."""
    if scores.size == 0:
        return scores
    if plan is None:
        plan = ancestor_plan(parents)
    if not plan:
        return scores
    out = scores if in_place else scores.copy()
    for children, starts, targets in plan:
        # each group's column-wise maximum raises its parent
        raised = np.maximum.reduceat(out[:, children], starts, axis=1)
        out[:, targets] = np.maximum(out[:, targets], raised)
    return out


def consistent_decisions(
    passed: np.ndarray, parents: np.ndarray | None, plan: AncestorPlan | None = None
) -> np.ndarray:
    """Cut ``passed`` (products x tags, the tags at or above their own thresholds) in place to
    the tags whose parent path passed too, shallowest first, and return it. Per-tag thresholds
    are tuned tag by tag, a parent's often above its child's: a score between the two would
    pass the child alone (``Toys > Kites`` without ``Toys``), where a suggestion keeps a path
    whole. Dropping such a child, rather than adding its parent, is the rule that raised
    micro-F1 on held-out products (``docs/results.md``, Category paths decided whole).
    ``plan``: ``ancestor_plan(parents)``, where the caller keeps it."""
    if parents is None or passed.size == 0:
        return passed
    if plan is None:
        plan = ancestor_plan(parents)
    for children, _, _ in reversed(plan):  # parents decided before their children
        passed[:, children] &= passed[:, parents[children]]
    return passed


def hierarchical_precision(
    scores: np.ndarray,
    products: list[Product],
    vocab: TagVocab,
    k: int = 3,
    separator: str = " > ",
    new_tags: list[dict[str, float]] | None = None,
) -> float:
    """Mean hierarchical precision of the top ``k`` tags (Kiritchenko et al.).

    Predicted and gold tag sets are both extended with every ancestor path of their tags;
    hP = |pred+ & gold+| / |pred+|. A wrong leaf under the right parent gets partial credit.
    """

    def closure(tags: list[str]) -> set[str]:
        out = set()
        for tag in tags:
            parts = [tag] if is_facet(tag, separator) else tag.split(separator)
            out.update(separator.join(parts[: i + 1]) for i in range(len(parts)))
        return out

    ranked = top_tags(scores, vocab.tags, k, new_tags)
    values = []
    for product, pred in zip(products, ranked, strict=True):
        p, g = closure(pred), closure(product.tags)
        if p:
            values.append(len(p & g) / len(p))
    return float(np.mean(values)) if values else float("nan")


def top_tags(
    scores: np.ndarray, tags: list[str], k: int, new_tags: list[dict[str, float]] | None = None
) -> list[list[str]]:
    """The ``k`` best tags per product, merging known-tag scores with new (open) tags."""
    out = []
    k_known = min(k, scores.shape[1])
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k_known]  # (n, 0) without known tags
    for i in range(scores.shape[0]):
        cand = [(float(scores[i, j]), tags[j]) for j in top[i]]
        if new_tags is not None:
            cand += [(float(s), t) for t, s in new_tags[i].items()]
        cand.sort(key=lambda c: -c[0])
        out.append([t for _, t in cand[:k]])
    return out
