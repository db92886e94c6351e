"""Open-vocabulary tags: spans of the title proposed as tags, also ones never seen in training.

Many tags are words of the title itself: brands (``brand:Hornby``), model numbers (``型号:rj45``),
product types (``品类:连衣裙``). A closed-vocabulary classifier can never suggest a brand that
was not in the training catalog. The span tagger learns, from the training titles, which spans
of a title are tags and of which kind:

* **kinds** are the tag prefixes (``brand:``, ``品牌:``, ...; ``""`` for unprefixed tags) whose
  values occur verbatim in the titles of their products often enough (labels are derived
  automatically: a span is positive when its text is one of the product's tags of that kind);
* **candidates** are spans of whole units (a CJK character, a run of letters, a run of digits),
  so ``iPhone 11 智能手机`` yields ``iphone``, ``11``, ``iphone 11``, ``智能``, ``手机``, ...;
* a multinomial **logistic regression** (scikit-learn) on hashed span features (the span, its
  first/last characters, shape, neighbouring characters, and how often the text was a tag in the
  other folds of the training data) gives ``P(kind | span)``.

Tags in the vocabulary get this probability as extra evidence (see ``labelrec.fusion``); tags
outside it are suggested as new (``known: false``). Saved as arrays and JSON, no pickle.
"""

from __future__ import annotations

import functools
import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp

from labelrec.data import CJK_RANGES, Product, TagVocab, fold_width, tag_key
from labelrec.modeldir import SPAN_ARRAYS, SPAN_META
from labelrec.taggers.base import (
    Evidence,
    TrainingSet,
    csr_arrays,
    csr_from,
    read_state,
    write_state,
)

SPAN_FORMAT = 1
N_FEATURES = 2**20
N_FOLDS = 5
MIN_VERBATIM = 20
MIN_VERBATIM_SHARE = 0.3
MAX_NEW_PER_PRODUCT = 30
MIN_PROBABILITY = 0.01

_CJK = CJK_RANGES
_CJK_CHAR = re.compile(rf"[{_CJK}]")
_UNIT = re.compile(rf"[{_CJK}]|(?:(?![{_CJK}])[^\W\d_])+|\d+")
_PREFIX = re.compile(r"^([^\s:]{1,20}:)(.+)$")


def folded(text: str) -> str:
    """Text as spans are matched: lower case, full-width forms as ASCII (``fold_width``), each
    character in its place (``İ``, the one letter whose lower case is two characters, is
    ``i``)."""
    return fold_width(text).replace("\u0130", "I").lower()


def split_tag(tag: str) -> tuple[str, str]:
    """``brand:Hornby`` -> (``brand:``, ``Hornby``); unprefixed tags have kind ``""``."""
    m = _PREFIX.match(tag)
    return (m.group(1), m.group(2)) if m else ("", tag)


@functools.lru_cache(maxsize=65536)
def char_class(ch: str) -> str:
    """``C`` CJK, ``a`` letter, ``0`` digit, ``_`` space, ``^`` none, else the character."""
    if not ch:
        return "^"
    if _CJK_CHAR.match(ch):
        return "C"
    if ch.isdigit():
        return "0"
    if ch.isalpha():
        return "a"
    if ch.isspace():
        return "_"
    return ch


def shape(text: str) -> str:
    """Character classes with runs collapsed: ``fi-65f`` -> ``a-0a``, ``连衣裙`` -> ``C``."""
    out: list[str] = []
    for ch in text:
        c = char_class(ch)
        if not out or out[-1] != c:
            out.append(c)
    return "".join(out)[:12]


def units(text: str) -> list[tuple[int, int]]:
    """(start, end) of the units of ``text``: CJK characters, letter runs, digit runs."""
    return [m.span() for m in _UNIT.finditer(text)]


def candidates(text: str, max_units: int, max_chars: int) -> list[tuple[int, int, int]]:
    """Spans (start, end, n_units) of 1..max_units whole units and at most max_chars chars."""
    spans = units(text)
    out = []
    for i, (start, _) in enumerate(spans):
        for j in range(i, min(i + max_units, len(spans))):
            end = spans[j][1]
            if end - start > max_chars:
                break
            out.append((start, end, j - i + 1))
    return out


def _bucket(count: float) -> int:
    return int(min(8, math.log2(1 + count)))


@dataclass
class Kind:
    """One kind of span tag (a tag prefix) and how its values are written."""

    prefix: str
    lowercase: bool
    max_units: int


