"""Product descriptions: a LoRA-tuned decoder LLM writes a new listing's description.

The decoder learns to continue a prompt built from what a new listing has (its title, its
attributes as facet tags such as ``color:Blue``, its most specific categories)::

    Product: <title>
    color: Blue
    Category: Toys > Puzzles
    Description:

with the product's real description (whitespace collapsed; its first ``max_target_tokens``
tokens, then the end token when it was not cut). Products without a description are skipped in
training.

With ``describe.reference`` (the default) the prompt also shows the most similar training product
and the start of its description, before the cue::

    Similar product: <its title>
    Its description: <its first reference_chars characters>

so the decoder learns to copy that text and edit what differs (colour, brand, size) instead of
inventing. Similarity is TF-IDF cosine over titles (``NeighbourIndex``: word 1-2-grams and
character 2-5-grams, ``labelrec.taggers.neighbours.TfidfFeatures``) among all training products
that have a description; in training a product's reference is the most similar *other* product.
Repetition penalties then apply to the written text only, not to the prompt (copying is the point).

Generation runs in batches with the KV cache (left padding, greedy or beam search, with length
and repetition controls); a text cut by ``max_new_tokens`` is trimmed to its last full
sentence (so is a text that goes on past a line break: descriptions are learned as one line, and
a decoder that copied a reference to its end tends to copy the ``Description:`` cue next), and an
empty output is replaced by a sentence built from the title and tags (logged),
so ``describe`` never returns an empty string.

A trained describer is one self-contained directory (``save_causal_lm``: merged weights in bf16,
tokenizer, ``causal.json`` with ``kind: describer`` and its settings; with a reference also the
neighbour index: ``neighbours.json`` (TF-IDF vocabularies), ``neighbours.npz`` (idf weights) and
``neighbours.jsonl`` (training titles and descriptions), no pickle). A directory without them
(written before references existed) loads with the reference off. Quality is ROUGE-L F1 of
the first 60 words, lowercased, against the real description (``rouge_l_f1``).
"""

from __future__ import annotations

import copy
import itertools
import json
import logging
import random
import re
import time
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from labelrec.causal import (
    LmExample,
    LmTrainSettings,
    end_token_id,
    fit_causal_lm,
    load_causal_lm,
    load_saved_causal_lm,
    save_causal_lm,
)
from labelrec.config import DescribeConfig, typed_values
from labelrec.data import (
    CJK_RANGES,
    MAX_TAG_CHARS,
    MAX_TITLE_CHARS,
    Product,
    category_separator,
    clean_tag,
    clean_text,
    split_tag_string,
    unicode_problem,
)
from labelrec.metrics import paired_bootstrap
from labelrec.model import ModelError, recorded_backbone
from labelrec.modeldir import CARD_FILE, CAUSAL_INFO, load_whole, read_json
from labelrec.taggers.generator import most_specific
from labelrec.taggers.neighbours import TfidfFeatures, similarities

logger = logging.getLogger(__name__)

DESCRIBER_KIND = "describer"
DESCRIBER_FORMAT = 1
# Settings that act when text is written, not when the decoder learns: a loaded describer may
# change them (Describer.with_decoding) without training again.
DECODING = (
    "max_new_tokens",
    "min_new_tokens",
    "num_beams",
    "length_penalty",
    "repetition_penalty",
    "no_repeat_ngram_size",
    "batch_products",
)


def named_as(err: BaseException, name: Callable[[str], str]) -> str:
    """``err``'s text with each ``describe.<decoding setting>`` it names written as a front end
    names the setting (``--max-new-tokens``, ``decoding.max_new_tokens``)."""
    return re.sub(rf"\bdescribe\.({'|'.join(DECODING)})\b", lambda m: name(m.group(1)), str(err))


PROMPT_CUE = "\nDescription:"
INDEX_META = "neighbours.json"
INDEX_ARRAYS = "neighbours.npz"
INDEX_TEXTS = "neighbours.jsonl"
INDEX_FORMAT = 1
ROUGE_WORDS = 60
# A facet tag: a short key, a colon, a value ("color:Blue", "brand:Hornby", "品牌:华为").
_FACET = re.compile(r"^(\w[\w\- ]{0,23}):\s*(\S.*)$")
# A sentence end: ". ! ?" before a space or the end; "。！？" anywhere (Chinese needs no space).
_STOPS, _CJK_STOPS = ".!?", "。！？"
_SENTENCE_END = re.compile(rf"[{re.escape(_STOPS)}](?=\s|$)|[{_CJK_STOPS}]")
_CJK = CJK_RANGES
_ROUGE_TOKEN = re.compile(rf"[{_CJK}]|[^\W_{_CJK}]+")  # a CJK character is a token of its own
_WORD = re.compile(rf"[{_CJK}]|[^\s{_CJK}]+")  # a word: a CJK character, or text between spaces
_CJK_PUNCTUATION = re.compile("[\u3000-\u303f\uff00-\uffef]+")  # 。，、「」 and full-width forms

ProductLike = Product | Mapping[str, Any]
Reference = tuple[str, str]  # (title, description) of the most similar training product


# ---------------------------------------------------------------------- products and prompts


