"""Edge behaviour on hand-made inputs: span tagger, reranker, describer text, config, batch
files, serving, opener, product index, neighbours, model card and generator."""

from __future__ import annotations

import numpy as np
import pytest
from test_span import catalog  # its toy brand catalog

from labelrec.data import Product, TagVocab

# ------------------------------------------------------------------ span tagger


def test_a_prefix_rarely_written_in_the_title_is_no_span_kind() -> None:
    from labelrec.taggers.span import SpanTagger

    products = catalog()
    # material:wood on 100 products, the word in 25 of their titles: 25 >= MIN_VERBATIM, 25% < 30%
    for i in range(100):
        title = f"Thing {i} wood" if i < 25 else f"Thing {i}"
        products.append(Product(f"m{i}", title, tags=["material:wood"]))
    kinds = [k.prefix for k in SpanTagger.find_kinds(products, 16)]
    assert kinds == ["brand:"]


def test_a_long_title_keeps_its_most_likely_new_tags() -> None:
    import random

    from labelrec.taggers.span import MAX_NEW_PER_PRODUCT, SpanTagger

    rng = random.Random(0)

    def word() -> str:
        return "".join(rng.choice("bcdfgklmnprstvz") + rng.choice("aeiou") for _ in range(3))

    train = []  # brands anywhere in the title: any unseen word may be one
    for i in range(80):
        words = [word() for _ in range(5)]
        train.append(Product(f"p{i}", " ".join(words), tags=[f"brand:{words[rng.randrange(5)]}"]))
    vocab = TagVocab.from_products(train)
    tagger = SpanTagger.build(train, vocab)
    query = Product("long", " ".join(word() for _ in range(60)))
    proposed = {t: p for t, p in tagger.probabilities([query])[0].items() if vocab.find(t) is None}
    assert len(proposed) > MAX_NEW_PER_PRODUCT
    _, new = tagger.known_and_new([query])
    assert len(new[0]) == MAX_NEW_PER_PRODUCT
    dropped = [p for t, p in proposed.items() if t not in new[0]]
    assert min(new[0].values()) >= max(dropped)  # the 30 most likely, not any 30


# ------------------------------------------------------------------ reranker


class _Fixed:
    """A classifier stub: predict_proba gives fixed probabilities, one per candidate row."""

    def __init__(self, p: list[float]) -> None:
        self.p = np.asarray(p)

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        assert len(x) == len(self.p)
        return np.stack([1 - self.p, self.p], axis=1)


def test_tags_outside_the_candidates_stay_below_every_reranked_one() -> None:
    from labelrec.rerank import Reranker, Votes

    products = [Product("1", "a b c d", tags=["a", "b", "c", "d"])]
    vocab = TagVocab.from_products(products)
    order = [vocab.index[t] for t in "abcd"]
    final = np.zeros((1, 4), dtype=np.float32)
    final[0, order] = [0.9, 0.8, 0.7, 0.05]
    votes = Votes(final=final, final_new=[{}], neural=final.copy(), fused=final.copy())
    rr = Reranker(_Fixed([0.1, 0.9]), {}, candidates=2, separator=None)
    known, new = rr.apply(products, vocab, votes)
    a, b, c, d = (float(known[0, j]) for j in order)
    assert (a, b) == pytest.approx((0.1, 0.9))  # the candidates get their probability
    assert max(c, d) < min(a, b)  # the others below the lowest candidate
    assert c > d > 0  # in their old order
    assert c <= 0.5 * 0.1 + 1e-6  # scaled into half of it
    assert new == [{}]


# ------------------------------------------------------------------ describer text


def test_trim_keeps_a_sentence_ending_exactly_at_half() -> None:
    from labelrec.describe import trim_to_sentence

    assert trim_to_sentence("Red car. It is f") == "Red car."  # 8 of 16 characters: kept


def test_trim_leaves_text_without_spaces_whole_even_with_a_comma() -> None:
    from labelrec.describe import trim_to_sentence

    assert trim_to_sentence("红色连衣裙夏季新款,舒适面料") == "红色连衣裙夏季新款,舒适面料"


