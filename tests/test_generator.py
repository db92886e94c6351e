"""The tag generator: constrained decoding over the vocabulary, votes, fusion, train/save/load."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import toy_catalog, write_jsonl

from labelrec.config import ConfigError, GenerateConfig, LexicalConfig, load_config
from labelrec.data import Product, TagVocab
from labelrec.fusion import blend, tune_generator
from labelrec.taggers import Tagger, TrainingSet
from labelrec.taggers.generator import (
    TagGenerator,
    TagTrie,
    fit_generator,
    most_specific,
    open_candidates,
    path_prefixes,
    tag_tokens,
    training_examples,
)


@pytest.fixture(scope="module")
def products() -> list[Product]:
    return [Product(**row) for row in toy_catalog(6)]


@pytest.fixture(scope="module")
def vocab(products: list[Product]) -> TagVocab:
    return TagVocab.from_products(products)


@pytest.fixture(scope="module")
def generator(tiny_decoder: Path, products: list[Product], vocab: TagVocab) -> TagGenerator:
    gcfg = GenerateConfig(
        enabled=True, backbone=str(tiny_decoder), epochs=1, batch_size=8, num_beams=3
    )
    gen, history = fit_generator(gcfg, LexicalConfig(), products, vocab, progress=False)
    assert history and history[0]["loss"] > 0
    assert history[0]["train_flops_per_s"] > 0  # counted by torch (labelrec.flops)
    return gen


def test_paths_and_most_specific_tags():
    assert path_prefixes("A > B > C", " > ") == ["A", "A > B"]
    assert path_prefixes("brand:Lego", " > ") == []
    assert path_prefixes("A > B", None) == []
    tags = ["Toys", "Toys > Building", "brand:Lego", "Toys > Building"]
    assert most_specific(tags, " > ") == ["Toys > Building", "brand:Lego"]
    assert most_specific(tags, None) == ["Toys", "Toys > Building", "brand:Lego"]


def test_codec_targets_join_tags_with_one_separator_and_end(generator: TagGenerator):
    codec = generator.codec
    ids = codec.target_ids(["Toys", "brand:Lego"])
    assert ids[-1] == codec.end_id
    assert ids.count(codec.separator_id) == 1
    assert ids == codec.tag_ids("Toys") + [codec.separator_id] + codec.tag_ids("brand:Lego") + [
        codec.end_id
    ]
    assert codec.separator_id != generator.tokenizer.unk_token_id
    prompt = codec.prompt_ids(Product("x", "lego " * 500))
    assert len(prompt) <= codec.max_prompt_tokens
    assert prompt[-1] != codec.end_id  # the prompt is not closed: the model continues it


def test_training_targets_use_vocabulary_tags_only(generator, products, vocab):
    extra = Product("z", "lego city", tags=["Toys > Building", "not-in-vocab", "Toys"])
    (example,) = training_examples(generator.codec, [extra], vocab, " > ")
    text = generator.tokenizer.decode(example.target)
    assert "building" in text.lower() and "vocab" not in text.lower()


def test_every_generated_tag_is_in_the_vocabulary_or_an_open_span(generator, products, vocab):
    beams = generator.generate(products[:6])
    assert len(beams) == 6
    for product, rows in zip(products[:6], beams, strict=True):
        assert len(rows) == generator.num_beams
        assert abs(sum(w for _, w in rows) - 1.0) < 1e-4
        allowed = set(vocab.tags) | set(open_candidates(product, generator.kinds, 16))
        for tags, _ in rows:
            assert tags, "a beam without any tag"
            assert set(tags) <= allowed


def test_progress_bar_counts_products_and_changes_nothing(generator, products, capsys):
    plain = generator.generate(products[:5])
    shown = generator.generate(products[:5], progress=True)
    assert shown == plain
    assert "generating tags" in (err := capsys.readouterr().err) and "/5 " in err


def test_narrowed_vocabulary_writes_what_the_whole_one_does(generator, products, monkeypatch):
    """Greedy decoding over the narrowed vocabulary picks the tokens the whole one picks; the
    head really is narrower, and the model is whole again afterwards."""
    from labelrec.taggers import generator as gen_mod

    widths: list[int] = []
    forward = gen_mod._NarrowHead.forward

    def spy(self, hidden):
        out = forward(self, hidden)
        widths.append(out.shape[-1])
        return out

    monkeypatch.setattr(gen_mod._NarrowHead, "forward", spy)
    whole_rows = generator.model.get_input_embeddings().weight.shape[0]
    head = generator.model.get_output_embeddings()
    vocab_size = generator.model.config.get_text_config().vocab_size
    monkeypatch.setattr(generator, "num_beams", 1)
    monkeypatch.setattr(generator, "narrow", False)
    whole = generator.generate(products)
    assert not widths
    monkeypatch.setattr(generator, "narrow", True)
    narrow = generator.generate(products)
    assert widths and max(widths) < whole_rows
    assert narrow == whole
    assert any(tags for beams in narrow for tags, _ in beams)  # it wrote tags
    assert generator.model.get_input_embeddings().weight.shape[0] == whole_rows
    assert generator.model.get_output_embeddings() is head
    assert generator.model.config.get_text_config().vocab_size == vocab_size


def test_trie_walk_allows_only_continuations(generator: TagGenerator):
    codec = generator.codec
    local = TagTrie()
    local.add(codec.tag_ids("brand:Zorg"), "brand:Zorg")
    first = {ids[0] for ids in (codec.tag_ids(t) for t in generator.vocab.tags)}
    assert set(generator._allowed([], None)) == first
    lego = codec.tag_ids("brand:Lego")
    after = generator._allowed(lego, None)
    assert set(after) >= {codec.separator_id, codec.end_id}
    zorg = codec.tag_ids("brand:Zorg")
    seq = codec.tag_ids("Toys") + [codec.separator_id] + zorg + [codec.end_id]
    assert generator._beam_tags(seq, local) == ["Toys", "brand:Zorg"]
    assert generator._beam_tags(seq, None) == ["Toys"]  # without the open tree it is off-tree
    # a tag cut by max_new_tokens after it finished still counts; a half tag does not
    assert generator._beam_tags(codec.tag_ids("Toys"), None) == ["Toys"]
    assert generator._beam_tags(lego[:-1], None) == []


def test_a_tag_is_written_once_in_a_sequence(generator: TagGenerator):
    """A done tag cannot be finished again (forced onto that path, only the end is left), its
    branch closes when no other tag lies beyond it, and once every tag is written only the end
    is left."""
    codec = generator.codec
    sep, end = codec.separator_id, codec.end_id
    tags = generator.vocab.tags
    for tag in tags:
        ids = codec.tag_ids(tag)
        again = generator._allowed(ids + [sep] + ids, None)
        assert sep not in again, tag
        longer = [t for t in tags if t != tag and codec.tag_ids(t)[: len(ids)] == ids]
        reachable = generator._allowed(ids + [sep] + ids[:-1], None)
        assert (ids[-1] in reachable) == bool(longer), tag
    everything = [tok for tag in tags for tok in codec.tag_ids(tag) + [sep]]
    assert generator._allowed(everything, None) == [end]


def test_generated_sequences_hold_each_tag_once(generator, products, monkeypatch):
    """Beam search under the constraint never writes a tag twice (the tiny random decoder,
    left alone, repeats tags)."""
    written: list[list[str]] = []
    walk = generator._walk

    def spy(tokens, local):
        done, nodes = walk(tokens, local)
        written.append(done)
        return done, nodes

    monkeypatch.setattr(generator, "_walk", spy)
    monkeypatch.setattr(generator, "max_new_tokens", 48)
    generator.generate(products)
    assert written and any(len(done) > 1 for done in written)
    assert all(len(done) == len(set(done)) for done in written)


@pytest.mark.parametrize("narrowed", [False, True])
def test_trie_constraint_masks_as_prefix_allowed_tokens_does(generator: TagGenerator, narrowed):
    """At every step of six beams' tag lists (at the start, inside a tag, after a separator,
    finished and padded, off the trees), the one-pass logits processor masks exactly what
    transformers' beam-by-beam ``prefix_allowed_tokens_fn`` processor masks, over the whole and
    over a narrowed vocabulary."""
    from transformers.generation.logits_process import PrefixConstrainedLogitsProcessor

    from labelrec.taggers.generator import _TrieConstraint

    codec = generator.codec
    local = TagTrie()
    local.add(codec.tag_ids("brand:Zorg"), "brand:Zorg")
    locals_ = [None, local]  # 2 products x 3 beams
    lego, toys, zorg = (codec.tag_ids(t) for t in ("brand:Lego", "Toys", "brand:Zorg"))
    sep, end, pad = codec.separator_id, codec.end_id, generator.tokenizer.pad_token_id
    first = set(generator._allowed([], local))
    off = next(t for t in range(len(generator.tokenizer)) if t not in first | {sep, end, pad})
    beams_written = [
        lego + [sep] + toys + [end],
        toys + [end],
        [off, end],
        zorg + [sep] + lego + [end],
        toys + [sep] + zorg + [end],
        [end],
    ]
    prompt = [pad, 7, 8, 9]
    keep, to_new = None, {}
    vocab_size = generator.model.get_output_embeddings().weight.shape[0]
    if narrowed:
        used = generator.tag_tokens | set(zorg) | set(prompt) | {off}
        keep = torch.as_tensor(sorted(used))
        to_new = {t: i for i, t in enumerate(keep.tolist())}
        vocab_size = len(keep)

    def allowed(batch_id: int, sent: torch.Tensor) -> list[int]:
        tail = sent[len(prompt) :]
        if keep is None:
            return generator._allowed(tail.tolist(), locals_[batch_id])
        return [to_new[t] for t in generator._allowed(keep[tail].tolist(), locals_[batch_id])]

    reference = PrefixConstrainedLogitsProcessor(allowed, 3)
    constraint = _TrieConstraint(generator, locals_, len(prompt), 3, keep, to_new)
    for step in range(max(len(w) for w in beams_written) + 2):
        rows = [prompt + (w + [pad] * step)[:step] for w in beams_written]
        ids = torch.tensor([[to_new.get(t, t) for t in r] for r in rows])
        scores = torch.randn(len(rows), vocab_size)
        got = constraint(ids, scores.clone())
        assert torch.equal(got, reference(ids, scores.clone())), f"step {step}"
        assert bool((torch.isfinite(got).sum(dim=1) >= 1).all())  # each beam may write a token


def test_open_candidates_are_facet_spans_of_the_title():
    kinds = [{"prefix": "brand:", "lowercase": False, "max_units": 2}]
    cands = open_candidates(Product("x", "Zorg Mega Blaster"), kinds, 16)
    assert "brand:Zorg" in cands and "brand:Zorg Mega" in cands
    assert "brand:Zorg Mega Blaster" not in cands  # 3 units > max_units
    # İ, whose lower case is two characters, shifts no span after it
    cands = open_candidates(Product("x", "İstanbul Hornby train"), kinds, 16)
    assert "brand:Hornby" in cands and "brand:İstanbul" in cands
    lower = [{**kinds[0], "lowercase": True}]
    assert "brand:hornby train" in open_candidates(Product("x", "İstanbul Hornby train"), lower, 16)


def test_votes_propagate_to_ancestors_and_keep_new_tags(generator, vocab, monkeypatch):
    beams = [[(["Toys > Building", "brand:Zorg"], 0.75), (["Hobbies > Trains"], 0.25)]]
    monkeypatch.setattr(generator, "generate", lambda products, progress=False: beams)
    known, new = generator.votes([Product("x", "Zorg blaster")])
    index = vocab.index
    assert known[0, index["Toys > Building"]] == pytest.approx(0.75)
    assert known[0, index["Toys"]] == pytest.approx(0.75)
    assert known[0, index["Hobbies"]] == pytest.approx(0.25)
    assert known[0, index["brand:Lego"]] == 0
    assert new == [{"brand:Zorg": pytest.approx(0.75)}]
    assert isinstance(generator, Tagger)  # the fusion's interface: score is the votes
    evidence = generator.score([Product("x", "Zorg blaster")])
    np.testing.assert_array_equal(evidence.known, known)
    assert evidence.new == new


def test_new_tags_keep_the_order_the_beams_wrote_them(generator, monkeypatch):
    """Tied new tags come out in the beam's order, not a set's (which follows the process's
    hash seed: one request answered differently by two service workers)."""
    written = [f"brand:Zorg{i}" for i in range(8)]
    beams = [[(written, 0.6), (["brand:Zorg9", written[2]], 0.4)]]
    monkeypatch.setattr(generator, "generate", lambda products, progress=False: beams)
    _, new = generator.votes([Product("x", "Zorg blaster")])
    assert list(new[0]) == [*written, "brand:Zorg9"]


def test_an_open_span_in_other_case_votes_for_the_known_tag(generator, vocab, monkeypatch):
    beams = [[(["brand:LEGO"], 0.6), (["brand:lego", "brand:Zorg"], 0.4)]]
    monkeypatch.setattr(generator, "generate", lambda products, progress=False: beams)
    known, new = generator.votes([Product("x", "LEGO zorg set")])
    assert known[0, vocab.index["brand:Lego"]] == pytest.approx(1.0)
    assert new == [{"brand:Zorg": pytest.approx(0.4)}]  # not brand:LEGO, not brand:lego


def test_a_beam_votes_once_for_a_tag_it_holds_in_two_cases(generator, vocab, monkeypatch):
    beams = [[(["brand:LEGO", "brand:Lego"], 0.3), (["Toys"], 0.7)]]
    monkeypatch.setattr(generator, "generate", lambda products, progress=False: beams)
    known, new = generator.votes([Product("x", "LEGO set")])
    assert known[0, vocab.index["brand:Lego"]] == pytest.approx(0.3)  # not 0.6
    assert new == [{}]


def test_vocab_finds_a_tag_by_its_case_only_when_not_exact() -> None:
    vocab = TagVocab(["brand:Lego", "brand:LEGO", "Toys"], [3, 1, 5])
    assert vocab.find("brand:LEGO") == 1  # exact first
    assert vocab.find("brand:lego") == 0  # else the first that differs only in case
    assert vocab.find("toys") == 2 and vocab.find("brand:Zorg") is None


def test_narrowed_loss_normalizes_over_the_given_and_the_batchs_tokens(tiny_decoder: Path):
    from transformers import AutoModelForCausalLM

    from labelrec.causal import IGNORE, target_loss

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_decoder).eval()
    ids = torch.tensor([[5, 9, 12, 7, 0], [6, 9, 13, 8, 11]])
    mask = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]])
    labels = torch.tensor([[IGNORE, IGNORE, 12, 7, IGNORE], [IGNORE, IGNORE, 13, 8, 11]])
    batch = {"input_ids": ids, "attention_mask": mask, "labels": labels}
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
        full = target_loss(model, batch)
        narrowed = target_loss(model, batch, torch.tensor([3, 40]))
        everything = target_loss(model, batch, torch.arange(model.config.vocab_size))
    keep = labels[:, 1:] != IGNORE
    rows, targets = logits[keep], labels[:, 1:][keep]
    torch.testing.assert_close(full, torch.nn.functional.cross_entropy(rows, targets))
    torch.testing.assert_close(everything, full)
    # the given tokens and the batch's real ones (padding 0 is not), nothing else
    vocab = torch.tensor([3, 5, 6, 7, 8, 9, 11, 12, 13, 40])
    by_hand = torch.nn.functional.cross_entropy(rows[:, vocab], torch.searchsorted(vocab, targets))
    torch.testing.assert_close(narrowed, by_hand)
    assert narrowed < full  # fewer tokens to share the probability with


def test_generator_training_normalizes_over_the_tag_tokens(
    tiny_decoder: Path, products, vocab, monkeypatch
):
    import labelrec.taggers.generator as gen_module

    seen = []

    def spy(model, tokenizer, examples, settings, *args):
        seen.append(settings.output_tokens)
        raise RuntimeError("stop here")

    monkeypatch.setattr(gen_module, "fit_causal_lm", spy)
    for narrow in (True, False):
        gcfg = GenerateConfig(enabled=True, backbone=str(tiny_decoder), narrow_training=narrow)
        with pytest.raises(RuntimeError, match="stop here"):
            fit_generator(gcfg, LexicalConfig(), products, vocab, progress=False)
    codec_tokens = seen[0]
    assert seen[1] is None
    from transformers import AutoTokenizer

    from labelrec.taggers.generator import Codec

    tokenizer = AutoTokenizer.from_pretrained(tiny_decoder)
    assert codec_tokens is not None and len(codec_tokens) < len(tokenizer) / 2
    codec = Codec.for_tokenizer(tokenizer, 96, 200)
    assert set(codec_tokens) == tag_tokens(codec, vocab)
    for product in products:  # every training target is written with them
        for example in training_examples(codec, [product], vocab, " > "):
            assert set(example.target) <= set(codec_tokens)


def test_generator_fit_follows_the_config(products, vocab):
    train = TrainingSet(products, vocab.encode(products), vocab)
    assert TagGenerator.fit(train, load_config(None, [])) is None  # generate.enabled is off


def test_blend_and_tuning_on_hand_made_scores():
    vocab = TagVocab(["a", "b", "c"], [3, 2, 1], 3)
    products = [Product("1", "x", tags=["a"]), Product("2", "y", tags=["b"])]
    fused = np.array([[0.2, 0.6, 0.1], [0.6, 0.2, 0.1]], dtype=np.float32)  # both wrong
    gen = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=np.float32)  # both right
    new = [{}, {}]
    known, rows = blend(fused, new, gen, [{"z": 1.0}, {}], 0.5)
    assert known[0].tolist() == pytest.approx([0.6, 0.3, 0.05])
    assert rows == [{"z": 0.5}, {}]
    tuning = tune_generator(products, vocab, fused, new, gen, [{}, {}])
    assert tuning.weight > 0.2  # the generator fixes the ranking
    assert np.argmax(tuning.known[0]) == 0 and np.argmax(tuning.known[1]) == 1
    assert (
        tuning.report["fused_objective_with_generator"]
        > tuning.report["fused_objective_without_generator"]
    )
    useless = tune_generator(products, vocab, gen, new, fused, [{}, {}])
    assert useless.weight == 0.0  # a generator that only hurts gets no weight
    fixed = tune_generator(products, vocab, fused, new, gen, [{}, {}], weight=0.1)
    assert fixed.weight == 0.1


def test_new_tags_get_their_own_weight():
    vocab = TagVocab(["a", "b", "c"], [3, 2, 1], 3)
    products = [Product("1", "x", tags=["a", "brand:z"]), Product("2", "y", tags=["b", "brand:w"])]
    fused = np.array([[0.9, 0.0, 0.0], [0.0, 0.9, 0.0]], dtype=np.float32)  # right
    gen = np.array([[0.0, 0.0, 1.0], [0.0, 0.0, 1.0]], dtype=np.float32)  # wrong known tags
    gen_new = [{"brand:z": 1.0}, {"brand:w": 1.0}]  # right new tags
    known, rows = blend(fused, [{}, {}], gen, gen_new, 0.0, 0.3)
    assert known is fused and rows == [{"brand:z": 0.3}, {"brand:w": 0.3}]
    tuning = tune_generator(products, vocab, fused, [{}, {}], gen, gen_new)
    assert tuning.weight == 0.0 and tuning.new_weight == pytest.approx(0.05)
    report = tuning.report
    assert report["fused_objective_with_generator"] > report["fused_objective_without_generator"]
    assert tuning.new_threshold < 1.0  # new tags are published above a tuned threshold
    fixed = tune_generator(products, vocab, fused, [{}, {}], gen, gen_new, 0.0, new_weight=0.0)
    assert fixed.new_weight == 0.0 and fixed.new_threshold == 1.0


def test_config_checks():
    with pytest.raises(ConfigError, match="generate.num_beams"):
        GenerateConfig(num_beams=0)
    with pytest.raises(ConfigError, match="generate.weight"):
        load_config(None, ["generate.weight=1.5"])


def test_a_prompt_longer_than_the_context_is_a_clear_error(tiny_decoder: Path, vocab, products):
    from labelrec.model import ModelError

    gcfg = GenerateConfig(  # the tiny decoder has 256 positions
        enabled=True, backbone=str(tiny_decoder), max_prompt_tokens=240, max_new_tokens=48
    )
    with pytest.raises(ModelError, match="generate.max_prompt_tokens .* 288 tokens .* 256"):
        fit_generator(gcfg, LexicalConfig(), products, vocab, progress=False)


def test_bad_backbone_is_a_clear_error(tmp_path: Path, vocab, products):
    from labelrec.model import ModelError

    gcfg = GenerateConfig(enabled=True, backbone=str(tmp_path / "nothing-here"))
    with pytest.raises(ModelError, match="generate.backbone=.*nothing-here.*: no such directory"):
        fit_generator(gcfg, LexicalConfig(), products, vocab, progress=False)


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("generate.max_new_tokens=300", "generate.max_prompt_tokens .* tokens is more than"),
        ("generate.backbone=/nothing/here", "generate.backbone='/nothing/here': no such directory"),
    ],
)
def test_a_bad_generator_fails_before_the_tagger_trains(
    tmp_path: Path, tiny_backbone: Path, tiny_decoder: Path, monkeypatch, setting, message
):
    import labelrec.train
    from labelrec.model import ModelError
    from labelrec.train import train

    def tagger_built(*args, **kwargs):
        raise AssertionError("the tagger was built before the generator was checked")

    monkeypatch.setattr(labelrec.train, "build_model", tagger_built)
    overrides = _base_overrides(tmp_path, tiny_backbone, tmp_path / "m")
    cfg = load_config(
        None,
        [*overrides, "generate.enabled=true", f"generate.backbone={tiny_decoder}", setting],
    )
    with pytest.raises(ModelError, match=message):
        train(cfg, progress=False)


TITLES = ["LEGO City Police Station", "Hornby model railway train set"]


def _base_overrides(tmp_path: Path, backbone: Path, out: Path) -> list[str]:
    train_file = write_jsonl(toy_catalog(6), tmp_path / "train.jsonl")
    valid_file = write_jsonl(toy_catalog(2)[:12], tmp_path / "valid.jsonl")
    return [
        f"model.backbone={backbone}",
        f"data.train={train_file}",
        f"data.valid={valid_file}",
        f"output={out}",
        "train.epochs=1",
    ]


@pytest.fixture(scope="module")
def generator_model(
    tmp_path_factory: pytest.TempPathFactory, tiny_backbone: Path, tiny_decoder: Path
) -> tuple[Path, list[str]]:
    """A model trained with ``generate.enabled`` and a fixed generator weight of 0.4."""
    from labelrec.train import train

    tmp = tmp_path_factory.mktemp("gen-model")
    out = tmp / "model"
    base = _base_overrides(tmp, tiny_backbone, out)
    gen = [
        "generate.enabled=true",
        f"generate.backbone={tiny_decoder}",
        "generate.epochs=1",
        "generate.num_beams=2",
        "generate.weight=0.4",
        "generate.tune_products=8",
    ]
    result = train(load_config("configs/tiny.yaml", base + gen), progress=False)
    assert result.metrics["generator_weight"] == pytest.approx(0.4)
    assert result.metrics["generator_tuned_products"] == 8
    assert result.metrics["n_products"] == 8  # thresholds and metrics from the tuned subset
    assert result.metrics["valid_products_sampled_from"] == 12  # of valid's 12: the card says so
    return out, base


def test_recommender_fuses_the_saved_generator(generator_model):
    from labelrec.predict import TagRecommender

    out, _ = generator_model
    assert (out / "generator" / "causal.json").is_file()
    rec = TagRecommender.load(out)
    assert rec.uses_generator and rec.generator.weight == pytest.approx(0.4)
    with_gen = rec.predict_scores(TITLES)[0]
    plain = TagRecommender.load(out, generate=False)
    assert plain.generator is None
    without = plain.predict_scores(TITLES)[0]
    gen_known, _ = rec.generator.votes([Product(str(i), t) for i, t in enumerate(TITLES)])
    assert with_gen == pytest.approx(0.6 * without + 0.4 * gen_known, abs=1e-5)
    assert rec.suggest(TITLES, limit=3)[0]
    assert rec.new_tag_threshold == rec.generator.new_threshold


def test_service_and_mlflow_model_use_the_generator(generator_model, make_service, tmp_path):
    from labelrec.predict import TagRecommender
    from labelrec.service import ProductIn

    out, _ = generator_model
    expected = [s.tag for s in TagRecommender.load(out).suggest(TITLES[:1], 5, 0.0)[0]]
    svc = make_service(out)
    assert svc.model()["generator"]["in_use"] is True
    answer = asyncio.run(svc.suggest(product=ProductIn(title=TITLES[0]), limit=5, threshold=0.0))
    assert [t.tag for t in answer.tags] == expected
    off = make_service(out, LABELREC_GENERATE="0")
    assert off.model()["generator"] == {"in_use": False, "left_out": True}  # there, not loaded
    with pytest.raises(ValueError, match="LABELREC_GENERATE"):
        make_service(out, LABELREC_GENERATE="maybe")

    import mlflow
    import pandas as pd

    import labelrec.mlflow as lrm

    lrm.save_model(out, tmp_path / "mlflow-model")
    assert any((tmp_path / "mlflow-model").rglob("generator/causal.json"))
    pyfunc = mlflow.pyfunc.load_model(str(tmp_path / "mlflow-model"))
    frame = pyfunc.predict(
        pd.DataFrame({"title": TITLES[:1]}), params={"threshold": 0.0, "limit": 5}
    )
    assert [t["tag"] for t in frame["tags"][0]] == expected


def test_retraining_without_the_generator_removes_it(generator_model, tmp_path: Path):
    import shutil

    from labelrec.predict import TagRecommender
    from labelrec.train import train

    src, base = generator_model
    out = tmp_path / "model"
    shutil.copytree(src, out)
    overrides = [o if not o.startswith("output=") else f"output={out}" for o in base]
    train(load_config("configs/tiny.yaml", overrides), progress=False)
    assert not (out / "generator").exists()
    assert TagRecommender.load(out).generator is None


@pytest.mark.slow
def test_smollm2_learns_to_write_the_toy_tags(smollm2_dir: Path, products, vocab):
    """The real packaged SmolLM2, LoRA-tuned for a few steps, writes the right tags."""
    from labelrec.metrics import objective

    gcfg = GenerateConfig(
        enabled=True, backbone=str(smollm2_dir), epochs=3, batch_size=8, lr=1e-3, num_beams=3
    )
    gen, history = fit_generator(gcfg, LexicalConfig(), products, vocab, progress=False)
    assert history[-1]["loss"] < history[0]["loss"]
    assert gen.codec.separator_id == gen.tokenizer.encode("\n", add_special_tokens=False)[0]
    sample = products[:10]
    known, _ = gen.votes(sample)
    assert objective(vocab.encode(sample), known) > 0.8
    # tags outside the vocabulary can only be open facet values that are spans of the title
    title = "Zorgmaster model railway train set"
    _, new = gen.votes([Product("n", title)])
    assert all(t.split(":", 1)[1] in title for t in new[0])


def test_cli_suggest_with_and_without_the_generator(generator_model, monkeypatch, capsys):
    import io
    import json

    from labelrec import cli
    from labelrec.predict import TagRecommender

    out, _ = generator_model
    answers = {}
    for flags in ([], ["--no-generate"]):
        monkeypatch.setattr("sys.stdin", io.StringIO(TITLES[0] + "\n"))
        args = ["suggest", str(out), "--threshold", "0", "--limit", "4", "--format", "jsonl"]
        assert cli.main(args + flags) == 0
        answers[bool(flags)] = json.loads(capsys.readouterr().out.splitlines()[0])
    for plain, rec in (
        (False, TagRecommender.load(out)),
        (True, TagRecommender.load(out, generate=False)),
    ):
        expected = rec.suggest(TITLES[:1], 4, 0.0)[0]
        got = answers[plain]["tags"]
        assert [t["tag"] for t in got] == [s.tag for s in expected]
        assert [t["score"] for t in got] == pytest.approx([s.score for s in expected], abs=1e-5)


def test_product_index_records_whether_the_generator_voted(generator_model, tmp_path: Path):
    import json

    from labelrec import cli

    out, _ = generator_model
    catalog = write_jsonl(
        [{"id": f"p{i}", "title": t} for i, t in enumerate(TITLES)], tmp_path / "c.jsonl"
    )
    for flags, voted in (([], True), (["--no-generate"], False)):
        index = tmp_path / f"index-{voted}"
        args = ["product-index", str(out), "--data", str(catalog), "--output", str(index)]
        assert cli.main([*args, "--no-embeddings", "--no-progress", *flags]) == 0
        assert json.loads((index / "manifest.json").read_text())["generator"] is voted


def test_refit_can_keep_the_tuning_runs_generator(tmp_path: Path, tiny_backbone, tiny_decoder):
    """``generate.refit=false``: the refit saves the generator the tuning run trained and tuned
    (same weights, its fusion weights), decoding over the refit's larger vocabulary."""
    import json

    from labelrec.causal import load_saved_causal_lm
    from labelrec.predict import TagRecommender
    from labelrec.train import train

    out = tmp_path / "model"
    base = _base_overrides(tmp_path, tiny_backbone, out)
    valid = toy_catalog(2)[:12]
    valid[0]["tags"] = [*valid[0]["tags"], "Only in valid"]  # the refit's vocabulary is larger
    write_jsonl(valid, tmp_path / "valid.jsonl")
    gen = [
        "generate.enabled=true",
        f"generate.backbone={tiny_decoder}",
        "generate.epochs=1",
        "generate.num_beams=2",
        "generate.refit=false",
        "train.refit=true",
        "data.min_tag_count=1",
    ]
    train(load_config("configs/tiny.yaml", base + gen), progress=False)
    tuned, _, tuned_info = load_saved_causal_lm(out / "tuning" / "generator")
    final, _, final_info = load_saved_causal_lm(out / "generator")
    for (name, a), (_, b) in zip(
        tuned.state_dict().items(), final.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    rec = TagRecommender.load(out)
    assert "Only in valid" in rec.vocab.index
    assert final_info["n_tags"] == len(rec.vocab) > tuned_info["n_tags"]
    assert final_info["n_train"] == tuned_info["n_train"] == 6 * len(toy_catalog(1))
    choices = json.loads((out / "tuning" / "tuned.json").read_text())["generator"]
    assert rec.generator.weight == pytest.approx(choices["weight"])
    assert rec.generator.votes([Product("x", TITLES[0])])[0].shape == (1, len(rec.vocab))


def test_the_decoders_checkpointing_saves_memory_not_results(tiny_decoder: Path) -> None:
    """``gradient_checkpointing`` of a generator or describer: the same losses, and the trained
    model given back without it and with its KV cache on, for generation; no deprecated
    transformers call (a FutureWarning fails the test)."""
    import warnings

    from labelrec.causal import LmExample, LmTrainSettings, fit_causal_lm, load_causal_lm

    histories = []
    for flag in (False, True):
        model, tokenizer = load_causal_lm(str(tiny_decoder), "generate.backbone")
        examples = [
            LmExample(tokenizer(title).input_ids, tokenizer(" ; ".join(tags)).input_ids)
            for title, tags in [("lego police station", ["Toys", "brand:Lego"])] * 4
        ]
        settings = LmTrainSettings(
            epochs=2, batch_size=2, lr=1e-3, lora_r=4, lora_alpha=8, lora_dropout=0.0
        )
        settings.gradient_checkpointing = flag
        with warnings.catch_warnings():
            warnings.simplefilter("error", FutureWarning)
            merged, history = fit_causal_lm(model, tokenizer, examples, settings, progress=False)
        histories.append([r["loss"] for r in history])
        on = getattr(merged, "is_activation_checkpointing", None)
        assert not (merged.is_gradient_checkpointing if on is None else on)
        assert merged.config.use_cache
    assert histories[1] == pytest.approx(histories[0], rel=1e-4)


def test_a_decoders_epoch_loss_counts_every_process(tiny_decoder: Path, monkeypatch) -> None:
    """The epoch's loss is the mean over every process's batches (summed across processes),
    not the main process's alone; here a second process is stood in for by ``reduce``, which
    adds one batch of loss 10 to each epoch's sums."""
    import torch

    from labelrec import causal
    from labelrec.causal import LmExample, LmTrainSettings, fit_causal_lm, load_causal_lm

    real = causal.make_accelerator
    seen: list[tuple[float, float]] = []

    def make_accelerator(*args, **kwargs):
        acc = real(*args, **kwargs)

        def reduce(tensor, reduction="sum"):
            assert reduction == "sum"
            seen.append((float(tensor[0]), float(tensor[1])))
            return tensor + torch.tensor([10.0, 1.0], dtype=tensor.dtype)

        acc.reduce = reduce
        return acc

    monkeypatch.setattr(causal, "make_accelerator", make_accelerator)
    model, tokenizer = load_causal_lm(str(tiny_decoder), "generate.backbone")
    examples = [LmExample(tokenizer("lego police").input_ids, tokenizer("Toys").input_ids)] * 4
    settings = LmTrainSettings(epochs=1, batch_size=2, lr=1e-3, lora_r=4, lora_alpha=8)
    _, history = fit_causal_lm(model, tokenizer, examples, settings, progress=False)
    ((loss_sum, n),) = seen
    assert n == 2 and history[0]["loss"] == pytest.approx((loss_sum + 10.0) / 3)
