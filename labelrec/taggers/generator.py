"""Generated tags: a LoRA-tuned decoder LLM writes a product's tags, one voter of the fusion.

The decoder learns to continue ``Product: <title>\\nDescription: ...\\nTags:`` with the product's
most specific tags (a category path implies its ancestors), separated by one separator token and
closed by the end token. Decoding is constrained by a prefix tree of the tokenized vocabulary
(a logits processor that masks what no tag can continue with): every finished beam is a list of
real tags. In the open mode a second, per-product tree adds facet values that are spans
of the title (``brand:`` + a span, for the facets whose values are verbatim in training titles),
so a brand never seen in training can come out; such tags come back as new (``known: false``).

Each of the ``num_beams`` beams is one tag list; its posterior among the beams (softmax of the
beams' total log-probabilities) is its vote, and a tag's score is the summed vote of the beams
that contain it or a descendant path. The fusion weight is tuned on valid like the others.

Decoding runs over a narrowed vocabulary: the tokens a tag can be written with (the tree's, the
separator, the end token, the batch's open spans) plus the batch's prompt tokens, the embedding
and the LM head cut to those rows for the batch. Every step's softmax then normalizes over the
tokens the product may write (its prompt's and other products' tokens masked), not over the
backbone's whole vocabulary: greedy decoding writes the same tags either way, beam scores differ
slightly. Every step's work over the vocabulary (head, softmax, constraint mask, top-k) shrinks
from the backbone's vocabulary (262k tokens for Gemma-3) to a few thousand.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from labelrec.causal import (
    LmExample,
    LmTrainSettings,
    causal_config,
    end_token_id,
    fit_causal_lm,
    load_causal_lm,
    load_saved_causal_lm,
    save_causal_lm,
)
from labelrec.data import Product, TagVocab, category_separator, fold_width
from labelrec.model import ModelError, recorded_backbone
from labelrec.modeldir import GENERATOR_DIR, remove_component
from labelrec.taggers.base import Evidence, TrainingSet

logger = logging.getLogger(__name__)

GENERATOR_FORMAT = 1
_END = -1  # key of a trie node's finished tag
_BELOW = -2  # key of a (non-root) trie node's tags: those finishing at it or further down
SEPARATOR_CANDIDATES = ("\n", ";", "|", ",")


def prompt_text(product: Product, description_chars: int) -> str:
    """The text the decoder continues with the product's tags."""
    text = f"Product: {product.title.strip()}"
    desc = (product.description or "").strip()
    if description_chars > 0 and desc:
        text += f"\nDescription: {desc[:description_chars]}"
    return text + "\nTags:"


def path_prefixes(tag: str, separator: str | None) -> list[str]:
    """``A > B > C`` -> ``[A, A > B]`` (the ancestors of a category path tag)."""
    if not separator or separator not in tag:
        return []
    parts = tag.split(separator)
    return [separator.join(parts[:i]) for i in range(1, len(parts))]


def most_specific(tags: list[str], separator: str | None) -> list[str]:
    """The tags that are not an ancestor path of another tag of the list, in order."""
    implied = {a for t in tags for a in path_prefixes(t, separator)}
    return [t for t in dict.fromkeys(tags) if t not in implied]


class TagTrie:
    """Token-id prefix tree of tags; a node's ``_END`` entry holds the tag finishing there, its
    ``_BELOW`` entry every tag finishing there or further down (so that decoding can leave out
    the branches of tags a sequence already holds)."""

    def __init__(self) -> None:
        self.root: dict[int, Any] = {}

    def add(self, ids: list[int], tag: str) -> None:
        node = self.root
        for tok in ids:
            node = node.setdefault(tok, {_BELOW: set()})
            node[_BELOW].add(tag)
        node.setdefault(_END, tag)