def test_cap_chars_cuts_at_a_space_only_when_it_keeps_half() -> None:
    from labelrec.describe import cap_chars

    assert cap_chars("a bcdefghijkl", 10) == "a bcdefghi"  # the space at 1 would keep 1 of 10


def test_a_finished_text_that_ran_past_its_line_is_trimmed_to_a_sentence() -> None:
    """The decoder ended, but after a line break (it copied the prompt's next line): the first
    line is kept and trimmed like a cut text."""
    from types import SimpleNamespace

    import torch

    from labelrec.describe import Describer

    pieces = {10: " A red car.", 11: " Fast", 12: "\n", 13: "Description: x"}

    class Tok:
        pad_token_id = 0

        def decode(self, ids, skip_special_tokens=True):
            return "".join(pieces.get(i, "") for i in ids)

    class Model:
        def generate(self, input_ids, **kwargs):
            written = torch.tensor([[10, 11, 12, 13, 2]])
            return torch.cat([input_ids, written], dim=1)

    d = Describer.__new__(Describer)
    d.model, d.tokenizer, d.device, d.meta = Model(), Tok(), "cpu", {"penalize_prompt": True}
    d.codec = SimpleNamespace(end_id=2)
    assert d._generate_batch([[5, 6]], config=None) == ["A red car."]


def test_trim_prefers_the_last_clause_to_the_last_word() -> None:
    from labelrec.describe import trim_to_sentence

    assert trim_to_sentence("A red car with wheels, and a ro") == "A red car with wheels"


def test_penalties_for_the_written_text_only_leave_the_prompt_unpenalized() -> None:
    """penalize_prompt false: HF's own penalties (which count the prompt) are off; the written
    ones (``_written_penalties``) apply instead, not both."""
    from types import SimpleNamespace

    from labelrec.describe import Describer

    d = Describer.__new__(Describer)
    d.meta = {
        "max_new_tokens": 20,
        "min_new_tokens": 0,
        "num_beams": 1,
        "repetition_penalty": 1.3,
        "no_repeat_ngram_size": 3,
        "penalize_prompt": False,
    }
    d.codec, d.tokenizer = SimpleNamespace(end_id=2), SimpleNamespace(pad_token_id=0)
    config = d.generation_config()
    assert config.repetition_penalty == 1.0 and not config.no_repeat_ngram_size
    assert len(d._written_penalties(5)) == 2
    d.meta["penalize_prompt"] = True
    config = d.generation_config()
    assert config.repetition_penalty == 1.3 and config.no_repeat_ngram_size == 3


# ------------------------------------------------------------------ config


@pytest.mark.parametrize("typed", ["tab", "\\t"])
def test_a_tab_delimiter_can_be_typed_on_the_command_line(typed: str) -> None:
    from labelrec.config import load_config

    assert load_config(None, [f"data.csv_delimiter={typed}"]).data.csv_delimiter == "\t"


def test_names_of_spaces_alone_are_refused_but_a_space_separator_is_not() -> None:
    from labelrec.config import ConfigError, load_config

    for key in ("data.id_column", "data.title_column", "data.train"):
        with pytest.raises(ConfigError, match=key):
            load_config(None, [f"{key}=   "])
    assert load_config(None, ["data.tag_delimiter= "]).data.tag_delimiter == " "


def test_fusion_weights_may_not_add_up_past_one() -> None:
    from labelrec.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="lexical.embedding_weight"):
        load_config(None, ["lexical.weight=0.7", "lexical.embedding_weight=0.5"])
    load_config(None, ["lexical.weight=0.5", "lexical.embedding_weight=0.5"])


# ------------------------------------------------------------------ batch scoring


def _scorer(chunk):
    # a scorer that leaves "known" unmarked, as older scorers do
    return [[{"tag": "Toys", "score": 0.123456}] for _ in chunk]