class SpanStats:
    """How often a text was a tag of each kind, and how often titles contained it."""

    def __init__(self, n_kinds: int) -> None:
        self.n_kinds = n_kinds
        self.as_tag: dict[str, list[int]] = {}
        self.in_titles: Counter[str] = Counter()

    def add(self, tags: dict[str, int], contained: set[str]) -> None:
        """Count one product: its tags by kind, and the texts its title contains."""
        for value, kind in tags.items():
            row = self.as_tag.setdefault(value, [0] * self.n_kinds)
            row[kind] += 1
        self.in_titles.update(contained)

    def features(self, text: str) -> list[str]:
        row = self.as_tag.get(text)
        if row is None or not any(row):
            return ["st=none"]
        seen = max(self.in_titles.get(text, 0), 1)
        feats = []
        for kind, count in enumerate(row):
            if count > 0:
                share = min(count / seen, 1.0)
                feats += [f"st{kind}={_bucket(count)}", f"sr{kind}={int(share * 10)}"]
        return feats


class SpanTagger:
    """Proposes tags that are spans of the title, with P(kind | span)."""

    name: ClassVar[str] = "span"
    needs_embeddings: ClassVar[bool] = False

    def __init__(
        self,
        kinds: list[Kind],
        coef: sp.csr_matrix,
        intercept: np.ndarray,
        stats: SpanStats,
        vocab: TagVocab,
        max_chars: int,
    ) -> None:
        self.kinds = kinds
        self.coef = coef.tocsr().astype(np.float32)
        self.coef_t = self.coef.T.tocsr()  # transposed once, not converted at every call
        self.intercept = np.asarray(intercept, dtype=np.float32)
        self.stats = stats
        self.vocab = vocab
        self.max_chars = max_chars
        self.max_units = max(k.max_units for k in kinds)
        from sklearn.feature_extraction import FeatureHasher

        self.hasher = FeatureHasher(N_FEATURES, input_type="string", alternate_sign=False)

    # ------------------------------------------------------------------ training
    @staticmethod
    def find_kinds(products: list[Product], max_chars: int) -> list[Kind]:
        """Tag prefixes whose values are verbatim spans of the title often enough."""
        total: Counter[str] = Counter()
        verbatim: Counter[str] = Counter()
        lower_ok: Counter[str] = Counter()
        n_units: dict[str, list[int]] = {}
        for p in products:
            title = folded(p.title)
            bounds = units(title)
            starts = {s for s, _ in bounds}
            ends = {e for _, e in bounds}
            for tag in p.tags:
                prefix, value = split_tag(tag)
                total[prefix] += 1
                v = folded(value)
                pos = title.find(v)
                if pos < 0 or len(v) > max_chars or pos not in starts or pos + len(v) not in ends:
                    continue
                verbatim[prefix] += 1
                lower_ok[prefix] += value == value.lower()
                n_units.setdefault(prefix, []).append(len(units(v)))
        kinds = []
        for prefix, n in verbatim.items():
            if n >= MIN_VERBATIM and n / total[prefix] >= MIN_VERBATIM_SHARE:
                max_units = int(np.percentile(n_units[prefix], 99))
                kinds.append(Kind(prefix, lower_ok[prefix] / n > 0.9, max(1, max_units)))
        return sorted(kinds, key=lambda k: -verbatim[k.prefix])

    @classmethod
    def fit(cls, train: TrainingSet, cfg: Any) -> SpanTagger | None:
        """Fit on ``train`` when ``lexical.open_vocab`` is on (``build``)."""
        if not cfg.lexical.open_vocab:
            return None
        return cls.build(train.products, train.vocab, cfg.lexical.span_max_chars)

    @classmethod
    def build(
        cls, products: list[Product], vocab: TagVocab, max_chars: int = 16, seed: int = 0
    ) -> SpanTagger | None:
        """Train on the spans of the training titles; None when no tag kind is verbatim."""
        from sklearn.linear_model import LogisticRegression

        kinds = cls.find_kinds(products, max_chars)
        if not kinds:
            return None
        prefix_kind = {k.prefix: i + 1 for i, k in enumerate(kinds)}
        max_units = max(k.max_units for k in kinds)
        n_kinds = len(kinds) + 1
        # per product: the gold span kinds and the candidate texts that are tag values somewhere
        gold: list[dict[str, int]] = []
        cands: list[list[tuple[int, int, int]]] = []
        titles = [folded(p.title) for p in products]
        for p, title in zip(products, titles, strict=True):
            tags: dict[str, int] = {}
            for tag in p.tags:
                prefix, value = split_tag(tag)
                if prefix in prefix_kind:
                    tags.setdefault(folded(value), prefix_kind[prefix])
            gold.append(tags)
            cands.append(candidates(title, max_units, max_chars))
        values = {v for g in gold for v in g}
        contained = [
            {t for t in (title[s:e] for s, e, _ in c) if t in values}
            for title, c in zip(titles, cands, strict=True)
        ]
        full = SpanStats(n_kinds)
        folds = [SpanStats(n_kinds) for _ in range(N_FOLDS)]
        for i, (g, c) in enumerate(zip(gold, contained, strict=True)):
            full.add(g, c)
            folds[i % N_FOLDS].add(g, c)
        from sklearn.feature_extraction import FeatureHasher

        hasher = FeatureHasher(N_FEATURES, input_type="string", alternate_sign=False)
        parts: list[sp.csr_matrix] = []  # hashed a fold at a time: the feature strings of one
        labels: list[int] = []  # fold alive at once, not of every span (~60 bytes each)
        for fold in range(N_FOLDS):
            other = SpanStats(n_kinds)  # statistics of the other folds: no label leaks in
            other.as_tag = {
                v: [a - b for a, b in zip(r, folds[fold].as_tag.get(v, [0] * n_kinds), strict=True)]
                for v, r in full.as_tag.items()
            }
            other.in_titles = full.in_titles - folds[fold].in_titles
            rows: list[list[str]] = []
            for i in range(fold, len(products), N_FOLDS):
                title = titles[i]
                occ = known_occurrences(title, cands[i], other)
                for start, end, n in cands[i]:
                    rows.append(span_features(title, start, end, n, other, occ))
                    labels.append(gold[i].get(title[start:end], 0))
            if rows:
                parts.append(hasher.transform(rows).tocsr())
        if len(set(labels)) < 2:
            return None
        x = sp.vstack(parts, format="csr")
        x.data = np.minimum(x.data, 1.0).astype(np.float32)
        # Fit over the hashed columns the spans use (tens of thousands of 2**20): L-BFGS keeps
        # ~25 float64 vectors of n_kinds x columns, 2-3 GB over all 2**20 columns. A column no
        # span uses gets a zero gradient and stays 0, so the coefficients are the same.
        used, columns = np.unique(x.indices, return_inverse=True)
        x = sp.csr_matrix((x.data, columns, x.indptr), shape=(x.shape[0], len(used)))
        clf = LogisticRegression(C=4.0, max_iter=100, tol=1e-3, random_state=seed)
        clf.fit(x, np.asarray(labels))
        coef = np.zeros((n_kinds, len(used)), dtype=np.float32)
        intercept = np.full(n_kinds, -1e4, dtype=np.float32)
        if len(clf.classes_) == 2:  # binary: sklearn keeps one row for the positive class
            coef[clf.classes_[1]] = clf.coef_[0]
            intercept[clf.classes_[1]] = clf.intercept_[0]
            intercept[clf.classes_[0]] = 0.0
            coef[clf.classes_[0]] = 0.0
        else:
            coef[clf.classes_] = clf.coef_
            intercept[clf.classes_] = clf.intercept_
        coef[np.abs(coef) < 1e-4] = 0.0
        kind_of, column = np.nonzero(coef)  # back to the hashed feature space
        hashed = sp.csr_matrix(
            (coef[kind_of, column], (kind_of, used[column])),
            shape=(n_kinds, N_FEATURES),
            dtype=np.float32,
        )
        return cls(kinds, hashed, intercept, full, vocab, max_chars)

    # ------------------------------------------------------------------ prediction
    def probabilities(self, products: list[Product]) -> list[dict[str, float]]:
        """Proposed tags of each product (kind prefix + span text) -> probability. The spans of
        all ``products`` go through the hasher and the classifier at once (their per-call costs
        exceed the work for one title)."""
        titles = [folded(p.title) for p in products]
        spans = [candidates(title, self.max_units, self.max_chars) for title in titles]
        rows = []
        for title, found in zip(titles, spans, strict=True):
            occ = known_occurrences(title, found, self.stats)
            rows += [span_features(title, s, e, n, self.stats, occ) for s, e, n in found]
        if not rows:
            return [{} for _ in products]
        x = self.hasher.transform(rows).tocsr()
        x.data = np.minimum(x.data, 1.0).astype(np.float32)
        logits = (x @ self.coef_t).toarray() + self.intercept
        logits -= logits.max(axis=1, keepdims=True)
        probs = np.exp(logits)
        probs /= probs.sum(axis=1, keepdims=True)
        out: list[dict[str, float]] = []
        first = 0
        for product, title, found in zip(products, titles, spans, strict=True):
            tags: dict[str, float] = {}
            for (start, end, n), row in zip(found, probs[first : first + len(found)], strict=True):
                for k, kind in enumerate(self.kinds, start=1):
                    p = float(row[k])
                    if p < MIN_PROBABILITY or n > kind.max_units:
                        continue
                    text = (
                        title[start:end] if kind.lowercase else fold_width(product.title)[start:end]
                    )
                    tag = kind.prefix + text
                    if p > tags.get(tag, 0.0):
                        tags[tag] = p
            out.append(tags)
            first += len(found)
        return out

    def known_and_new(self, products: list[Product]) -> tuple[np.ndarray, list[dict[str, float]]]:
        """(probabilities of vocabulary tags (n, n_tags), new tags per product -> probability)."""
        known = np.zeros((len(products), len(self.vocab)), dtype=np.float32)
        new: list[dict[str, float]] = []
        for i, proposed in enumerate(self.probabilities(products)):
            row: dict[str, float] = {}
            for tag, p in proposed.items():
                j = self.vocab.find(tag)  # "brand:LEGO" is the vocabulary's brand:Lego
                if j is None:
                    row[tag] = p
                else:
                    known[i, j] = max(known[i, j], p)
            best = sorted(row.items(), key=lambda kv: -kv[1])[:MAX_NEW_PER_PRODUCT]
            new.append(dict(best))
        return known, new

    def score(self, products: list[Product], embeddings: np.ndarray | None = None) -> Evidence:
        """``known_and_new`` as the fusion takes it."""
        return Evidence(*self.known_and_new(products))

    def absent(self, products: list[Product]) -> np.ndarray:
        """Which vocabulary tags of its kinds (``brand:Lego``) have a value that the product's
        title does not contain (case-folded), (n_products, n_tags) booleans; False for the
        other tags. A brand absent from the title rests on other products' evidence alone."""
        if not hasattr(self, "_kind_values"):
            prefixes = tuple(k.prefix for k in self.kinds)
            cols = [j for j, t in enumerate(self.vocab.tags) if t.startswith(prefixes)]
            values = [folded(split_tag(self.vocab.tags[j])[1]) for j in cols]
            self._kind_values = (np.asarray(cols, dtype=np.int64), values)
        cols, values = self._kind_values
        out = np.zeros((len(products), len(self.vocab)), dtype=bool)
        for i, product in enumerate(products):
            title = folded(product.title)
            out[i, cols] = [v not in title for v in values]
        return out

    # ------------------------------------------------------------------ persistence
    def save(self, model_dir: str | Path) -> None:
        meta = {
            "max_chars": self.max_chars,
            "kinds": [k.__dict__ for k in self.kinds],
            "as_tag": self.stats.as_tag,
            "in_titles": dict(self.stats.in_titles),
        }
        arrays = {**csr_arrays("coef", self.coef), "intercept": self.intercept}
        write_state(model_dir, SPAN_META, SPAN_ARRAYS, meta, arrays, SPAN_FORMAT)

    @classmethod
    def load(cls, model_dir: str | Path, vocab: TagVocab) -> SpanTagger | None:
        found = read_state(model_dir, SPAN_META, SPAN_ARRAYS, SPAN_FORMAT, "span tagger")
        if found is None:
            return None
        meta, arrays = found
        kinds = [Kind(**k) for k in meta["kinds"]]
        stats = SpanStats(len(kinds) + 1)
        stats.as_tag = {k: list(v) for k, v in meta["as_tag"].items()}
        stats.in_titles = Counter(meta["in_titles"])
        coef, intercept = csr_from("coef", arrays), arrays["intercept"]
        return cls(kinds, coef, intercept, stats, vocab, int(meta["max_chars"]))