@dataclass
class Codec:
    """Tokenizer-bound encoding of prompts and tag lists."""

    tokenizer: Any
    separator_id: int
    end_id: int
    max_prompt_tokens: int
    description_chars: int

    @classmethod
    def for_tokenizer(cls, tokenizer: Any, max_prompt_tokens: int, description_chars: int) -> Codec:
        """Pick a separator that is one token (newline where the tokenizer has one)."""
        for sep in SEPARATOR_CANDIDATES:
            ids = tokenizer.encode(sep, add_special_tokens=False)
            if len(ids) == 1 and ids[0] != tokenizer.unk_token_id:
                return cls(
                    tokenizer, ids[0], end_token_id(tokenizer), max_prompt_tokens, description_chars
                )
        raise ModelError("the tokenizer has no single-token separator for tag lists")

    def tag_ids(self, tag: str) -> list[int]:
        return self.tokenizer.encode(" " + tag, add_special_tokens=False)

    def prompt_ids(self, product: Product) -> list[int]:
        ids = self.tokenizer.encode(prompt_text(product, self.description_chars))
        if ids and ids[-1] == self.end_id:  # BERT-style tokenizers close a text with [SEP]
            ids = ids[:-1]
        if len(ids) > self.max_prompt_tokens:  # keep the start (title) and the "Tags:" cue
            cue = self.tokenizer.encode("\nTags:", add_special_tokens=False)
            ids = ids[: self.max_prompt_tokens - len(cue)] + cue
        return ids

    def target_ids(self, tags: list[str]) -> list[int]:
        out: list[int] = []
        for i, tag in enumerate(tags):
            if i:
                out.append(self.separator_id)
            out += self.tag_ids(tag)
        return out + [self.end_id]


def open_kinds(products: list[Product], max_chars: int) -> list[dict[str, Any]]:
    """Facet prefixes (``brand:``) whose values are verbatim spans of training titles."""
    from labelrec.taggers.span import SpanTagger

    kinds = SpanTagger.find_kinds(products, max_chars)
    return [
        {"prefix": k.prefix, "lowercase": k.lowercase, "max_units": k.max_units}
        for k in kinds
        if k.prefix
    ]


def open_candidates(product: Product, kinds: list[dict[str, Any]], max_chars: int) -> list[str]:
    """Tags ``prefix + span of the title`` for the open facets, spans found as the span tagger
    finds them (``span.folded``: each character in its place) and cut from the title."""
    from labelrec.taggers.span import candidates, folded

    out: list[str] = []
    title, lowered = fold_width(product.title), folded(product.title)
    for kind in kinds:
        for start, end, _ in candidates(lowered, kind["max_units"], max_chars):
            text = lowered[start:end] if kind["lowercase"] else title[start:end]
            out.append(kind["prefix"] + text)
    return list(dict.fromkeys(out))