def _catalog_file(path, n):
    import json

    path.write_text(
        "".join(json.dumps({"id": f"p{i}", "title": f"toy {i}"}) + "\n" for i in range(n)),
        encoding="utf-8",
    )
    return path


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_an_empty_catalog_gives_an_empty_valid_output(tmp_path, suffix) -> None:
    from labelrec.batch import score_file
    from labelrec.config import DataConfig

    src = tmp_path / "in.jsonl"
    src.write_text("", encoding="utf-8")
    out = tmp_path / f"out{suffix}"
    assert score_file(src, out, DataConfig(), _scorer) == 0
    assert out.is_file()
    if suffix == ".csv":
        assert out.read_text(encoding="utf-8").splitlines() == ["id,title,tags,scores,known"]
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        assert pq.read_table(out).num_rows == 0


def test_an_output_linked_to_the_input_is_refused(tmp_path) -> None:
    from labelrec.batch import score_file
    from labelrec.config import DataConfig

    src = _catalog_file(tmp_path / "in.jsonl", 3)
    before = src.read_text(encoding="utf-8")
    link = tmp_path / "link.jsonl"
    link.symlink_to(src)
    with pytest.raises(ValueError, match="the output is the input"):
        score_file(src, link, DataConfig(), _scorer)
    assert src.read_text(encoding="utf-8") == before


def test_csv_scores_keep_four_decimals_and_every_format_marks_tags_known(tmp_path) -> None:
    import json

    import pyarrow.parquet as pq

    from labelrec.batch import score_file
    from labelrec.config import DataConfig

    src = _catalog_file(tmp_path / "in.jsonl", 2)
    score_file(src, tmp_path / "o.csv", DataConfig(), _scorer)
    assert (tmp_path / "o.csv").read_text(encoding="utf-8").splitlines()[
        1
    ] == "p0,toy 0,Toys,0.1235,true"
    score_file(src, tmp_path / "o.parquet", DataConfig(), _scorer)
    rows = pq.read_table(tmp_path / "o.parquet").to_pylist()
    assert rows[0]["tags"] == [{"tag": "Toys", "score": pytest.approx(0.123456), "known": True}]
    score_file(src, tmp_path / "o.jsonl", DataConfig(), _scorer)  # JSON Lines say it too
    first = json.loads((tmp_path / "o.jsonl").read_text(encoding="utf-8").splitlines()[0])
    assert first["tags"] == [{"tag": "Toys", "score": 0.123456, "known": True}]


def test_progress_gets_each_chunks_count(tmp_path) -> None:
    from labelrec.batch import score_file
    from labelrec.config import DataConfig

    src = _catalog_file(tmp_path / "in.jsonl", 5)
    seen: list[int] = []
    assert score_file(src, tmp_path / "o.jsonl", DataConfig(), _scorer, 2, seen.append) == 5
    assert seen == [2, 2, 1]


# ------------------------------------------------------------------ micro-batcher


class _Recorder:
    def __init__(self) -> None:
        self.passes: list[list[str]] = []

    def score(self, texts):
        import time

        time.sleep(0.01)
        self.passes.append([t["title"] for t in texts])
        return np.zeros((len(texts), 1), np.float32), [{} for _ in texts]


def _snap(model, generation):
    import time

    from labelrec.serving import Snapshot

    return Snapshot(model, str(generation), {}, generation, time.time())


def test_requests_pinned_to_different_versions_are_never_scored_together() -> None:
    import asyncio

    from labelrec.serving import MicroBatcher

    old, new = _Recorder(), _Recorder()
    batcher = MicroBatcher(max_batch=64)

    async def main():
        calls = [
            batcher.score(_snap(old, 1) if i % 2 else _snap(new, 2), [{"title": f"{i % 2}-{i}"}])
            for i in range(10)
        ]
        await asyncio.gather(*calls)

    asyncio.run(main())
    assert sorted(t for p in old.passes for t in p) == sorted(f"1-{i}" for i in range(1, 10, 2))
    assert sorted(t for p in new.passes for t in p) == sorted(f"0-{i}" for i in range(0, 10, 2))


def test_a_pass_fills_up_to_max_batch_exactly() -> None:
    import asyncio

    from labelrec.serving import MicroBatcher

    model = _Recorder()
    batcher = MicroBatcher(max_batch=4)

    async def main():
        await asyncio.gather(
            *(
                batcher.score(_snap(model, 1), [{"title": f"{i}a"}, {"title": f"{i}b"}])
                for i in range(4)
            )
        )

    asyncio.run(main())
    assert [len(p) for p in model.passes] == [4, 4]