def as_product(item: ProductLike, position: int = 0, where: str | None = None) -> Product:
    """A ``Product`` from a Product or a mapping with ``title`` and optional ``tags`` (a list
    of strings, or one string with ``|`` between tags), ``id``, ``description``; ``ValueError``
    naming the product (``where``, else its ``position``) and field otherwise."""
    if isinstance(item, Product):
        return item
    where = where or f"product {position}"
    if not isinstance(item, Mapping):
        raise ValueError(f"{where}: expected an object, got {type(item).__name__}")
    title = item.get("title")
    if isinstance(title, str):  # read as catalogs and the tagger read it, cut as the tagger cuts
        title = clean_text(title[: 2 * MAX_TITLE_CHARS])[:MAX_TITLE_CHARS]
    if not isinstance(title, str) or not title:
        raise ValueError(f"{where}, field 'title': missing, empty or not a string")
    tags = item.get("tags") or []
    if isinstance(tags, str):
        tags = split_tag_string(tags)
    if not isinstance(tags, (list, tuple)) or not all(isinstance(t, str) for t in tags):
        raise ValueError(
            f"{where}, field 'tags': expected a list of strings or one string with '|' between tags"
        )
    description = item.get("description") or ""
    if not isinstance(description, str):
        raise ValueError(f"{where}, field 'description': expected a string")
    tags = [clean_tag(t) for t in tags]  # as catalogs read them (品牌：华为 is 品牌:华为)
    for field, text in (("title", title), *(("tags", t) for t in tags)):
        if (problem := unicode_problem(text)) is not None:
            raise ValueError(f"{where}, field '{field}': {problem}")
    if long := [t for t in tags if len(t) > MAX_TAG_CHARS]:
        raise ValueError(
            f"{where}, field 'tags': a tag of {len(long[0]):,} characters, over the"
            f" {MAX_TAG_CHARS} a tag may have"
        )
    pid = item.get("id")
    return Product(
        id="" if pid is None else str(pid),
        title=title,
        description=description,
        tags=[t for t in tags if t],
    )


def split_tags(
    tags: Sequence[str], separator: str | None
) -> tuple[dict[str, list[str]], list[str]]:
    """(attributes ``{key: [values]}`` from facet tags, most specific category tags)."""
    attributes: dict[str, list[str]] = {}
    categories: list[str] = []
    for tag in tags:
        match = _FACET.match(tag)
        if match and (not separator or separator not in tag):
            values = attributes.setdefault(match.group(1).strip(), [])
            if match.group(2) not in values:
                values.append(match.group(2).strip())
        else:
            categories.append(tag)
    return attributes, most_specific(categories, separator)


def prompt_text(
    product: Product,
    separator: str | None = " > ",
    max_tags: int = 12,
    reference: Reference | None = None,
    reference_chars: int = 400,
) -> str:
    """The text the decoder continues with the description."""
    text = product_lines(product, separator, max_tags)
    if reference is not None:
        text += reference_text(reference, reference_chars)
    return text + PROMPT_CUE


def reference_text(reference: Reference, chars: int = 400) -> str:
    """The prompt lines showing a similar product: ``\\nSimilar product: <title>\\nIts
    description: <its first chars characters, cut at a space>``."""
    title, description = reference
    return (
        f"\nSimilar product: {clean_text(title)}"
        f"\nIts description: {cap_chars(clean_description(description), chars)}"
    )


def cap_chars(text: str, chars: int) -> str:
    """``text`` cut to at most ``chars`` characters, at the last space when that keeps at least
    half (text without spaces, such as Chinese, is cut anywhere)."""
    if len(text) <= chars or text[chars].isspace():
        return text[:chars]
    cut = text[:chars]
    space = cut.rfind(" ")
    return cut[:space] if space >= chars // 2 else cut


def product_lines(product: Product, separator: str | None = " > ", max_tags: int = 12) -> str:
    """The product's own prompt lines: title, attribute lines, most specific categories."""
    attributes, categories = split_tags(product.tags, separator)
    lines = [f"Product: {clean_text(product.title)}"]
    shown = 0
    for key, values in attributes.items():
        if shown >= max_tags:
            break
        lines.append(f"{key}: {', '.join(values)}")
        shown += 1
    if categories and shown < max_tags:
        lines.append("Category: " + "; ".join(categories[: max_tags - shown]))
    return "\n".join(lines)


def fallback_description(product: Product, separator: str | None = " > ") -> str:
    """A plain sentence from the title and tags, for when the decoder writes nothing."""
    title = clean_text(product.title)
    attributes, categories = split_tags(product.tags, separator)
    text = title if title.endswith(tuple(_STOPS + _CJK_STOPS)) else f"{title}."
    for key, values in attributes.items():
        text += f" {key[:1].upper()}{key[1:]}: {', '.join(values)}."
    if categories:
        leaves = [c.split(separator)[-1].strip() if separator else c for c in categories]
        text += f" Category: {', '.join(dict.fromkeys(leaves))}."
    return text


def clean_description(text: str) -> str:
    """Read as catalogs read texts (``clean_text``): descriptions are one paragraph here."""
    return clean_text(text)


def trim_to_sentence(text: str) -> str:
    """A text cut by the token limit, trimmed after its last full sentence, else before its last
    clause (``,`` ``;`` ``:``), else before its last word (which the limit may have cut), taking
    the first of these that keeps at least half of it. A text without spaces (Chinese) keeps
    its words: only a sentence end trims it."""
    half = len(text) // 2
    ends = [m.end() for m in _SENTENCE_END.finditer(text)]
    if ends and ends[-1] >= half:
        return text[: ends[-1]]
    if " " not in text.strip():
        return text
    for cut in (max(text.rfind(c) for c in ",;:"), text.rstrip().rfind(" ")):
        if cut >= half:
            return text[:cut].rstrip(" ,;:-")
    return text


