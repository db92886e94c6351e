"""Rules that keep people in control of suggestions: tags never to suggest, variants merged into
one tag, the only tags allowed, and at most so many tags of a facet.

A rules file is YAML::

    deny: ["Books", "brand:Generic*"]        # never suggested (* any characters, ? one)
    rename: {"brand:LEGO": "brand:Lego"}      # a variant merged into one tag (the best score;
                                              # chains are followed, a cycle is an error)
    allow: ["brand:*", "Toys*"]               # when given: only tags matching one of these
                                              # (an empty list is an error)
    max_per_facet: {"brand:": 1}              # at most this many tags starting with the prefix

The same rules apply wherever suggestions are ranked (``TagRecommender.rank``): the CLI, batch
scoring, the service and the MLflow model. A model directory may carry its own ``rules.yaml``;
``--rules`` (CLI) and ``LABELREC_RULES`` (service) replace it. A request may narrow them further
with ``include`` and ``exclude`` patterns. A rule that matches none of the model's tags is
logged as a warning when the model loads (``Rules.unmatched``; patterns are case-sensitive).
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Container, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import yaml

from labelrec.config import load_yaml
from labelrec.data import clean_tag, fold_width, has_visible_text

_KEYS = ("deny", "rename", "allow", "max_per_facet")


class RulesError(ValueError):
    """A rules file that does not parse or holds a bad value (names the file, line and key).

    ``key`` is the rules key concerned and ``entry`` the list index or mapping key within it,
    when one is to blame.
    """

    def __init__(self, message: str, key: str | None = None, entry: Any = None) -> None:
        super().__init__(message)
        self.key = key
        self.entry = entry


class Ranked(Protocol):
    """A ranked tag (``predict.Suggestion``): a dataclass, so a renamed one is a copy."""

    tag: str
    score: float
    known: bool


def _patterns(patterns: Iterable[str]) -> re.Pattern[str] | None:
    """One regular expression matching any of the ``patterns`` (``pattern_regex``); None for
    none."""
    items = tuple(patterns)
    return _compiled(items) if items else None


def _listed(patterns: str | Iterable[str] | None) -> Iterable[str]:
    """A request's patterns: one string is one pattern (``"brand:*"``), not its characters."""
    return (patterns,) if isinstance(patterns, str) else patterns or ()


def pattern_regex(pattern: str) -> str:
    """A tag pattern as a regular expression of a whole tag: ``*`` any run of characters, ``?``
    one character, every other character itself (``[Sale]`` is that tag, not, as in a shell,
    one of the letters S, a, l, e)."""
    body = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return f"(?s:{body})\\Z"


@functools.lru_cache(maxsize=256)
def _compiled(patterns: tuple[str, ...]) -> re.Pattern[str]:
    # cached: a request's include / exclude patterns apply to each of its products in turn
    return re.compile("|".join(f"(?:{pattern_regex(p)})" for p in patterns))


def _line_of(text: str, key: str | None, entry: Any) -> int | None:
    """The 1-based line of ``key`` in a rules file (of its entry ``entry``, a list index or a
    mapping key, when given); None when it is not found."""
    if key is None:
        return None
    root = yaml.compose(text)
    if not isinstance(root, yaml.MappingNode):
        return None
    for key_node, value_node in root.value:
        if key_node.value != key:
            continue
        node = key_node
        if isinstance(value_node, yaml.SequenceNode) and isinstance(entry, int):
            if 0 <= entry < len(value_node.value):
                node = value_node.value[entry]
        elif isinstance(value_node, yaml.MappingNode) and entry is not None:
            for k, _ in value_node.value:
                if k.value == str(entry):
                    node = k
                    break
        return node.start_mark.line + 1
    return None


def _resolved(rename: dict[str, str], where: str) -> dict[str, str]:
    """``rename`` with chains followed to their end (A -> B, B -> C: A -> C); a cycle
    (A -> B, B -> A) is a ``RulesError``."""
    out = {}
    for start in rename:
        path = [start]
        while path[-1] in rename:
            target = rename[path[-1]]
            if target in path:
                if target == path[-1]:  # A -> A: nothing to rename
                    break
                chain = " -> ".join(repr(t) for t in [*path, target])
                raise RulesError(f"{where}rename: {chain}: a cycle", "rename", start)
            path.append(target)
        if path[-1] != start:
            out[start] = path[-1]
    return out