# ------------------------------------------------------------------ opener


def test_a_file_rewritten_at_the_same_size_is_a_new_version(tmp_path) -> None:
    import os

    from labelrec.opener import fingerprint

    (tmp_path / "thresholds.json").write_text('{"a": 0.1}', encoding="utf-8")
    before = fingerprint(tmp_path)
    (tmp_path / "thresholds.json").write_text('{"a": 0.9}', encoding="utf-8")  # same size
    st = (tmp_path / "thresholds.json").stat()
    os.utime(tmp_path / "thresholds.json", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert fingerprint(tmp_path) != before


def test_a_home_relative_model_path_is_expanded(tmp_path, monkeypatch) -> None:
    from labelrec.opener import local_path, resolve

    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "models" / "uk").mkdir(parents=True)
    assert local_path("~/models/uk") == tmp_path / "models" / "uk"
    assert resolve("~/models/uk").info["name"] == "uk"


# ------------------------------------------------------------------ product index


def test_top_k_keeps_scores_equal_to_the_minimum() -> None:
    from labelrec.recommend.index import top_k_sparse

    m = top_k_sparse(np.array([[0.5, 0.25, 0.125]], dtype=np.float32), 2, min_score=0.25)
    assert m.toarray().tolist() == [[0.5, 0.25, 0.0]]


def test_top_k_keeps_ties_at_the_cut_by_priority_then_column() -> None:
    from labelrec.recommend.index import top_k_sparse

    scores = np.array([[0.5, 0.25, 0.25, 0.25], [0.25, 0.5, 0.0, 0.25]], dtype=np.float32)
    by_column = top_k_sparse(scores, 2)
    assert by_column.toarray().tolist() == [[0.5, 0.25, 0, 0], [0.25, 0.5, 0, 0]]
    parents_first = top_k_sparse(scores, 2, priority=np.array([0, 2, 1, 0]))
    assert parents_first.toarray().tolist() == [[0.5, 0, 0, 0.25], [0.25, 0.5, 0, 0]]
    three = top_k_sparse(scores, 3, priority=np.array([0, 2, 1, 0]))
    assert three.toarray().tolist() == [[0.5, 0, 0.25, 0.25], [0.25, 0.5, 0, 0.25]]
    # without ties: the k largest of each row, as a full sort gives them
    rng = np.random.default_rng(0)
    scores = rng.random((50, 40)).astype(np.float32)
    got = top_k_sparse(scores, 7, min_score=0.3).toarray()
    want = np.zeros_like(scores)
    best = np.argsort(-scores, axis=1)[:, :7]
    np.put_along_axis(want, best, np.take_along_axis(scores, best, axis=1), axis=1)
    assert np.array_equal(got, np.where(want >= 0.3, want, 0))
    assert top_k_sparse(scores, 40).nnz == scores.size  # k covers every column


def test_a_score_at_the_threshold_is_carried_as_the_filters_count_it() -> None:
    from labelrec.recommend.index import ProductIndex

    index = ProductIndex(
        ["a"],
        ["x", "y"],
        np.array([[0.5, 0.25]], dtype=np.float32),
        titles=["t"],
        thresholds=np.full(2, 0.5),
        tag_counts=np.array([1, 1]),
        n_train_products=1,
    )
    assert index.filter_mask(["x"]).tolist() == [True]
    assert index.product(0)["tags"] == ["x"]


def test_tag_filter_hints_ignore_case() -> None:
    from labelrec.recommend.index import ProductIndex

    tags = ["Toys", "brand:Hornby", "brand:Lego"]
    index = ProductIndex(
        ["a"],
        tags,
        np.array([[0.9, 0.9, 0.0]], dtype=np.float32),
        titles=["t"],
        thresholds=np.full(3, 0.5),
        tag_counts=np.array([1, 1, 1]),
        n_train_products=1,
    )
    with pytest.raises(ValueError, match="did you mean 'brand:Hornby'"):
        index.filter_mask(["BRAND:HORNBI"])


# ------------------------------------------------------------------ model card