def known_occurrences(
    title: str, spans: list[tuple[int, int, int]], stats: SpanStats
) -> list[tuple[int, int]]:
    """Where texts that were tags in training occur in ``title``."""
    out = []
    for start, end, _ in spans:
        row = stats.as_tag.get(title[start:end])
        if row is not None and any(row):
            out.append((start, end))
    return out


def span_features(
    title: str,
    start: int,
    end: int,
    n_units: int,
    stats: SpanStats,
    occurrences: Sequence[tuple[int, int]] = (),
) -> list[str]:
    """Hashed-feature strings of the span ``title[start:end]``.

    ``occurrences`` (texts that were tags in training) tell whether the span cuts through a known
    word, sits inside one or contains one.
    """
    s = title[start:end]
    left = title[start - 1] if start > 0 else ""
    right = title[end] if end < len(title) else ""
    left2 = title[max(0, start - 2) : start]
    right2 = title[end : end + 2]
    lc, rc = char_class(left), char_class(right)
    first, last = char_class(s[0]), char_class(s[-1])
    sh = shape(s)
    feats = [
        f"w={s}",
        f"b={s[:1]}",
        f"e={s[-1:]}",
        f"b2={s[:2]}",
        f"e2={s[-2:]}",
        f"n={min(len(s), 16)}",
        f"u={n_units}",
        f"sh={sh}",
        f"l={left}",
        f"r={right}",
        f"l2={left2}",
        f"r2={right2}",
        f"lc={lc}",
        f"rc={rc}",
        f"lc|f={lc}|{first}",
        f"rc|l={rc}|{last}",
        f"e|r={s[-1:]}|{right}",
        f"l|b={left}|{s[:1]}",
        f"e|u={s[-1:]}|{n_units}",
        f"l|r={left}|{right}",
        f"lc|rc|sh={lc}|{rc}|{sh}",
        f"pos={min(start, 8)}",
        f"end={min(len(title) - end, 8)}",
        "bias",
    ]
    feats += stats.features(s)
    for a, b in occurrences:
        if (a, b) == (start, end):
            continue
        if a < start < b < end or (a < start and b == end):
            feats.append("cut_left" if b < end else "inside_right")
        elif start < a < end < b or (a == start and end < b):
            feats.append("cut_right" if a > start else "inside_left")
        elif a < start and end < b:
            feats.append("inside")
        elif start <= a and b <= end:
            feats.append("contains")
    return feats