class TagGenerator:
    """A fine-tuned decoder and its constrained decoding over a tag vocabulary."""

    name: ClassVar[str] = "generator"
    needs_embeddings: ClassVar[bool] = False

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        vocab: TagVocab,
        meta: dict[str, Any],
        device: str = "cpu",
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.vocab = vocab
        self.meta = meta
        self.device = device
        self.codec = Codec.for_tokenizer(
            tokenizer, int(meta["max_prompt_tokens"]), int(meta["description_chars"])
        )
        self.separator = meta.get("path_separator")
        self.kinds: list[dict[str, Any]] = meta.get("open_kinds") or []
        self.max_chars = int(meta.get("span_max_chars", 16))
        self.weight = float(meta.get("weight", 0.0))
        self.new_weight = float(meta.get("new_weight", self.weight))
        self.new_threshold = float(meta.get("new_threshold", 1.0))
        self.num_beams = int(meta["num_beams"])
        self.max_new_tokens = int(meta["max_new_tokens"])
        self.batch_products = int(meta["batch_products"])
        self.history: list[dict[str, float]] = []  # of training, when fitted here
        self.trie = TagTrie()
        for tag in vocab.tags:
            self.trie.add(self.codec.tag_ids(tag), tag)
        self.tag_tokens = tag_tokens(self.codec, vocab)
        #: decode over the narrowed vocabulary (off: the backbone's whole vocabulary)
        self.narrow = not getattr(model.config, "final_logit_softcapping", None)
        self._lock = threading.Lock()  # a narrowed batch swaps the model's embedding and head

    # ------------------------------------------------------------------ decoding
    def _walk(self, tokens: list[int], local: TagTrie | None) -> tuple[list[str], list[dict]]:
        """Tags finished along ``tokens`` and the current (global, local) trie nodes."""
        g: dict | None = self.trie.root
        loc: dict | None = local.root if local is not None else None
        done: list[str] = []
        sep, end = self.codec.separator_id, self.codec.end_id
        for tok in tokens:
            ng = g.get(tok) if g is not None else None
            nl = loc.get(tok) if loc is not None else None
            if ng is None and nl is None:
                finished = _finished(g, loc)
                if finished is not None and tok in (sep, end):
                    done.append(finished)
                    if tok == end:
                        return done, []
                    g, loc = self.trie.root, local.root if local is not None else None
                    continue
                return done, []  # padding after the end, or off the tree
            g, loc = ng, nl
        return done, [n for n in (g, loc) if n is not None]

    def _allowed(self, tokens: list[int], local: TagTrie | None) -> list[int]:
        """The tokens that may follow ``tokens`` (written so far) under the trees."""
        done, nodes = self._walk(tokens, local)
        return self._allowed_at(nodes, done)

    def _allowed_at(self, nodes: list[dict], done: Collection[str] = ()) -> list[int]:
        """The tokens that may follow the current (global, local) tree ``nodes`` in a sequence
        that holds the tags ``done``: a tag is written once, so the branches whose every tag is
        done are closed, and a done tag cannot be finished again."""
        if not nodes:
            return [self.codec.end_id]
        allowed = {
            tok
            for node in nodes
            for tok, child in node.items()
            if tok >= 0 and _open(child[_BELOW], done)
        }
        finished = [node[_END] for node in nodes if _END in node]
        if any(tag not in done for tag in finished):
            allowed |= {self.codec.separator_id, self.codec.end_id}
        return sorted(allowed) or [self.codec.end_id]

    @torch.inference_mode()
    def generate(
        self, products: list[Product], progress: bool = False
    ) -> list[list[tuple[list[str], float]]]:
        """Per product, the beams: (tags in order, share of the beams' probability);
        ``progress`` shows a bar of products generated (beam search takes minutes on a CPU)."""
        out: list[list[tuple[list[str], float]]] = []
        bar = None
        if progress:
            from labelrec.progress import progress_bar

            bar = progress_bar(
                total=len(products), desc="generating tags", unit="product", leave=False
            )
        for start in range(0, len(products), self.batch_products):
            batch = products[start : start + self.batch_products]
            out += self._generate_batch(batch)
            if bar is not None:
                bar.update(len(batch))
        if bar is not None:
            bar.close()
        return out

    def _generate_batch(self, products: list[Product]) -> list[list[tuple[list[str], float]]]:
        locals_: list[TagTrie | None] = []
        own: list[set[int]] = []  # per product, the tokens of its open spans
        for product in products:
            local, tokens = None, set()
            if self.kinds:
                local = TagTrie()
                for tag in open_candidates(product, self.kinds, self.max_chars):
                    if tag not in self.vocab.index:
                        ids = self.codec.tag_ids(tag)
                        local.add(ids, tag)
                        tokens.update(ids)
            locals_.append(local)
            own.append(tokens)
        prompts = [self.codec.prompt_ids(p) for p in products]
        pad, end = self.tokenizer.pad_token_id, self.codec.end_id
        beams = self.num_beams
        keep: torch.Tensor | None = None
        mask: torch.Tensor | None = None
        to_new: dict[int, int] = {}
        if self.narrow:
            used = self.tag_tokens.union(*own, {pad}, *(set(p) for p in prompts))
            keep = torch.as_tensor(sorted(used))
            to_new = {t: i for i, t in enumerate(keep.tolist())}
            # per product, the tokens it may write: the tree's and its own open spans'
            writable = torch.full((len(products), len(keep)), float("-inf"))
            shared = torch.as_tensor([to_new[t] for t in sorted(self.tag_tokens)])
            for row, tokens in enumerate(own):
                writable[row, shared] = 0.0
                writable[row, [to_new[t] for t in tokens]] = 0.0
            mask = writable.repeat_interleave(beams, dim=0)  # rows: product-major, beams within
            prompts = [[to_new[t] for t in p] for p in prompts]
            pad, end = to_new[pad], to_new[end]
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), pad, dtype=torch.long)
        attention = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, p in enumerate(prompts):  # left padding: generation continues every row
            ids[row, width - len(p) :] = torch.as_tensor(p)
            attention[row, width - len(p) :] = 1

        from transformers import LogitsProcessorList

        constraint = _TrieConstraint(self, locals_, width, beams, keep, to_new)
        with self._lock, _narrowed(self.model, keep, mask):
            result = self.model.generate(
                input_ids=ids.to(self.device),
                attention_mask=attention.to(self.device),
                max_new_tokens=self.max_new_tokens,
                num_beams=beams,
                num_return_sequences=beams,
                do_sample=False,
                logits_processor=LogitsProcessorList([constraint]),
                eos_token_id=end,
                pad_token_id=pad,
                return_dict_in_generate=True,
                output_scores=beams > 1,
                use_cache=True,
            )
        written = result.sequences[:, width:].cpu()
        if keep is not None:  # back to the tokenizer's ids
            written = keep[written]
        pad, end = self.tokenizer.pad_token_id, self.codec.end_id
        seqs = written.tolist()
        if beams > 1:
            # sequences_scores are total log-probabilities / generated length (length_penalty 1)
            lengths = np.asarray([_gen_length(s, end, pad) for s in seqs], float)
            totals = result.sequences_scores.float().cpu().numpy() * lengths
        else:
            totals = np.zeros(len(seqs))
        out = []
        for i in range(len(products)):
            rows = range(i * beams, (i + 1) * beams)
            t = totals[list(rows)]
            w = np.exp(t - t.max())
            w /= w.sum()
            out.append(
                [
                    (self._beam_tags(seqs[r], locals_[i]), float(wr))
                    for r, wr in zip(rows, w, strict=True)
                ]
            )
        return out

    def _beam_tags(self, tokens: list[int], local: TagTrie | None) -> list[str]:
        """The tags of one generated sequence (a last tag cut by ``max_new_tokens`` counts when
        it is complete)."""
        done, nodes = self._walk(tokens, local)
        last = _finished(*(nodes + [None, None])[:2]) if nodes else None
        return list(dict.fromkeys(done + ([last] if last is not None else [])))

    def votes(
        self, products: list[Product], progress: bool = False
    ) -> tuple[np.ndarray, list[dict[str, float]]]:
        """Votes for vocabulary tags (n, n_tags) and for new tags per product, in [0, 1]."""
        known = np.zeros((len(products), len(self.vocab)), dtype=np.float32)
        new: list[dict[str, float]] = [{} for _ in products]
        if not products:
            return known, new
        for i, beams in enumerate(self.generate(products, progress)):
            for tags, w in beams:
                # in the beam's order (tied new tags keep it downstream, whatever the hash seed)
                paths = (a for t in tags for a in path_prefixes(t, self.separator))
                closure = dict.fromkeys([*tags, *paths])
                found = {tag: self.vocab.find(tag) for tag in closure}
                # a beam votes once a tag: "brand:HORNBY" (an open span) and brand:Hornby beside
                # it in one beam are one vote for brand:Hornby
                for j in {j for j in found.values() if j is not None}:
                    known[i, j] += w
                for tag in (tag for tag, j in found.items() if j is None):
                    new[i][tag] = new[i].get(tag, 0.0) + w
        np.clip(known, 0.0, 1.0, out=known)
        return known, [{t: min(v, 1.0) for t, v in row.items()} for row in new]

    def score(self, products: list[Product], embeddings: np.ndarray | None = None) -> Evidence:
        """``votes`` as the fusion takes it."""
        return Evidence(*self.votes(products))

    @classmethod
    def fit(cls, train: TrainingSet, cfg: Any) -> TagGenerator | None:
        """Fine-tune when ``generate.enabled`` (``fit_generator``); the training history is
        kept in ``history``."""
        if not cfg.generate.enabled:
            return None
        generator, history = fit_generator(
            cfg.generate,
            cfg.lexical,
            train.products,
            train.vocab,
            train.seed,
            train.progress,
            cfg.model.trust_remote_code,
            path_separator=category_separator(cfg),
        )
        generator.history = history
        return generator

    def with_vocab(self, vocab: TagVocab) -> TagGenerator:
        """The same decoder and settings, decoding over ``vocab`` (e.g. a refit's, with tags
        the decoder was not trained to write)."""
        tuned = {"weight": self.weight, "new_weight": self.new_weight}
        meta = {**self.meta, **tuned, "new_threshold": self.new_threshold, "n_tags": len(vocab)}
        return TagGenerator(self.model, self.tokenizer, vocab, meta, self.device)

    # ------------------------------------------------------------------ persistence
    def save(self, model_dir: str | Path) -> Path:
        """Write ``<model_dir>/generator`` (decoder weights, tokenizer, settings)."""
        out = Path(model_dir) / GENERATOR_DIR
        info = {**self.meta, "format_version": GENERATOR_FORMAT}
        info.update(
            weight=self.weight, new_weight=self.new_weight, new_threshold=self.new_threshold
        )
        save_causal_lm(self.model, self.tokenizer, out, info, dtype=info.get("dtype", "bfloat16"))
        return out

    @classmethod
    def load(
        cls, model_dir: str | Path, vocab: TagVocab, device: str = "cpu"
    ) -> TagGenerator | None:
        """The generator saved with a model, or None when it has none."""
        path = Path(model_dir) / GENERATOR_DIR
        if not path.is_dir():
            return None
        model, tokenizer, meta = load_saved_causal_lm(path, device)
        if meta.get("format_version", 0) > GENERATOR_FORMAT:
            raise ModelError(f"{path}: generator format is newer than this labelrec")
        if int(meta.get("n_tags", len(vocab))) != len(vocab):
            raise ModelError(
                f"{path}: generator trained for {meta['n_tags']} tags, not {len(vocab)}"
            )
        return cls(model, tokenizer, vocab, meta, device)