def test_a_nested_local_folder_is_not_named_as_a_hub_model() -> None:
    from labelrec.modelcard import tagger_card

    card = tagger_card({"backbone": "runs/dapt/final", "valid_metrics": {}}, "m")
    assert card.data.base_model is None


# ------------------------------------------------------------------ neighbours


def test_products_less_similar_than_unrelated_get_no_vote() -> None:
    import scipy.sparse as sp

    from labelrec.taggers.neighbours import neighbour_vote

    y = sp.csr_matrix(np.array([[1, 0], [0, 1]], dtype=np.float32))  # product 0: tag 0; 1: tag 1
    votes = neighbour_vote(np.array([[0.9, -0.5]], dtype=np.float32), k=2, power=2.0, y_train=y)
    assert votes.tolist() == [[1.0, 0.0]]


def test_similarity_power_sharpens_the_vote() -> None:
    import scipy.sparse as sp

    from labelrec.taggers.neighbours import neighbour_vote

    y = sp.csr_matrix(np.array([[1, 0], [0, 1]], dtype=np.float32))
    votes = neighbour_vote(np.array([[0.8, 0.4]], dtype=np.float32), k=2, power=2.0, y_train=y)
    np.testing.assert_allclose(votes, [[0.8, 0.2]], atol=1e-6)  # 0.64 : 0.16


def test_no_kind_proposes_spans_longer_than_its_values() -> None:
    """brand: values are one word (its max_units, the 99th percentile, is 1, though one brand of
    the training data has two): no two-word brand is proposed, while line: gets two words."""
    import random

    from labelrec.taggers.span import SpanTagger, split_tag, units

    rng = random.Random(0)

    def word() -> str:
        return "".join(rng.choice("bcdfgklmnprstvz") + rng.choice("aeiou") for _ in range(3))

    train = []
    for i in range(80):
        brand = f"{word()} {word()}" if i == 40 else word()
        a, b = word(), word()
        train.append(
            Product(f"p{i}", f"{brand} {a} {b} toy", tags=[f"brand:{brand}", f"line:{a} {b}"])
        )
    tagger = SpanTagger.build(train, TagVocab.from_products(train))
    kinds = {k.prefix: k.max_units for k in tagger.kinds}
    assert kinds == {"brand:": 1, "line:": 2}
    queries = [Product(f"q{i}", f"{word()} {word()} {word()} {word()} toy") for i in range(20)]
    proposed = [t for row in tagger.probabilities(queries) for t in row]
    assert any(t.startswith("line:") for t in proposed)
    for tag in proposed:
        prefix, value = split_tag(tag)
        assert len(units(value)) <= kinds[prefix], tag


# ------------------------------------------------------------------ generator


def test_open_candidates_of_a_lowercase_kind_are_lowercase() -> None:
    from labelrec.taggers.generator import open_candidates

    kinds = [{"prefix": "colour:", "lowercase": True, "max_units": 1}]
    assert open_candidates(Product("x", "Zorg RED Blaster"), kinds, 16) == [
        "colour:zorg",
        "colour:red",
        "colour:blaster",
    ]


def test_features_compare_each_candidate_to_the_products_best() -> None:
    from labelrec.rerank import FEATURES, Votes, candidates, features

    products = [Product("1", "red car", tags=["a", "b"])]
    vocab = TagVocab.from_products(products)
    final = np.zeros((1, 2), dtype=np.float32)
    final[0, vocab.index["a"]], final[0, vocab.index["b"]] = 0.8, 0.4
    votes = Votes(final=final, final_new=[{}], neural=final.copy(), fused=final.copy())
    cands = candidates(final, [{}], vocab, 2)
    x = features(products, votes, vocab, cands, None, {})
    np.testing.assert_allclose(x[:, FEATURES.index("final_vs_top")], [1.0, 0.5], atol=1e-6)
    np.testing.assert_allclose(x[:, FEATURES.index("final")], [0.8, 0.4], atol=1e-6)