# ----------------------------------------------------------------------------- evaluation


@dataclass
class OpenEvaluation:
    metrics: dict[str, float]


def evaluate_with_new_tags(
    known: np.ndarray,
    new_tags: list[dict[str, float]],
    products: list[Product],
    vocab: TagVocab,
    thresholds: np.ndarray,
    new_threshold: float,
    ks: tuple[int, ...] = (1, 3, 5),
    hierarchy: Any = None,
) -> OpenEvaluation:
    """The metrics of ``labelrec.evaluate`` over known and new tags ranked together, with the
    recall and precision of the new tags at ``new_threshold`` (0 where none was proposed and
    the products have gold tags outside the vocabulary); ``hierarchy``: as
    ``evaluate_scores_on``'s."""
    from labelrec.evaluate import evaluate_scores_on

    result = evaluate_scores_on(
        known,
        products,
        vocab,
        thresholds,
        ks,
        new_tags=new_tags,
        new_threshold=new_threshold,
        hierarchy=hierarchy,
    ).metrics
    result.setdefault("new_tag_share_of_top1", 0.0)
    if result["unknown_gold_share"] > 0:
        result.setdefault("new_tag_recall", 0.0)
        result.setdefault("new_tag_precision", 0.0)
    return OpenEvaluation(result)