@dataclass
class Rules:
    """What may be suggested; see the module docstring for the file format."""

    deny: list[str] = field(default_factory=list)
    rename: dict[str, str] = field(default_factory=dict)
    allow: list[str] = field(default_factory=list)
    max_per_facet: dict[str, int] = field(default_factory=dict)
    source: str | None = None  # the file the rules came from

    def __post_init__(self) -> None:
        where = f"{self.source}: " if self.source else ""
        for key in ("deny", "allow"):
            value = getattr(self, key)
            if not isinstance(value, list):
                raise RulesError(
                    f"{where}{key}: expected a list of tag patterns, got {value!r}", key
                )
            for i, v in enumerate(value):
                if not (isinstance(v, str) and v):
                    raise RulesError(f"{where}{key}: expected a tag pattern, got {v!r}", key, i)
                if not clean_tag(v):  # "  ", a zero-width space: read as tags are, nothing
                    raise RulesError(f"{where}{key}: {v!r} is no tag once read as tags are", key, i)
        if not isinstance(self.rename, dict):
            raise RulesError(f"{where}rename: expected a mapping of tag -> tag", "rename")
        for k, v in self.rename.items():
            if not (isinstance(k, str) and isinstance(v, str) and clean_tag(k) and clean_tag(v)):
                raise RulesError(
                    f"{where}rename: {k!r}: {v!r}: expected a tag -> a tag", "rename", k
                )
        if not isinstance(self.max_per_facet, dict):
            raise RulesError(
                f"{where}max_per_facet: expected a mapping of prefix -> count >= 0",
                "max_per_facet",
            )
        for k, v in self.max_per_facet.items():
            if not (
                isinstance(k, str) and has_visible_text(k) and isinstance(v, int)
                and not isinstance(v, bool)
            ):  # fmt: skip
                raise RulesError(
                    f"{where}max_per_facet: {k!r}: {v!r}: expected a prefix -> a count",
                    "max_per_facet",
                    k,
                )
            if v < 0:
                raise RulesError(
                    f"{where}max_per_facet: {k!r}: {v}: a count must be >= 0", "max_per_facet", k
                )
        # tags as the catalog's are read (labelrec.data.clean_tag): a rule typed with 品牌：,
        # a trailing space or a no-break space applies to the tag it looks like; the prefixes
        # of max_per_facet only have their full-width forms folded (a space may end one)
        self.deny = [clean_tag(p) for p in self.deny]
        self.allow = [clean_tag(p) for p in self.allow]
        for key, clean in (("rename", clean_tag), ("max_per_facet", fold_width)):
            folded: dict[str, Any] = {}
            for k, v in getattr(self, key).items():
                if clean(k) in folded:  # 品牌：华为 and 品牌:华为 are one tag
                    raise RulesError(
                        f"{where}{key}: {k!r} is {clean(k)!r} once read as a catalog's tags"
                        " are, which the file names twice",
                        key,
                        k,
                    )
                folded[clean(k)] = clean(v) if key == "rename" else v
            setattr(self, key, folded)
        self._steps = set(self.rename) & set(self.rename.values())  # inside a chain
        self.rename = _resolved(self.rename, where)
        self._deny = _patterns(self.deny)
        self._allow = _patterns(self.allow)

    @classmethod
    def load(cls, path: str | Path) -> Rules:
        """Rules from a YAML file; a file that does not parse names its line."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as err:
            raise RulesError(f"rules file {path}: {err.strerror or err}") from None
        except UnicodeDecodeError as err:
            line = err.object[: err.start].count(b"\n") + 1
            raise RulesError(
                f"rules file {path}, line {line}: not valid UTF-8 ({err.reason}); save it as UTF-8"
            ) from None
        try:
            tree = load_yaml(text) or {}
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            line = f", line {mark.line + 1}" if mark is not None else ""
            problem = getattr(err, "problem", None) or str(err)
            raise RulesError(f"rules file {path}{line}: not valid YAML: {problem}") from None
        if not isinstance(tree, dict):
            raise RulesError(f"rules file {path}: expected a mapping with {', '.join(_KEYS)}")
        unknown = sorted(set(tree) - set(_KEYS), key=str)
        if unknown:
            line = _line_of(text, str(unknown[0]), None)
            where = f", line {line}" if line is not None else ""
            raise RulesError(
                f"rules file {path}{where}: unknown key {unknown[0]!r} (known: {', '.join(_KEYS)})"
            )
        values = {k: tree[k] for k in _KEYS if tree.get(k) is not None}
        try:
            if values.get("allow") == []:  # Rules() allows every tag without an allow list
                raise RulesError(
                    f"{path}: allow: an empty list would allow no tag; leave the key out to "
                    "allow every tag",
                    "allow",
                )
            return cls(**values, source=str(path))
        except RulesError as err:
            line = _line_of(text, err.key, err.entry)
            if line is None:
                raise
            message = str(err).replace(f"{path}: ", f"{path}, line {line}: ", 1)
            raise RulesError(message, err.key, err.entry) from None

    def unmatched(self, tags: Iterable[str]) -> list[str]:
        """The rules that match none of ``tags`` (a model's vocabulary), each with the tags it
        would match if case were ignored: usually a typo, or rules written for another catalog.
        Rules may still match new tags that a model proposes outside its vocabulary."""
        tags = list(tags)
        folded: dict[str, list[str]] = {}
        for t in tags:
            folded.setdefault(t.casefold(), []).append(t)

        def report(kind: str, rule: str, hits: Any, near: Any) -> str | None:
            if any(hits(t) for t in tags):
                return None
            close = sorted({t for f, ts in folded.items() if near(f) for t in ts})[:3]
            hint = f" (with another case: {', '.join(close)})" if close else ""
            return f"{kind} {rule!r} matches none of the model's {len(tags)} tags{hint}"

        found: list[str | None] = []
        for key in ("deny", "allow"):
            for pattern in getattr(self, key):
                rx = re.compile(pattern_regex(pattern))
                loose = re.compile(pattern_regex(pattern.casefold()))
                found.append(report(key, pattern, rx.match, loose.match))
        for source in self.rename:
            if source in self._steps:  # a step of a chain: tags renamed into it pass through
                continue
            found.append(report("rename", source, source.__eq__, source.casefold().__eq__))
        for prefix in self.max_per_facet:
            folded_prefix = prefix.casefold()
            found.append(
                report(
                    "max_per_facet",
                    prefix,
                    lambda t, x=prefix: t.startswith(x),
                    lambda f, x=folded_prefix: f.startswith(x),
                )
            )
        return [f for f in found if f]

    def allows(self, tag: str) -> bool:
        """False for a denied tag, or one outside ``allow`` when it is given."""
        if self._deny is not None and self._deny.match(tag):
            return False
        return self._allow is None or bool(self._allow.match(tag))

    def apply(
        self,
        ranked: Iterable[Ranked],
        include: Iterable[str] | None = None,
        exclude: Iterable[str] | None = None,
        vocab: Container[str] | None = None,
    ) -> list[Any]:
        """``ranked`` sorted best first (a stable sort), with variants renamed and merged (the
        best score stays), denied and disallowed tags removed (also those outside ``include`` or
        in ``exclude``, a request's own patterns), and each facet cut to its ``max_per_facet``.
        A renamed tag is ``known`` when it is in ``vocab`` (without one, it keeps the flag of
        the tag it renames)."""
        return self.first(sorted(ranked, key=lambda s: -s.score), None, include, exclude, vocab)

    def first(
        self,
        ranked: Iterable[Ranked],
        limit: int | None,
        include: Iterable[str] | None = None,
        exclude: Iterable[str] | None = None,
        vocab: Container[str] | None = None,
    ) -> list[Any]:
        """``apply`` on ``ranked`` that is already best first, up to ``limit`` tags (None: all):
        ``ranked`` is read only as far as the answer needs, so a lazy one spares building the
        candidates past it. The first of a tag's variants holds its best score."""
        # a request's patterns are read as the file's are: full-width forms as ASCII; one
        # string is one pattern, not a list of its characters
        inc = _patterns(clean_tag(p) for p in _listed(include))
        exc = _patterns(clean_tag(p) for p in _listed(exclude))
        seen: set[str] = set()
        out: list[Any] = []
        per_facet: dict[str, int] = {}
        if limit is not None and limit < 1:
            return out
        for item in ranked:
            tag = self.rename.get(item.tag, item.tag)
            if tag in seen:
                continue
            seen.add(tag)
            if tag != item.tag:
                known = item.known if vocab is None else tag in vocab
                item = dataclasses.replace(item, tag=tag, known=known)
            if not self.allows(tag):
                continue
            if (inc is not None and not inc.match(tag)) or (exc is not None and exc.match(tag)):
                continue
            facets = [p for p in self.max_per_facet if tag.startswith(p)]
            if any(per_facet.get(p, 0) >= self.max_per_facet[p] for p in facets):
                continue
            for p in facets:
                per_facet[p] = per_facet.get(p, 0) + 1
            out.append(item)
            if limit is not None and len(out) >= limit:
                break
        return out

    def violations(self, tags: list[str]) -> list[str]:
        """What in one product's suggested ``tags`` breaks these rules (for checks and tests)."""
        found = [f"{t}: denied or not allowed" for t in tags if not self.allows(t)]
        found += [f"{t}: should be {self.rename[t]}" for t in tags if t in self.rename]
        for prefix, most in self.max_per_facet.items():
            n = sum(t.startswith(prefix) for t in tags)
            if n > most:
                found.append(f"{prefix}: {n} tags, at most {most}")
        if len(set(tags)) < len(tags):
            found.append("a tag twice")
        return found