def test_explanations_name_no_training_product_that_shares_nothing_with_the_title() -> None:
    from labelrec.taggers.neighbours import TfidfNeighbours

    train = [Product("a", "lego city", tags=["Toys"]), Product("b", "plush bear", tags=["Soft"])]
    vocab = TagVocab.from_products(train)
    tfidf = TfidfNeighbours.build(train, vocab.encode(train), k=5)
    soft = vocab.index["Soft"]
    found = tfidf.nearest_with_tag([Product("q", "lego city")], [[soft, vocab.index["Toys"]]])
    assert found[0][soft] == []  # "plush bear": similarity 0, no evidence
    assert [n["id"] for n in found[0][vocab.index["Toys"]]] == ["a"]


# ------------------------------------------------------------------ uploads and public text


def test_gzip_is_refused_for_parquet_uploads_only() -> None:
    from labelrec.batch import upload_suffix
    from labelrec.errors import ServiceError

    assert upload_suffix("Cat.CSV.gz") == ".csv.gz"
    for name in ("cat.parquet.gz", "cat.pq.gz", "cat.txt"):
        with pytest.raises(ServiceError) as err:
            upload_suffix(name)
        assert err.value.status == 415


def test_an_upload_exactly_at_the_cap_is_accepted(tmp_path) -> None:
    import gzip
    import io

    from labelrec.batch import gunzip_capped
    from labelrec.errors import ServiceError

    data = gzip.compress(b"x" * 1000)
    assert gunzip_capped(io.BytesIO(data), tmp_path / "a", "a.gz", 1000) == 1000
    with pytest.raises(ServiceError) as err:
        gunzip_capped(io.BytesIO(data), tmp_path / "b", "b.gz", 999)
    assert err.value.status == 413


def test_public_text_cuts_short_paths_too() -> None:
    from labelrec.serving import public_text

    assert public_text("model /models/uk refused") == "model …/uk refused"
    assert public_text("see /srv/models/uk/x.json") == "see …/x.json"


def test_a_csv_tag_holding_the_list_separator_reads_back_as_written(tmp_path) -> None:
    """ "brand:|MFG" is a tag of amazon_uk_toys: joined by "|" it would read as two, with the
    scores after it paired with the wrong tags."""
    import csv

    from labelrec.batch import score_file
    from labelrec.config import DataConfig
    from labelrec.data import tag_cell

    def scorer(products):
        return [
            [
                {"tag": "Hobbies", "score": 0.9},
                {"tag": "brand:|MFG", "score": 0.5},
                {"tag": "Toys", "score": 0.1},
            ]
            for _ in products
        ]

    src = _catalog_file(tmp_path / "in.jsonl", 1)
    score_file(src, tmp_path / "o.csv", DataConfig(), scorer)
    with (tmp_path / "o.csv").open(encoding="utf-8", newline="") as fh:
        row = list(csv.DictReader(fh))[0]
    assert tag_cell(row["tags"]) == ["Hobbies", "brand:|MFG", "Toys"]
    assert row["scores"].split("|") == ["0.9000", "0.5000", "0.1000"]


def test_a_shorter_list_is_the_start_of_a_longer_one_whatever_the_ties() -> None:
    """Identical products (variants) score alike: which of them a list keeps at its cut is the
    lower index, as inside the list."""
    from labelrec.recommend.backends import _top_indices

    rng = np.random.default_rng(0)
    for _ in range(200):
        values = rng.integers(0, 4, size=30).astype(np.float32)
        values[rng.integers(0, 30, size=3)] = np.nan
        longest = _top_indices(values, 30).tolist()
        assert len(longest) == int(np.isfinite(values).sum())
        for k in range(1, 30):
            assert _top_indices(values, k).tolist() == longest[:k]
    assert _top_indices(np.array([np.nan, 1.0, -np.inf]), 2).tolist() == [1]


def test_ties_among_rows_in_an_ann_indexs_order_go_to_the_lower_row() -> None:
    import scipy.sparse as sp

    from labelrec.recommend.backends import Scorer

    scorer = Scorer(sp.csr_matrix(np.ones((6, 2), dtype=np.float32)), None)  # six alike
    hits = scorer.hits(np.array([5, 2, 0, 3]), np.ones(2, dtype=np.float32), None, 1.0, 2)
    assert hits.rows.tolist() == [0, 2]