@dataclass
class _TrieConstraint:
    """The trees as one logits processor (called as a ``transformers.LogitsProcessor``).

    Each step copies the beams' written tokens to the host once, looks up the tokens allowed after
    each distinct pair of tree nodes once, and masks the rest in one write, where
    ``prefix_allowed_tokens_fn`` copies and indexes beam by beam (on a GPU, a device
    synchronisation per beam and step). ``keep``/``to_new``: the narrowed vocabulary's ids
    (None: the whole vocabulary).
    """

    generator: TagGenerator
    locals: list[TagTrie | None]  # per product, its tree of open spans
    width: int  # prompt columns before the written tokens
    beams: int
    keep: torch.Tensor | None
    to_new: dict[int, int]
    _columns: dict[tuple, torch.Tensor] = field(default_factory=dict, init=False)

    def allowed(self, row: int, written: list[int]) -> torch.Tensor:
        """Ids (in the decoding vocabulary) that beam ``row`` may write after ``written``."""
        done, nodes = self.generator._walk(written, self.locals[row // self.beams])
        # the trees live as long as this batch
        key = (tuple(id(node) for node in nodes), frozenset(done))
        cols = self._columns.get(key)
        if cols is None:
            toks = self.generator._allowed_at(nodes, done)
            if self.keep is not None:
                toks = [self.to_new[t] for t in toks]
            cols = self._columns[key] = torch.as_tensor(toks, dtype=torch.long)
        return cols

    def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        written = input_ids[:, self.width :].cpu()
        if self.keep is not None:  # back to the tokenizer's ids, which the trees hold
            written = self.keep[written]
        cols = [self.allowed(row, toks) for row, toks in enumerate(written.tolist())]
        rows = torch.repeat_interleave(
            torch.arange(len(cols)), torch.as_tensor([len(c) for c in cols])
        )
        mask = torch.full_like(scores, float("-inf"))
        mask[rows.to(scores.device), torch.cat(cols).to(scores.device)] = 0
        out = scores + mask
        # a product whose every beam has only -inf left keeps the constraint with scores of 0
        stuck = out.amax(dim=-1).isneginf().view(-1, self.beams).all(dim=-1, keepdim=True)
        return torch.where(stuck.repeat_interleave(self.beams, dim=0), mask, out)


class _NarrowHead(torch.nn.Module):
    """The LM head cut to ``keep``'s rows, and a mask per row (0 or -inf): what it may write.

    Rows are product-major with the beams within, as ``generate`` expands them."""

    def __init__(self, head: torch.nn.Module, keep: torch.Tensor, mask: torch.Tensor) -> None:
        super().__init__()
        self.weight = head.weight.detach()[keep.to(head.weight.device)]
        bias = getattr(head, "bias", None)
        self.bias = bias.detach()[keep.to(bias.device)] if bias is not None else None
        self.mask = mask.to(self.weight.device, self.weight.dtype)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        logits = torch.nn.functional.linear(hidden, self.weight, self.bias)
        if logits.shape[0] != self.mask.shape[0]:
            raise RuntimeError(f"narrowed head: {logits.shape[0]} rows, mask for {len(self.mask)}")
        return logits + self.mask.view(self.mask.shape[0], *([1] * (logits.dim() - 2)), -1)


@contextmanager
def _narrowed(model: Any, keep: torch.Tensor | None, mask: torch.Tensor | None) -> Iterator[None]:
    """``model`` with its embedding and LM head cut to the ids in ``keep`` (token ``keep[i]``
    becomes ``i``) while the block runs; ``keep`` None leaves it whole."""
    if keep is None or mask is None:
        yield
        return
    embedding, head = model.get_input_embeddings(), model.get_output_embeddings()
    whole = embedding.weight
    embedding.weight = torch.nn.Parameter(
        whole.detach()[keep.to(whole.device)], requires_grad=False
    )
    model.set_output_embeddings(_NarrowHead(head, keep, mask))
    # some transformers releases (5.17 for one) size beam search by the config's vocab_size
    text_config = model.config.get_text_config()
    vocab_size = text_config.vocab_size
    text_config.vocab_size = len(keep)
    try:
        yield
    finally:
        text_config.vocab_size = vocab_size
        embedding.weight = whole
        model.set_output_embeddings(head)


def _open(below: set[str], done: Collection[str]) -> bool:
    """Whether a branch holding the tags ``below`` has one that is not ``done``."""
    return len(below) > len(done) or any(tag not in done for tag in below)


def _finished(g: dict | None, loc: dict | None) -> str | None:
    for node in (g, loc):
        if node is not None and _END in node:
            return node[_END]
    return None


def _gen_length(seq: list[int], end: int, pad: int) -> int:
    """Generated tokens up to and including the end token."""
    for i, tok in enumerate(seq):
        if tok == end:
            return i + 1
    n = len(seq)
    while n > 1 and seq[n - 1] == pad:
        n -= 1
    return max(n, 1)


def save_generator(generator: TagGenerator | None, model_dir: str | Path) -> None:
    """Save ``generator`` into a model directory; None removes one of an earlier run."""
    if generator is None:
        remove_component(model_dir, TagGenerator.name)
        return
    generator.save(model_dir)


# ---------------------------------------------------------------------- training and tuning


def tag_tokens(codec: Codec, vocab: TagVocab) -> set[int]:
    """The tokens a tag list is written with: the tags', the separator and the end token."""
    tokens = {codec.separator_id, codec.end_id}
    for tag in vocab.tags:
        tokens.update(codec.tag_ids(tag))
    return tokens


def training_examples(
    codec: Codec, products: list[Product], vocab: TagVocab, separator: str | None
) -> list[LmExample]:
    """Prompt and target (most specific tags, vocabulary order) per product with tags."""
    examples = []
    for product in products:
        tags = most_specific([t for t in product.tags if t in vocab.index], separator)
        if tags:
            examples.append(LmExample(codec.prompt_ids(product), codec.target_ids(tags)))
    return examples


def _check_positions(config: Any, gcfg: Any) -> None:
    limit = getattr(config, "max_position_embeddings", None)
    need = gcfg.max_prompt_tokens + gcfg.max_new_tokens
    if limit is not None and need > int(limit):
        raise ModelError(
            f"generate.max_prompt_tokens + generate.max_new_tokens = {need} tokens is more than"
            f" the backbone's {limit} positions: lower them"
        )


def check_generator_backbone(gcfg: Any, trust_remote_code: bool = False) -> None:
    """Fail before any training, not after the tagger's: ``generate.backbone`` resolves to a
    decoder LLM (its config only, no weights) and the prompt and new tokens fit its positions."""
    _, config = causal_config(gcfg.backbone, "generate.backbone", trust_remote_code)
    _check_positions(config, gcfg)


def fit_generator(
    gcfg: Any,
    lexical_cfg: Any,
    train_products: list[Product],
    vocab: TagVocab,
    seed: int = 42,
    progress: bool = True,
    trust_remote_code: bool = False,
    path_separator: str | None = " > ",
) -> tuple[TagGenerator, list[dict[str, float]]]:
    """Fine-tune ``gcfg.backbone`` to write tag lists; returns the generator (weight 0 until
    tuned) and the training history. ``trust_remote_code``: ``model.trust_remote_code``;
    ``path_separator``: of category paths (``data.category_separator``), None for none."""
    products = list(train_products)
    if gcfg.max_train_products is not None and len(products) > gcfg.max_train_products:
        products = random.Random(seed).sample(products, gcfg.max_train_products)
    model, tokenizer = load_causal_lm(
        gcfg.backbone, "generate.backbone", gcfg.dtype, trust_remote_code
    )
    _check_positions(model.config, gcfg)
    meta: dict[str, Any] = {
        "backbone": recorded_backbone(gcfg.backbone),
        "trust_remote_code": trust_remote_code,
        "n_tags": len(vocab),
        "max_prompt_tokens": gcfg.max_prompt_tokens,
        "description_chars": gcfg.description_chars,
        "max_new_tokens": gcfg.max_new_tokens,
        "num_beams": gcfg.num_beams,
        "batch_products": gcfg.batch_products,
        "path_separator": path_separator,
        "span_max_chars": lexical_cfg.span_max_chars,
        "open_kinds": open_kinds(products, lexical_cfg.span_max_chars) if gcfg.open_vocab else [],
        "dtype": "bfloat16",
        "n_train": len(products),
    }
    codec = Codec.for_tokenizer(tokenizer, gcfg.max_prompt_tokens, gcfg.description_chars)
    examples = training_examples(codec, products, vocab, path_separator)
    settings = LmTrainSettings(
        epochs=gcfg.epochs,
        batch_size=gcfg.batch_size,
        lr=gcfg.lr,
        lora_r=gcfg.lora_r,
        lora_alpha=gcfg.lora_alpha,
        gradient_checkpointing=gcfg.gradient_checkpointing,
        mixed_precision=gcfg.mixed_precision,
        seed=seed,
        output_tokens=tuple(tag_tokens(codec, vocab)) if gcfg.narrow_training else None,
    )
    t0 = time.perf_counter()
    model, history = fit_causal_lm(model, tokenizer, examples, settings, progress, "generator")
    meta["train_seconds"] = time.perf_counter() - t0
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device)
    return TagGenerator(model, tokenizer, vocab, meta, device), history