def first_line(text: str) -> tuple[str, bool]:
    """(the written text up to its first line break, whether there was one). Descriptions are
    learned as one line; a line break means the decoder went on past the description, copying
    the prompt's next line (``Description:`` after a reference)."""
    lines = text.strip().split("\n", 1)
    return lines[0], len(lines) > 1


@dataclass
class DescribeCodec:
    """Tokenizer-bound encoding of prompts and descriptions."""

    tokenizer: Any
    end_id: int
    max_prompt_tokens: int
    max_target_tokens: int
    max_tags: int
    separator: str | None
    bos: list[int]
    reference_chars: int = 400

    @classmethod
    def from_meta(cls, tokenizer: Any, meta: Mapping[str, Any]) -> DescribeCodec:
        return cls(
            tokenizer,
            end_token_id(tokenizer),
            int(meta["max_prompt_tokens"]),
            int(meta["max_target_tokens"]),
            int(meta["max_tags"]),
            meta.get("path_separator"),
            default_bos(tokenizer),
            int(meta.get("reference_chars", 400)),
        )

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False)

    def prompt_ids(self, product: Product, reference: Reference | None = None) -> list[int]:
        """BOS (when the tokenizer adds one), the prompt, cut to ``max_prompt_tokens`` keeping
        the start (the title) and the ``Description:`` cue; a reference is cut first."""
        if reference is None:
            ids = self.bos + self._encode(prompt_text(product, self.separator, self.max_tags))
            if len(ids) > self.max_prompt_tokens:
                cue = self._encode(PROMPT_CUE)
                ids = ids[: self.max_prompt_tokens - len(cue)] + cue
            return ids
        own = self.bos + self._encode(product_lines(product, self.separator, self.max_tags))
        cue = self._encode(PROMPT_CUE)
        room = self.max_prompt_tokens - len(cue)
        if len(own) >= room:
            return own[:room] + cue
        ref = self._encode(reference_text(reference, self.reference_chars))
        return own + ref[: room - len(own)] + cue

    def target_ids(self, description: str) -> list[int]:
        """The description's first ``max_target_tokens`` tokens; the end token when not cut."""
        ids = self._encode(" " + clean_description(description))
        if len(ids) > self.max_target_tokens:
            return ids[: self.max_target_tokens]
        return ids + [self.end_id]


def default_bos(tokenizer: Any) -> list[int]:
    """``[BOS]`` when the tokenizer starts its encodings with one (Llama, Gemma), else ``[]``
    (SmolLM2 adds none; BERT-style [CLS] ... [SEP] is not a decoder's start)."""
    bos = tokenizer.bos_token_id
    if bos is None or bos == end_token_id(tokenizer):
        return []
    return [bos] if tokenizer.encode("a")[:1] == [bos] else []


def check_lengths(model: Any, meta: Mapping[str, Any]) -> None:
    """``ModelError`` when prompt + text can exceed the backbone's positions."""
    limit = getattr(model.config, "max_position_embeddings", None)
    need = int(meta["max_prompt_tokens"]) + max(
        int(meta["max_target_tokens"]), int(meta["max_new_tokens"])
    )
    if limit is not None and need > int(limit):
        raise ModelError(
            f"describe.max_prompt_tokens + max(max_target_tokens, max_new_tokens) = {need} tokens"
            f" is more than the backbone's {limit} positions: lower them"
        )


# ---------------------------------------------------------------------- the neighbour index


def _what_is_wrong(err: Exception) -> str:
    """A saved file's part that is gone (``no 'tfidf'``) or of another type, in words."""
    return f"no {err}" if isinstance(err, KeyError) else f"{type(err).__name__}: {err}"


