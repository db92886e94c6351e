"""Synthetic demo product catalog for ``make demo``.

The project may not ship third-party data, so the demo catalog is generated here from small
hand-written vocabularies (``demo_vocab.json``, package data; all brands are fictional).  The
output has the same shape as a real catalog -- one ``{"id", "title", "description", "tags"}``
record per product -- and mimics the properties that matter for a multi-label tagger:

* a 2-4 level category hierarchy (8 departments, ~100 leaves) expanded into one tag per path
  prefix, e.g. ``Toys``, ``Toys > Puzzles``, ``Toys > Puzzles > Jigsaw``;
* facet tags (``brand:Brickton``, ``color:Red``, ``material:Wood``, ``age:3+``, ``size:M``, ...)
  and free keywords (``gift``, ``eco-friendly``, ``bestseller``, ...);
* titles that carry real signal for the tags (brand, product noun, attributes, keyword cues)
  with some noise: missing brands, generic nouns, spurious cues and a few dropped labels;
* ~15% Chinese titles, a few emoji, empty / short / very long descriptions;
* a Zipf-like long tail over leaf categories, brands and facet values.

Generation is deterministic for a given seed (only ``random.Random(seed)`` is used) and the
first ``n`` products do not depend on ``n_products``.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import random
from bisect import bisect
from collections import Counter
from importlib import resources
from itertools import accumulate
from pathlib import Path
from typing import Any

__all__ = [
    "BRANDS",
    "DEPARTMENTS",
    "LEAVES",
    "brand_aliases",
    "catalog_stats",
    "generate_catalog",
    "split_of",
    "write_catalog",
    "write_demo",
]

VOCAB_FILE = "demo_vocab.json"
DEMO_SPLITS = ("train", "valid", "test")  # write_demo's files: <split>.jsonl

# --------------------------------------------------------------------------------------------
# Vocabularies: package data (demo_vocab.json), read-only tuples here
# --------------------------------------------------------------------------------------------


def _frozen(value: Any) -> Any:
    """JSON arrays as tuples, recursively (the tables are never changed)."""
    if isinstance(value, list):
        return tuple(_frozen(v) for v in value)
    if isinstance(value, dict):
        return {k: _frozen(v) for k, v in value.items()}
    return value


_VOCAB: dict[str, Any] = _frozen(
    json.loads(resources.files("labelrec").joinpath(VOCAB_FILE).read_text(encoding="utf-8"))
)

DEPARTMENTS: tuple[str, ...] = _VOCAB["departments"]
# Leaf category path -> (English product nouns, Chinese product noun, facet overrides).
# The first noun is the most specific.  Overrides replace the department's facet values
# (``None`` disables a facet, "shoe"/"kids" pick shoe sizes/children's ages); ``material``
# lists the leaf's plausible materials (leaves without it have no material facet).
_Leaf = tuple[str, tuple[str, ...], str, dict[str, Any]]
_LEAF_SPECS: tuple[_Leaf, ...] = _VOCAB["leaf_specs"]
LEAVES: tuple[str, ...] = tuple(spec[0] for spec in _LEAF_SPECS)
# Department -> brands as (English name, Chinese name or None), most popular first.
BRANDS: dict[str, tuple[tuple[str, str | None], ...]] = _VOCAB["brands"]
# Indie brands (prefix + suffix) model the long tail of small sellers.
_INDIE_PREFIXES: tuple[str, ...] = _VOCAB["indie_prefixes"]
_INDIE_SUFFIXES: tuple[str, ...] = _VOCAB["indie_suffixes"]
_SHOE_SIZES: tuple[str, ...] = _VOCAB["shoe_sizes"]
_KID_AGES: tuple[str, ...] = _VOCAB["kid_ages"]
_ECO_MATERIALS: frozenset[str] = frozenset(_VOCAB["eco_materials"])
# Department -> probability that a product of a leaf with materials carries a material facet.
_MATERIAL_PROB: dict[str, float] = _VOCAB["material_prob"]
# Department -> facet name -> (probability that a product carries it, values most popular first).
_DEPT_FACETS: dict[str, dict[str, tuple[float, tuple[str, ...]]]] = _VOCAB["dept_facets"]
_ZH_VALUES: dict[str, str] = _VOCAB["zh_values"]
_ADJECTIVES: dict[str, tuple[str, ...]] = _VOCAB["adjectives"]
_ZH_ADJECTIVES: dict[str, tuple[str, ...]] = _VOCAB["zh_adjectives"]
_ZH_SERIES: tuple[str, ...] = _VOCAB["zh_series"]
_DETAILS: dict[str, tuple[str, ...]] = _VOCAB["details"]
_ZH_DETAILS: tuple[str, ...] = _VOCAB["zh_details"]
_GENERIC_NOUNS: dict[str, tuple[str, ...]] = _VOCAB["generic_nouns"]
_EMOJI: dict[str, tuple[str, ...]] = _VOCAB["emoji"]
_BOOK_TITLE_WORDS: tuple[str, ...] = _VOCAB["book_title_words"]
# Free keyword -> (base probability, department boosts, English cues, Chinese cues).
_KEYWORDS: dict[str, tuple[float, dict[str, float], tuple[str, ...], tuple[str, ...]]] = _VOCAB[
    "keywords"
]
_ECO_CUES: tuple[str, ...] = _VOCAB["eco_cues"]
_USAGE: dict[str, tuple[str, ...]] = _VOCAB["usage"]
_ZH_USAGE: tuple[str, ...] = _VOCAB["zh_usage"]
_BOILERPLATE: tuple[str, ...] = _VOCAB["boilerplate"]

_DEPARTMENT_ZIPF_S = 0.6
_CATEGORY_ZIPF_S = 1.3
_BRAND_ZIPF_S = 1.5
_VALUE_ZIPF_S = 1.1
_CHINESE_SHARE = 0.15
_INDIE_BRAND_SHARE = 0.06


# --------------------------------------------------------------------------------------------
# Generation
# --------------------------------------------------------------------------------------------


def _zipf_cum_weights(n: int, s: float, q: float = 0.0) -> list[float]:
    """Cumulative Zipf(-Mandelbrot) weights ``1 / (rank + q)**s`` for ranks ``1..n``."""
    return list(accumulate(1.0 / ((rank + q) ** s) for rank in range(1, n + 1)))


def _pick(rng: random.Random, items: tuple[Any, ...] | list[Any], cum: list[float]) -> Any:
    """Draw one item with precomputed cumulative weights (one ``rng.random()`` call)."""
    return items[min(bisect(cum, rng.random() * cum[-1]), len(items) - 1)]


def _path_prefixes(path: str) -> list[str]:
    """``"A > B > C"`` -> ``["A", "A > B", "A > B > C"]``."""
    parts = path.split(" > ")
    return [" > ".join(parts[: i + 1]) for i in range(len(parts))]


def brand_aliases() -> dict[str, tuple[str, ...]]:
    """Map each ``brand:<Brand>`` tag to the strings that name the brand in titles."""
    return {
        f"brand:{en}": (en, zh) if zh else (en,) for brands in BRANDS.values() for en, zh in brands
    }


class _Generator:
    """Precomputed sampling tables; :meth:`product` draws one product from a shared rng."""

    def __init__(self) -> None:
        # Category popularity: walk down the hierarchy, picking a child with Zipf weights at
        # every level.  Child ranks are a fixed permutation (independent of the seed) so the
        # catalog's shape -- which categories are head and which are tail -- is stable.
        self.specs = {spec[0]: spec for spec in _LEAF_SPECS}
        children: dict[str, list[str]] = {}
        for path in self.specs:
            parent = ""
            for prefix in _path_prefixes(path):
                siblings = children.setdefault(parent, [])
                if prefix not in siblings:
                    siblings.append(prefix)
                parent = prefix
        popularity = random.Random("labelrec-demo-category-popularity")
        for siblings in children.values():
            popularity.shuffle(siblings)
        self.children = children
        self.children_cum = {
            node: _zipf_cum_weights(len(kids), _DEPARTMENT_ZIPF_S if not node else _CATEGORY_ZIPF_S)
            for node, kids in children.items()
        }
        self.brand_cum = {d: _zipf_cum_weights(len(b), _BRAND_ZIPF_S) for d, b in BRANDS.items()}
        self.value_cum: dict[int, list[float]] = {}

    def _value(self, rng: random.Random, values: tuple[str, ...]) -> str:
        cum = self.value_cum.get(len(values))
        if cum is None:
            cum = self.value_cum[len(values)] = _zipf_cum_weights(len(values), _VALUE_ZIPF_S)
        return _pick(rng, values, cum)

    def _facets(self, rng: random.Random, dept: str, overrides: dict[str, Any]) -> dict[str, str]:
        facets: dict[str, str] = {}
        for name, (prob, values) in _DEPT_FACETS[dept].items():
            override = overrides.get(name, values)
            if override is None:
                continue
            if rng.random() < prob:
                facets[name] = self._value(rng, _SHOE_SIZES if override == "shoe" else override)
        materials = overrides.get("material")
        if materials and rng.random() < _MATERIAL_PROB.get(dept, 0.6):
            facets["material"] = self._value(rng, materials)
        if overrides.get("age") == "kids" and rng.random() < 0.9:  # children's books
            facets["age"] = self._value(rng, _KID_AGES)
        return facets

    def product(self, rng: random.Random, index: int) -> dict[str, Any]:
        node = ""
        while node not in self.specs:
            node = _pick(rng, self.children[node], self.children_cum[node])
        path, nouns, noun_zh, overrides = self.specs[node]
        dept = path.split(" > ", 1)[0]
        chinese = rng.random() < _CHINESE_SHARE

        brand_en: str | None = None
        brand_zh: str | None = None
        r = rng.random()
        if r < _INDIE_BRAND_SHARE:  # small marketplace sellers: a long tail of one-off brands
            brand_en = rng.choice(_INDIE_PREFIXES) + rng.choice(_INDIE_SUFFIXES)
        elif r < 0.93:
            brand_en, brand_zh = _pick(rng, BRANDS[dept], self.brand_cum[dept])
        facets = self._facets(rng, dept, overrides)

        # Free keywords: decide the tag first, then usually (not always) put a cue in the text.
        keywords: list[str] = []
        for kw, (base, boosts, _, _) in _KEYWORDS.items():
            if rng.random() < boosts.get(dept, base):
                keywords.append(kw)
        eco_material = facets.get("material") in _ECO_MATERIALS
        if rng.random() < (0.55 if eco_material else 0.03):
            keywords.append("eco-friendly")

        title_cues: list[str] = []
        desc_cues: list[str] = []
        for kw in keywords:
            if rng.random() < 0.12:  # tag without any textual cue (label noise)
                continue
            if kw == "eco-friendly":
                cue = rng.choice(("环保",) if chinese else _ECO_CUES)
            else:
                cue = rng.choice(_KEYWORDS[kw][3] if chinese else _KEYWORDS[kw][2])
            (title_cues if rng.random() < 0.7 else desc_cues).append(cue)
        if rng.random() < 0.04:  # cue without the tag (noise)
            kw = rng.choice(list(_KEYWORDS))
            title_cues.append(rng.choice(_KEYWORDS[kw][3] if chinese else _KEYWORDS[kw][2]))

        noun = nouns[0] if rng.random() < 0.7 else nouns[1]
        if rng.random() < 0.06:  # vague title: generic noun instead of the product noun
            noun = rng.choice(_GENERIC_NOUNS[dept])
            noun_zh = "商品"

        if chinese:
            title = self._title_zh(rng, dept, brand_en, brand_zh, noun_zh, facets, title_cues)
            description = self._description_zh(rng, noun_zh, facets, desc_cues)
        else:
            title = self._title_en(rng, dept, brand_en, noun, facets, title_cues)
            description = self._description_en(rng, dept, brand_en, noun, facets, desc_cues)
        if rng.random() < 0.04:
            emoji = rng.choice(_EMOJI[dept])
            title = f"{emoji} {title}" if rng.random() < 0.5 else f"{title} {emoji}"

        tags = _path_prefixes(path)
        n_category_tags = len(tags)
        if brand_en is not None:
            tags.append(f"brand:{brand_en}")
            if chinese and brand_zh is not None:
                tags.append(f"品牌:{brand_zh}")
        tags.extend(f"{name}:{value}" for name, value in facets.items())
        tags.extend(keywords)
        if len(tags) > n_category_tags and rng.random() < 0.03:
            # Incomplete labelling: drop one non-category tag.
            del tags[rng.randrange(n_category_tags, len(tags))]
        return {
            "id": f"demo-{index:06d}",
            "title": title,
            "description": description,
            "tags": list(dict.fromkeys(tags)),
        }

    @staticmethod
    def _title_en(
        rng: random.Random,
        dept: str,
        brand: str | None,
        noun: str,
        facets: dict[str, str],
        cues: list[str],
    ) -> str:
        show_brand = brand is not None and rng.random() < 0.88
        adj = rng.choice(_ADJECTIVES[dept]) if rng.random() < 0.6 else ""
        pre = [facets[k] for k in ("color", "material") if k in facets and rng.random() < 0.7]
        post: list[str] = []
        if "size" in facets and rng.random() < 0.6:
            post.append(f"Size {facets['size']}")
        if "age" in facets and rng.random() < 0.7:
            post.append(f"for Ages {facets['age']}")
        if "format" in facets and rng.random() < 0.75:
            post.append(facets["format"])
        if "connectivity" in facets and rng.random() < 0.7:
            post.append(facets["connectivity"])
        if "scent" in facets and rng.random() < 0.6:
            post.append(f"{facets['scent']} Scent")
        if "skin" in facets and rng.random() < 0.5:
            post.append(f"for {facets['skin']} Skin")
        if "language" in facets and rng.random() < 0.4:
            post.append(f"{facets['language']} Edition")
        details = list(cues)
        if rng.random() < 0.6:
            details.append(rng.choice(_DETAILS[dept]))

        core = " ".join(w for w in (adj, *pre, noun) if w)
        attrs = " ".join(post)
        if dept == "Books":
            name = f"{rng.choice(_BOOK_TITLE_WORDS[0])} {rng.choice(_BOOK_TITLE_WORDS[1])}"
            head = f"{name}: {core}"
            if attrs:
                head += f" ({attrs})"
            if show_brand:
                head += f" - {brand}"
            return ", ".join([head, *details])
        template = rng.randrange(3)
        if template == 0 or not show_brand:
            head = " ".join(w for w in (brand if show_brand else "", core, attrs) if w)
        elif template == 1:
            head = f"{core} by {brand}" + (f" ({attrs})" if attrs else "")
        else:
            head = f"{brand} | {core}" + (f" - {attrs}" if attrs else "")
        return ", ".join([head, *details])

    @staticmethod
    def _title_zh(
        rng: random.Random,
        dept: str,
        brand_en: str | None,
        brand_zh: str | None,
        noun_zh: str,
        facets: dict[str, str],
        cues: list[str],
    ) -> str:
        parts: list[str] = []
        if brand_en is not None and rng.random() < 0.9:
            parts.append(brand_zh or brand_en)
        if rng.random() < 0.4:
            parts.append(rng.choice(_ZH_SERIES))
        if rng.random() < 0.6:
            parts.append(rng.choice(_ZH_ADJECTIVES[dept]))
        attr = "".join(
            _ZH_VALUES.get(facets[k], facets[k])
            for k in ("color", "material")
            if k in facets and rng.random() < 0.7
        )
        parts.append(attr + noun_zh)
        if "size" in facets and rng.random() < 0.6:
            parts.append(f"{facets['size']}码")
        if "age" in facets and rng.random() < 0.7:
            parts.append(f"适合{facets['age'].rstrip('+')}岁以上")
        for key in ("format", "connectivity", "scent", "skin", "language"):
            if key in facets and rng.random() < 0.6:
                parts.append(_ZH_VALUES.get(facets[key], facets[key]))
        parts.extend(cues)
        if rng.random() < 0.5:
            parts.append(rng.choice(_ZH_DETAILS))
        return " ".join(parts)

    @staticmethod
    def _description_en(
        rng: random.Random,
        dept: str,
        brand: str | None,
        noun: str,
        facets: dict[str, str],
        cues: list[str],
    ) -> str:
        n_sentences = rng.choices((0, 1, 2, 3), weights=(0.2, 0.3, 0.3, 0.2))[0]
        pool: list[str] = []
        if brand is not None:
            pool.append(f"The {noun.lower()} from {brand} is made for everyday use.")
        if "material" in facets:
            pool.append(f"Made from {facets['material'].lower()} for long-lasting quality.")
        if "color" in facets:
            pool.append(f"Available in {facets['color'].lower()} and other colors.")
        pool.extend(_USAGE[dept])
        rng.shuffle(pool)
        sentences = [*(f"{cue}." for cue in cues), *pool[:n_sentences]]
        if rng.random() < 0.025:  # a few very long descriptions
            boiler = list(_BOILERPLATE)
            rng.shuffle(boiler)
            sentences.extend(boiler * 2)
        return " ".join(sentences)

    @staticmethod
    def _description_zh(
        rng: random.Random, noun_zh: str, facets: dict[str, str], cues: list[str]
    ) -> str:
        n_sentences = rng.choices((0, 1, 2, 3), weights=(0.3, 0.3, 0.25, 0.15))[0]
        pool = list(_ZH_USAGE)
        if "material" in facets:
            mat = _ZH_VALUES.get(facets["material"], facets["material"])
            pool.append(f"这款{noun_zh}采用{mat}材质，经久耐用。")
        rng.shuffle(pool)
        return "".join([*(f"{cue}。" for cue in cues), *pool[:n_sentences]])


def generate_catalog(n_products: int = 2400, seed: int = 0) -> list[dict[str, Any]]:
    """Generate ``n_products`` demo products, deterministically for ``seed``.

    Each product is ``{"id": "demo-000123", "title": str, "description": str,
    "tags": list[str]}``; products are drawn in order, so a smaller catalog is a prefix of a
    larger one with the same seed.
    """
    if n_products < 0:
        raise ValueError(f"n_products must be >= 0, got {n_products}")
    rng = random.Random(seed)
    gen = _Generator()
    return [gen.product(rng, i) for i in range(n_products)]


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def write_catalog(products: list[dict[str, Any]], path: str | Path) -> Path:
    """Write products as JSON Lines (``.jsonl``/``.json``), Parquet or CSV (tags joined by "|")."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        with path.open("w", encoding="utf-8") as f:
            for product in products:
                f.write(json.dumps(product, ensure_ascii=False) + "\n")
    elif suffix == ".parquet":
        import pandas as pd

        columns = ("id", "title", "description", "tags")
        frame = pd.DataFrame({c: [p[c] for p in products] for c in columns})
        frame.to_parquet(path, index=False)
    elif suffix == ".csv":
        with path.open("w", encoding="utf-8", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(("id", "title", "description", "tags"))
            for p in products:
                writer.writerow((p["id"], p["title"], p["description"], "|".join(p["tags"])))
    else:
        raise ValueError(
            f"unsupported catalog extension {path.suffix!r} (jsonl, json, parquet, csv)"
        )
    return path


def split_of(product_id: str, valid_fraction: float = 0.15, test_fraction: float = 0.15) -> str:
    """Deterministic split ("train", "valid" or "test") from an MD5 hash of the product id."""
    bucket = int(hashlib.md5(product_id.encode("utf-8")).hexdigest(), 16) / float(1 << 128)
    if bucket < valid_fraction:
        return "valid"
    return "test" if bucket < valid_fraction + test_fraction else "train"


def write_demo(
    out_dir: str | Path,
    n_products: int = 2400,
    seed: int = 0,
    valid_fraction: float = 0.15,
    test_fraction: float = 0.15,
    force: bool = False,
) -> dict[str, Path]:
    """Generate the demo catalog and write ``train.jsonl``, ``valid.jsonl`` (tuning) and
    ``test.jsonl`` (held out: what evaluation and promotion measure) into ``out_dir``.

    An existing file of these is an error (:class:`FileExistsError`, before anything is
    written) unless ``force`` is true: then the files are overwritten."""
    if not (0.0 <= valid_fraction and 0.0 <= test_fraction and valid_fraction + test_fraction < 1):
        raise ValueError(
            f"valid_fraction and test_fraction must be >= 0 with a sum below 1,"
            f" got {valid_fraction} and {test_fraction}"
        )
    if Path(out_dir).exists() and not Path(out_dir).is_dir():
        raise ValueError(f"{out_dir}: is a file; the demo catalog needs a folder")
    out = Path(out_dir)
    targets = {name: out / f"{name}.jsonl" for name in DEMO_SPLITS}
    if not force:
        for target in targets.values():
            if target.exists() or target.is_symlink():
                raise FileExistsError(
                    f"{target} already exists; not overwriting it (--force or force=True"
                    " overwrites the demo files, or give another folder)"
                )
    products = generate_catalog(n_products, seed)
    parts: dict[str, list[dict[str, Any]]] = {name: [] for name in DEMO_SPLITS}
    for product in products:
        parts[split_of(product["id"], valid_fraction, test_fraction)].append(product)
    wanted = {"valid": valid_fraction, "test": test_fraction, "train": 1.0}
    empty = [name for name, items in parts.items() if not items and wanted.get(name, 1.0) > 0]
    if empty:  # training refuses an empty valid file: refused here, before anything is written
        raise ValueError(
            f"{n_products} demo products leave the {' and '.join(empty)} split empty;"
            " ask for more products"
        )
    return {name: write_catalog(items, targets[name]) for name, items in parts.items()}


def catalog_stats(products: list[dict[str, Any]]) -> dict[str, Any]:
    """Summary statistics: products, distinct tags, long-tail size, Chinese-title share."""
    counts = Counter(tag for p in products for tag in p["tags"])
    chinese = sum(any("\u4e00" <= ch <= "\u9fff" for ch in p["title"]) for p in products)
    n = max(len(products), 1)
    return {
        "products": len(products),
        "tags": len(counts),
        "tags_lt5": sum(c < 5 for c in counts.values()),
        "max_tag_count": max(counts.values(), default=0),
        "mean_tags_per_product": sum(counts.values()) / n,
        "chinese_title_share": chinese / n,
        "empty_descriptions": sum(not p["description"] for p in products) / n,
    }


def main(argv: list[str] | None = None) -> None:
    """CLI: ``python -m labelrec.demo OUT_DIR [--n-products N] [--seed S] [--force]``."""
    parser = argparse.ArgumentParser(description="Write the synthetic demo catalog.")
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--n-products", type=int, default=2400)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--valid-fraction", type=float, default=0.15)
    parser.add_argument("--test-fraction", type=float, default=0.15)
    parser.add_argument("--force", action="store_true", help="overwrite existing demo files")
    args = parser.parse_args(argv)
    try:
        paths = write_demo(
            args.out_dir,
            args.n_products,
            args.seed,
            args.valid_fraction,
            args.test_fraction,
            force=args.force,
        )
    except (ValueError, OSError) as err:
        parser.error(str(err))
    print(json.dumps({k: str(v) for k, v in paths.items()}))
    print(json.dumps(catalog_stats(generate_catalog(args.n_products, args.seed)), indent=2))


if __name__ == "__main__":
    main()