def kind_precision(
    known: np.ndarray,
    new_tags: list[dict[str, float]] | None,
    products: list[Product],
    vocab: TagVocab,
    prefix: str,
) -> dict[str, float]:
    """P@1 within one facet (tags starting with ``prefix``, e.g. ``brand:``).

    Over the products that have a gold tag of the facet: is the best-scored tag of the facet one
    of them? Reported for all such products, and split by whether a gold facet tag is in the
    vocabulary ("known") or none is ("new": only an open-vocabulary tagger can get these).
    Tags are compared as the other metrics compare them: in any case and width (``tag_key``).
    """
    key = tag_key(prefix)
    cols = np.asarray(
        [j for j, t in enumerate(vocab.tags) if tag_key(t).startswith(key)], dtype=int
    )
    hits: dict[str, list[float]] = {"": [], " known": [], " new": []}
    for i, product in enumerate(products):
        gold = {tag_key(t) for t in product.tags if tag_key(t).startswith(key)}
        if not gold:
            continue
        best_tag, best = None, -1.0
        if len(cols):
            j = cols[int(np.argmax(known[i, cols]))]
            if known[i, j] > 0:
                best_tag, best = vocab.tags[j], float(known[i, j])
        if new_tags is not None:
            for tag, score in new_tags[i].items():
                if tag_key(tag).startswith(key) and score > best:
                    best_tag, best = tag, score
        hit = float(best_tag is not None and tag_key(best_tag) in gold)
        group = " known" if any(vocab.find(t) is not None for t in gold) else " new"
        hits[""].append(hit)
        hits[group].append(hit)
    name = prefix.rstrip(":")
    return {
        f"facet {name}{g} P@1": float(np.mean(v)) if v else float("nan") for g, v in hits.items()
    }