class NeighbourIndex:
    """Training products with a description, looked up by TF-IDF cosine over titles (word
    1-2-grams and character 2-5-grams, ``labelrec.taggers.neighbours.TfidfFeatures``)."""

    def __init__(
        self, features: TfidfFeatures, titles: Sequence[str], descriptions: Sequence[str]
    ) -> None:
        if len(titles) != len(descriptions):
            raise ValueError(f"{len(titles)} titles for {len(descriptions)} descriptions")
        self.features = features
        self.titles = list(titles)
        self.descriptions = list(descriptions)
        self._x_t = features.transform(self.titles).T.tocsr()  # (terms, products)

    @classmethod
    def fit(cls, products: Sequence[Product]) -> NeighbourIndex:
        """Index ``products`` (those with a description are the useful ones)."""
        titles = [clean_text(p.title) for p in products]
        features = TfidfFeatures(word_ngram_max=2, char_ngrams=(2, 5))
        features.fit_transform(titles)
        return cls(features, titles, [clean_description(p.description) for p in products])

    def __len__(self) -> int:
        return len(self.titles)

    def nearest(self, titles: Sequence[str], exclude: Sequence[int] | None = None) -> list[int]:
        """The position of the most similar indexed title per query title (first on ties);
        ``exclude[i]`` is a position query ``i`` may not get (itself, in training); -1 when no
        other indexed title shares a word or character n-gram with it (its description would
        be any product's)."""
        n, m = len(titles), len(self)
        if exclude is not None and len(exclude) != n:
            raise ValueError(f"{len(exclude)} positions to exclude for {n} titles")
        out: list[int] = []
        if n == 0:
            return out
        if m == 0:
            return [-1] * n
        for start, sim in self._similarities(titles):
            if exclude is not None:
                rows = np.arange(sim.shape[0])
                cols = np.asarray(exclude[start : start + sim.shape[0]], dtype=np.int64)
                ok = (cols >= 0) & (cols < m)
                sim[rows[ok], cols[ok]] = -np.inf
            best = sim.argmax(axis=1)
            found = sim[np.arange(sim.shape[0]), best] > 0  # -inf: excluded; 0: nothing shared
            out.extend(int(b) if f else -1 for b, f in zip(best, found, strict=True))
        return out

    def ranked(self, titles: Sequence[str], k: int) -> np.ndarray:
        """Positions of the ``k`` most similar indexed titles per query title, the most similar
        first (ties in index order): an (n, min(k, len(self))) array."""
        k = min(int(k), len(self))
        if not titles or k <= 0:
            return np.zeros((len(titles), max(k, 0)), dtype=np.int64)
        blocks = self._similarities(titles)
        return np.concatenate([np.argsort(-sim, axis=1, kind="stable")[:, :k] for _, sim in blocks])

    def _similarities(self, titles: Sequence[str]) -> Iterator[tuple[int, np.ndarray]]:
        """(first row, dense cosine similarities to every indexed title) for the query titles,
        in chunks of rows that keep each block near 20M floats."""
        x = self.features.transform([clean_text(t) for t in titles])
        chunk = max(1, min(1024, 20_000_000 // max(len(self), 1)))
        for start in range(0, len(titles), chunk):
            yield start, similarities(x[start : start + chunk], self._x_t)

    def references(
        self, titles: Sequence[str], exclude: Sequence[int] | None = None
    ) -> list[Reference | None]:
        """(title, description) of the nearest indexed product per title (see ``nearest``)."""
        return [
            (self.titles[i], self.descriptions[i]) if i >= 0 else None
            for i in self.nearest(titles, exclude)
        ]

    def save(self, directory: str | Path) -> None:
        """``neighbours.json`` (settings, vocabularies), ``neighbours.npz`` (idf weights),
        ``neighbours.jsonl`` (one ``{"title", "description"}`` per indexed product)."""
        directory = Path(directory)
        meta, arrays = self.features.state()
        meta = {"format_version": INDEX_FORMAT, "n_products": len(self), "tfidf": meta}
        (directory / INDEX_META).write_text(json.dumps(meta, ensure_ascii=False), "utf-8")
        np.savez_compressed(directory / INDEX_ARRAYS, **arrays)
        with (directory / INDEX_TEXTS).open("w", encoding="utf-8") as f:
            for title, description in zip(self.titles, self.descriptions, strict=True):
                row = {"title": title, "description": description}
                f.write(json.dumps(row, ensure_ascii=False) + "\n")

    @classmethod
    def load(cls, directory: str | Path) -> NeighbourIndex | None:
        """The index saved in ``directory``; None when there is none."""
        directory = Path(directory)
        meta_path = directory / INDEX_META
        if not meta_path.is_file():
            return None
        meta = read_json(meta_path)
        if not isinstance(meta, dict):
            raise ModelError(f"{meta_path}: not a JSON object; the describer directory is damaged")
        if int(meta.get("format_version", 0)) > INDEX_FORMAT:
            raise ModelError(f"{meta_path}: neighbour index format is newer than this labelrec")
        for name in (INDEX_ARRAYS, INDEX_TEXTS):
            if not (directory / name).is_file():
                raise ModelError(f"{directory}: {INDEX_META} without {name}: save it again")
        try:
            with np.load(directory / INDEX_ARRAYS, allow_pickle=False) as data:
                arrays = {name: data[name] for name in data.files}
        except (OSError, ValueError, zipfile.BadZipFile) as err:
            raise ModelError(
                f"{directory / INDEX_ARRAYS}: not a numpy archive ({type(err).__name__}); the"
                " describer directory is damaged"
            ) from None
        titles, descriptions = [], []
        with (directory / INDEX_TEXTS).open(encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                if line.strip():
                    try:
                        row = json.loads(line)
                        titles.append(row["title"])
                        descriptions.append(row["description"])
                    except (ValueError, KeyError, TypeError) as err:
                        raise ModelError(
                            f"{directory / INDEX_TEXTS}, line {number}: not a {{title,"
                            f" description}} object ({type(err).__name__}); the describer"
                            " directory is damaged"
                        ) from None
        try:
            expected = int(meta["n_products"])
            features = TfidfFeatures.from_state(meta["tfidf"], arrays)
        except (KeyError, TypeError, ValueError) as err:  # a part gone or of another type
            raise ModelError(
                f"{meta_path}: a part is missing or wrong ({_what_is_wrong(err)}); the describer"
                " directory is damaged"
            ) from None
        if len(titles) != expected:
            raise ModelError(
                f"{directory / INDEX_TEXTS}: {len(titles)} products, {INDEX_META} says {expected}"
            )
        return cls(features, titles, descriptions)


class _OnWritten:
    """A logits processor applied to the generated tokens only (after the padded prompt)."""

    def __init__(self, inner: Any, start: int) -> None:
        self.inner = inner
        self.start = start

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if input_ids.shape[1] <= self.start:
            return scores
        return self.inner(input_ids[:, self.start :], scores)


# ---------------------------------------------------------------------- the describer


class Describer:
    """A fine-tuned decoder that writes product descriptions."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        meta: dict[str, Any],
        device: str = "cpu",
        index: NeighbourIndex | None = None,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.meta = meta
        self.device = device
        self.index = index if meta.get("reference") else None  # None: no reference in prompts
        if meta.get("reference") and index is None:
            raise ModelError("a describer trained with a reference needs its neighbour index")
        self.codec = DescribeCodec.from_meta(tokenizer, meta)
        self.batch_products = int(meta.get("batch_products", 16))
        self.fallbacks = 0  # empty outputs replaced by the title-and-tags sentence, all calls
        check_lengths(model, meta)

    def generation_config(self) -> Any:
        """Decoding settings (not the backbone's own sampling defaults)."""
        from transformers import GenerationConfig

        m = self.meta
        beams = int(m["num_beams"])
        on_prompt = self.penalize_prompt
        return GenerationConfig(
            max_new_tokens=int(m["max_new_tokens"]),
            min_new_tokens=int(m["min_new_tokens"]) or None,
            num_beams=beams,
            length_penalty=float(m.get("length_penalty", 1.0)),
            repetition_penalty=float(m.get("repetition_penalty", 1.0)) if on_prompt else 1.0,
            no_repeat_ngram_size=int(m.get("no_repeat_ngram_size", 0)) if on_prompt else 0,
            do_sample=False,
            eos_token_id=self.codec.end_id,
            pad_token_id=self.tokenizer.pad_token_id,
            use_cache=True,
        )

    def with_decoding(self, **settings: int | float | None) -> Describer:
        """This describer writing with other decoding settings (``DECODING``; ``None`` keeps
        one), checked like ``describe.*`` in a config. It shares the weights and index; this
        describer and its saved directory are not changed."""
        unknown = sorted(set(settings) - set(DECODING))
        if unknown:
            raise ValueError(f"not a decoding setting: {', '.join(unknown)} (one of {DECODING})")
        merged = {k: self.meta[k] for k in DECODING if k in self.meta}
        given = {k: v for k, v in settings.items() if v is not None}
        merged.update(typed_values(DescribeConfig, given, "describe"))
        if settings.get("max_new_tokens") is not None and settings.get("min_new_tokens") is None:
            # a lower limit than training's brings the saved minimum down with it
            lowest = min(merged.get("min_new_tokens", 0), merged["max_new_tokens"])
            merged["min_new_tokens"] = lowest
        DescribeConfig(**merged)  # ConfigError naming describe.<setting>
        if given.get("length_penalty") not in (None, 1.0) and merged.get("num_beams", 1) == 1:
            raise ValueError(
                "describe.length_penalty: acts in beam search only; give num_beams of 2 or more"
                " with it (this describer writes greedily)"
            )
        meta = {**self.meta, **merged}
        limit = getattr(self.model.config, "max_position_embeddings", None)
        room = None if limit is None else int(limit) - int(meta["max_prompt_tokens"])
        if "max_new_tokens" in given and room is not None and merged["max_new_tokens"] > room:
            raise ValueError(
                f"describe.max_new_tokens: at most {room} for this describer (its prompts of up"
                f" to {meta['max_prompt_tokens']} tokens and the text fit the backbone's {limit}"
                " positions)"
            )
        check_lengths(self.model, meta)
        other = copy.copy(self)
        other.meta = meta
        other.batch_products = int(meta.get("batch_products", 16))
        return other

    @property
    def penalize_prompt(self) -> bool:
        """Whether repetition penalties also count the prompt's tokens (HF's default; describers
        trained without a reference) or only the written ones (with one: copying is wanted)."""
        return bool(self.meta.get("penalize_prompt", True))

    def _written_penalties(self, start: int) -> Any:
        """Repetition penalties on the tokens written after position ``start``."""
        from transformers import (
            LogitsProcessorList,
            NoRepeatNGramLogitsProcessor,
            RepetitionPenaltyLogitsProcessor,
        )

        processors = LogitsProcessorList()
        penalty = float(self.meta.get("repetition_penalty", 1.0))
        ngram = int(self.meta.get("no_repeat_ngram_size", 0))
        if penalty != 1.0:
            processors.append(_OnWritten(RepetitionPenaltyLogitsProcessor(penalty), start))
        if ngram > 0:
            processors.append(_OnWritten(NoRepeatNGramLogitsProcessor(ngram), start))
        return processors

    def references(self, products: Sequence[ProductLike]) -> list[Reference | None]:
        """The similar training product shown in each prompt (None without a reference)."""
        items = [as_product(p, i) for i, p in enumerate(products)]
        if self.index is None:
            return [None] * len(items)
        return self.index.references([p.title for p in items])

    def prompt_texts(self, products: Sequence[ProductLike]) -> list[str]:
        """The prompts the decoder continues (decoded, after truncation)."""
        items = [as_product(p, i) for i, p in enumerate(products)]
        refs = self.references(items)
        return [
            self.tokenizer.decode(self.codec.prompt_ids(p, r))
            for p, r in zip(items, refs, strict=True)
        ]

    @torch.inference_mode()
    def generate(self, products: Sequence[ProductLike]) -> list[str]:
        """The decoder's text per product ("" when it wrote nothing): no fallback."""
        items = [as_product(p, i) for i, p in enumerate(products)]
        refs = self.references(items)
        prompts = [self.codec.prompt_ids(p, r) for p, r in zip(items, refs, strict=True)]
        order = sorted(range(len(items)), key=lambda i: -len(prompts[i]))  # similar lengths
        out = [""] * len(items)
        config = self.generation_config()
        for start in range(0, len(order), self.batch_products):
            rows = order[start : start + self.batch_products]
            for i, text in zip(
                rows, self._generate_batch([prompts[i] for i in rows], config), strict=True
            ):
                out[i] = text
        return out

    def _generate_batch(self, prompts: list[list[int]], config: Any) -> list[str]:
        width = max(len(p) for p in prompts)
        pad = self.tokenizer.pad_token_id
        ids = torch.full((len(prompts), width), pad, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, p in enumerate(prompts):  # left padding: every row continues at the end
            ids[row, width - len(p) :] = torch.as_tensor(p)
            mask[row, width - len(p) :] = 1
        seqs = self.model.generate(
            input_ids=ids.to(self.device),
            attention_mask=mask.to(self.device),
            generation_config=config,
            logits_processor=None if self.penalize_prompt else self._written_penalties(width),
        )
        texts = []
        for seq in seqs[:, width:].cpu().tolist():
            finished = self.codec.end_id in seq
            if finished:
                seq = seq[: seq.index(self.codec.end_id)]
            text, ran_on = first_line(self.tokenizer.decode(seq, skip_special_tokens=True))
            text = clean_description(text)
            texts.append(text if finished and not ran_on else trim_to_sentence(text))
        return texts

    def describe(self, products: Sequence[ProductLike]) -> list[str]:
        """A description per product, never empty (see ``fallback_description``)."""
        items = [as_product(p, i) for i, p in enumerate(products)]
        texts = self.generate(items)
        empty = [i for i, t in enumerate(texts) if not t.strip()]
        for i in empty:
            texts[i] = fallback_description(items[i], self.codec.separator)
        if empty:
            self.fallbacks += len(empty)
            logger.warning(
                "describer: %d of %d generated descriptions were empty; wrote a sentence from"
                " the title and tags instead",
                len(empty),
                len(items),
            )
        return texts

    # ------------------------------------------------------------------ persistence
    def save(self, out_dir: str | Path) -> Path:
        """Write a self-contained describer directory (weights, tokenizer, settings, the
        neighbour index when prompts show a reference)."""
        info = {**self.meta, "kind": DESCRIBER_KIND, "format_version": DESCRIBER_FORMAT}

        def write_more(folder: Path) -> None:
            from labelrec.modelcard import describer_card

            if self.index is not None:
                self.index.save(folder)
            describer_card(info, Path(out_dir).resolve().name).save(folder / CARD_FILE)

        return save_causal_lm(
            self.model,
            self.tokenizer,
            out_dir,
            info,
            dtype=info.get("dtype", "bfloat16"),
            write_more=write_more,
        )

    @classmethod
    def load(cls, path: str | Path, device: str | None = None) -> Describer:
        """A describer directory written by ``save`` (``labelrec train`` with task: describe)."""
        path = Path(path)
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        # a training swapping the folder meanwhile is waited for (``modeldir.load_whole``), its
        # checks included: the folder is briefly absent while a new one takes its name
        return load_whole(path, CAUSAL_INFO, lambda: cls._read(path, device))

    @classmethod
    def _read(cls, path: Path, device: str) -> Describer:
        """``load``'s checks and reading of the files, once."""
        if not path.is_dir():
            raise ModelError(f"describer directory {path} does not exist")
        if (path / CAUSAL_INFO).is_file():
            read_json(path / CAUSAL_INFO)  # a damaged file is named as such, not as a stranger
        if not is_describer_dir(path):
            raise ModelError(
                f"{path} is not a describer directory (no {CAUSAL_INFO} with kind"
                f" '{DESCRIBER_KIND}'): train one with `labelrec train --config"
                " configs/describe.yaml`"
            )
        model, tokenizer, meta = load_saved_causal_lm(path, device)
        if int(meta.get("format_version", 0)) > DESCRIBER_FORMAT:
            raise ModelError(f"{path}: describer format is newer than this labelrec")
        index = None
        if meta.get("reference"):
            index = NeighbourIndex.load(path)
            if index is None:
                raise ModelError(
                    f"{path}: trained with a reference but {INDEX_META} is missing: save or"
                    " train it again"
                )
        try:
            describer = cls(model, tokenizer, meta, device, index)
            describer.generation_config()  # its decoding settings read now, not at a product
        except (KeyError, TypeError, ValueError) as err:  # a setting gone or of another type
            raise ModelError(
                f"{path / CAUSAL_INFO}: a setting is missing or wrong ({_what_is_wrong(err)});"
                " the describer directory is damaged"
            ) from None
        return describer


def is_describer_dir(path: str | Path) -> bool:
    """True for a directory written by ``Describer.save``."""
    info = Path(path) / CAUSAL_INFO
    if not info.is_file():
        return False
    try:
        meta = json.loads(info.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and meta.get("kind") == DESCRIBER_KIND


# ---------------------------------------------------------------------- training


def fit_describer(
    dcfg: Any,
    train_products: Sequence[Product],
    seed: int = 42,
    progress: bool = True,
    path_separator: str | None = " > ",
    on_epoch: Callable[[dict[str, float]], None] | None = None,
    trust_remote_code: bool = False,
) -> tuple[Describer, list[dict[str, float]]]:
    """Fine-tune ``dcfg.backbone`` (a ``DescribeConfig``) to write the descriptions of
    ``train_products``; returns the describer and the per-epoch history.
    ``trust_remote_code``: ``model.trust_remote_code``."""
    with_text = [p for p in train_products if p.description.strip()]
    skipped = len(train_products) - len(with_text)
    if skipped:
        logger.info(
            "describer: %d of %d training products have no description: skipped",
            skipped,
            len(train_products),
        )
    if not with_text:
        raise ValueError(
            f"none of the {len(train_products)} training products has a description"
            " (data.description_column): nothing to learn to write"
        )
    chosen = list(range(len(with_text)))
    if dcfg.max_train_products is not None and len(chosen) > dcfg.max_train_products:
        chosen = random.Random(seed).sample(chosen, dcfg.max_train_products)
    products = [with_text[i] for i in chosen]
    index, refs = None, [None] * len(products)
    if dcfg.reference:  # every product with a description can be a reference, not just the subset
        t0 = time.perf_counter()
        index = NeighbourIndex.fit(with_text)
        refs = index.references([p.title for p in products], exclude=chosen)
        logger.info(
            "describer: neighbour index of %d products (%.1f s)",
            len(index),
            time.perf_counter() - t0,
        )
    model, tokenizer = load_causal_lm(
        dcfg.backbone, "describe.backbone", dcfg.dtype, trust_remote_code
    )
    meta: dict[str, Any] = {
        "kind": DESCRIBER_KIND,
        "backbone": recorded_backbone(dcfg.backbone),
        "trust_remote_code": trust_remote_code,
        "path_separator": path_separator,
        "max_prompt_tokens": dcfg.max_prompt_tokens,
        "max_tags": dcfg.max_tags,
        "max_target_tokens": dcfg.max_target_tokens,
        "reference": index is not None,
        "reference_chars": dcfg.reference_chars,
        "penalize_prompt": index is None,
        "n_indexed": len(index) if index is not None else 0,
        "max_new_tokens": dcfg.max_new_tokens,
        "min_new_tokens": dcfg.min_new_tokens,
        "num_beams": dcfg.num_beams,
        "length_penalty": dcfg.length_penalty,
        "repetition_penalty": dcfg.repetition_penalty,
        "no_repeat_ngram_size": dcfg.no_repeat_ngram_size,
        "batch_products": dcfg.batch_products,
        "dtype": "bfloat16",
        "n_train": len(products),
        "n_skipped_no_description": skipped,
    }
    check_lengths(model, meta)
    codec = DescribeCodec.from_meta(tokenizer, meta)
    examples = [
        LmExample(codec.prompt_ids(p, r), codec.target_ids(p.description))
        for p, r in zip(products, refs, strict=True)
    ]
    settings = LmTrainSettings(
        epochs=dcfg.epochs,
        batch_size=dcfg.batch_size,
        lr=dcfg.lr,
        lora_r=dcfg.lora_r,
        lora_alpha=dcfg.lora_alpha,
        gradient_checkpointing=dcfg.gradient_checkpointing,
        mixed_precision=dcfg.mixed_precision,
        seed=seed,
        max_steps=dcfg.max_steps,
    )
    t0 = time.perf_counter()
    model, history = fit_causal_lm(
        model, tokenizer, examples, settings, progress, "describer", on_epoch
    )
    meta["train_seconds"] = time.perf_counter() - t0
    meta["train_products_per_s"] = float(history[-1]["products_per_s"]) if history else 0.0
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device)
    return Describer(model, tokenizer, meta, device, index), history


# ---------------------------------------------------------------------- quality


class _RougeTokenizer:
    """Lowercased words of letters and digits, each CJK character a word (rouge-score's own
    tokenizer keeps ``[a-z0-9]`` only, which drops accented and non-Latin text)."""

    def tokenize(self, text: str) -> list[str]:
        return _ROUGE_TOKEN.findall(text.lower())


def first_words(text: str, n: int = ROUGE_WORDS) -> str:
    """The first ``n`` words, lowercased: text between spaces, each CJK character a word of its
    own (Chinese writes no spaces), as ROUGE-L tokenizes it; Chinese punctuation between them
    is no word."""
    words = (w for w in _WORD.findall(text.lower()) if not _CJK_PUNCTUATION.fullmatch(w))
    return " ".join(itertools.islice(words, n))


def rouge_l_scores(
    predictions: Sequence[str], references: Sequence[str], max_words: int = ROUGE_WORDS
) -> list[float]:
    """ROUGE-L F1 per pair on the first ``max_words`` words, lowercased (``rouge-score``)."""
    try:
        from rouge_score import rouge_scorer
    except ImportError:
        raise ImportError(
            "ROUGE-L needs the rouge-score package: pip install 'labelrec[bench]'"
        ) from None
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    scorer = rouge_scorer.RougeScorer(["rougeL"], tokenizer=_RougeTokenizer())
    return [
        float(
            scorer.score(first_words(ref, max_words), first_words(pred, max_words))[
                "rougeL"
            ].fmeasure
        )
        for pred, ref in zip(predictions, references, strict=True)
    ]


def rouge_l_f1(
    predictions: Sequence[str], references: Sequence[str], max_words: int = ROUGE_WORDS
) -> float:
    """Mean ROUGE-L F1 (first ``max_words`` words, lowercased); 0 for no pairs."""
    scores = rouge_l_scores(predictions, references, max_words)
    return sum(scores) / len(scores) if scores else 0.0


def evaluate_describer(
    describer: Describer, products: Sequence[Product], limit: int | None = None
) -> dict[str, float]:
    """ROUGE-L F1 against the real descriptions of (the first ``limit``) products that have one,
    empty outputs before the fallback, and generation speed. With a reference, also the baseline
    of copying the reference (the nearest training product's description) and the describer's
    gain over it, with a paired bootstrap 95% interval (``gain_low``, ``gain_high``)."""
    items = [p for p in products if p.description.strip()]
    if limit is not None:
        items = items[:limit]
    if not items:
        return {"n_products": 0.0}
    t0 = time.perf_counter()
    raw = describer.generate(items)
    seconds = time.perf_counter() - t0
    final = [
        t if t.strip() else fallback_description(p, describer.codec.separator)
        for t, p in zip(raw, items, strict=True)
    ]
    out = {
        "n_products": float(len(items)),
        "empty_outputs": float(sum(not t.strip() for t in raw)),
        "products_per_s": len(items) / max(seconds, 1e-9),
        "mean_words": sum(len(t.split()) for t in final) / len(final),
    }
    refs = [p.description for p in items]
    try:
        if describer.index is None:
            out["rougeL_f1"] = rouge_l_f1(final, refs)
        else:
            copied = [r[1] if r else "" for r in describer.references(items)]
            out.update(against_copying(final, copied, refs))
    except ImportError as err:
        logger.warning("describer: no ROUGE-L reported: %s", err)
    return out


def against_copying(
    texts: Sequence[str], copied: Sequence[str], references: Sequence[str], seed: int = 0
) -> dict[str, float]:
    """Mean ROUGE-L F1 of written texts (``rougeL_f1``) and of copied ones
    (``rougeL_copy_nearest``) against the real descriptions, and the gain of writing over
    copying with a paired bootstrap 95% interval (``rougeL_gain``, ``_low``, ``_high``)."""
    scores = rouge_l_scores(texts, references)
    copies = rouge_l_scores(copied, references)
    gain = paired_bootstrap(scores, copies, n_resamples=2000, seed=seed)
    return {
        "rougeL_f1": float(np.mean(scores)),
        "rougeL_copy_nearest": float(np.mean(copies)),
        "rougeL_gain": gain["mean_diff"],
        "rougeL_gain_low": gain["low"],
        "rougeL_gain_high": gain["high"],
    }


# ---------------------------------------------------------------------- labelrec train


def train_describer(
    cfg: Any, resume: bool = False, tracker: Any = None, progress: bool = True
) -> Any:
    """``labelrec train`` with ``task: describe``: fit, report valid metrics, save to
    ``cfg.output``. Returns a ``labelrec.runs.TrainResult`` (``n_tags`` 0)."""
    from labelrec.config import config_to_dict, flatten
    from labelrec.model import process_state
    from labelrec.runs import NullTracker, TrainResult, load_splits

    if resume:
        raise ValueError("--resume is not supported with task: describe; train again instead")
    main = process_state().is_main_process  # under `accelerate launch`, one of several
    if not main:  # one log of the epochs, not one each
        logging.getLogger("labelrec").setLevel(logging.WARNING)
    tracker = tracker if tracker is not None and main else NullTracker()
    dcfg = cfg.describe
    splits = load_splits(cfg, require_tags=False)
    if splits.train and not any(p.tags for p in splits.train):
        logger.warning(
            "describer: no training product has a tag in data.tag_columns=%s: it learns to write"
            " from titles alone (a misspelt column name?)",
            cfg.data.tag_columns,
        )
    tracker.log_params(flatten(config_to_dict(cfg)))
    tracker.log_dataset("train", splits.train_source, splits.train, 0)
    tracker.log_dataset("valid", splits.valid_source, splits.valid, 0)
    separator = category_separator(cfg)

    def on_epoch(record: dict[str, float]) -> None:
        tracker.log_metrics(
            {"train_loss": record["loss"], "train_products_per_s": record["products_per_s"]},
            step=int(record["epoch"]),
        )

    describer, history = fit_describer(
        dcfg,
        splits.train,
        cfg.seed,
        progress,
        separator,
        on_epoch,
        cfg.model.trust_remote_code,
    )
    if not main:  # the main process evaluates and saves the describer all processes trained
        return TrainResult(
            output=Path(cfg.output),
            metrics={},
            history=history,
            best_epoch=len(history),
            train_seconds=float(describer.meta["train_seconds"]),
            n_tags=0,
        )
    result: dict[str, float] = {
        "train_seconds": float(describer.meta["train_seconds"]),
        "train_products_per_s": float(describer.meta["train_products_per_s"]),
        "loss": float(history[-1]["loss"]),  # logged as final_loss
        "n_train": float(describer.meta["n_train"]),
        "n_skipped_no_description": float(describer.meta["n_skipped_no_description"]),
    }
    if dcfg.eval_products != 0 and splits.valid:
        valid = evaluate_describer(describer, splits.valid, dcfg.eval_products)
        result.update({f"valid_{k}": v for k, v in valid.items()})
        if not valid.get("n_products"):
            logger.warning("describer: no valid product has a description to compare with")
        else:
            logger.info(
                "describer: valid ROUGE-L F1 %.4f on %d products, %d empty",
                valid.get("rougeL_f1", float("nan")),
                int(valid["n_products"]),
                int(valid.get("empty_outputs", 0)),
            )
    describer.meta["valid_metrics"] = result
    describer.meta["history"] = history
    output = describer.save(cfg.output)
    tracker.log_metrics({f"final_{k}": v for k, v in result.items()})
    return TrainResult(
        output=output,
        metrics=result,
        history=history,
        best_epoch=len(history),
        train_seconds=result["train_seconds"],
        n_tags=0,
    )
