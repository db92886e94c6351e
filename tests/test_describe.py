"""Product descriptions: config, prompts, training a tiny decoder, CLI, service, MLflow pyfunc."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import shutil
import sys
from pathlib import Path

import pytest
from conftest import toy_catalog, write_jsonl

from labelrec.config import ConfigError, load_config
from labelrec.data import Product
from labelrec.describe import (
    INDEX_ARRAYS,
    INDEX_META,
    INDEX_TEXTS,
    DescribeCodec,
    Describer,
    NeighbourIndex,
    cap_chars,
    fallback_description,
    first_line,
    first_words,
    fit_describer,
    is_describer_dir,
    prompt_text,
    rouge_l_f1,
    split_tags,
    trim_to_sentence,
)
from labelrec.model import ModelError

FAST = ["describe.max_steps=4", "describe.batch_size=4", "describe.lr=5e-3"]
SHORT = ["describe.max_target_tokens=12", "describe.max_new_tokens=12", "describe.min_new_tokens=2"]


def products_with_descriptions(n_copies: int = 2) -> list[Product]:
    rows = toy_catalog(n_copies)
    return [
        Product(r["id"], r["title"], f"a great {r['title']} for kids.", r["tags"]) for r in rows
    ]


@pytest.fixture(scope="module")
def describer_dir(tiny_decoder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A describer trained a few steps on the toy catalog and saved (module-wide, read-only)."""
    cfg = load_config(None, [f"describe.backbone={tiny_decoder}", *FAST, *SHORT])
    describer, history = fit_describer(cfg.describe, products_with_descriptions(), progress=False)
    assert history and history[-1]["loss"] > 0
    return describer.save(tmp_path_factory.mktemp("describer") / "d")


# ---------------------------------------------------------------------- config and prompts


def test_config_checks() -> None:
    cfg = load_config(None, ["task=describe", "describe.num_beams=2"])
    assert cfg.task == "describe" and cfg.describe.num_beams == 2
    with pytest.raises(ConfigError, match="task"):
        load_config(None, ["task=summarize"])
    with pytest.raises(ConfigError, match="describe.min_new_tokens"):
        load_config(None, ["describe.min_new_tokens=200", "describe.max_new_tokens=10"])
    with pytest.raises(ConfigError, match="describe.repetition_penalty"):
        load_config(None, ["describe.repetition_penalty=0.5"])
    with pytest.raises(ConfigError, match="describe.eval_products"):
        load_config(None, ["describe.eval_products=-1"])
    # the tagger's backbone setting does nothing for a describer: said, not ignored
    with pytest.raises(ConfigError, match="model.backbone: is the tagger's .* describe.backbone"):
        load_config(None, ["task=describe", "model.backbone=/models/llm"])


def test_prompt_has_title_attributes_and_most_specific_categories() -> None:
    product = Product("1", "  Remote  control car ", "", ["Toys", "Toys > RC", "color:Red"])
    assert split_tags(product.tags, " > ") == ({"color": ["Red"]}, ["Toys > RC"])
    assert prompt_text(product) == (
        "Product: Remote control car\ncolor: Red\nCategory: Toys > RC\nDescription:"
    )
    assert prompt_text(Product("2", "Kite")) == "Product: Kite\nDescription:"
    text = fallback_description(product)
    assert text == "Remote control car. Color: Red. Category: RC."
    chinese = Product("3", "华为手机。", "", ["品牌:华为"])
    assert fallback_description(chinese) == "华为手机。 品牌: 华为."  # one sentence end


def test_long_prompts_keep_the_title_and_the_cue(tiny_decoder: Path) -> None:
    from labelrec.model import load_tokenizer

    tok = load_tokenizer(str(tiny_decoder))
    meta = {"max_prompt_tokens": 26, "max_target_tokens": 5, "max_tags": 12}
    codec = DescribeCodec.from_meta(tok, meta)
    long = Product("1", "lego city police station " * 10, "", ["Toys"])
    ids = codec.prompt_ids(long)
    assert len(ids) == 26
    assert tok.decode(ids).startswith("product : lego city")
    assert tok.decode(ids).endswith("description :")
    target = codec.target_ids("red blue green " * 10)
    assert len(target) == 5 and codec.end_id not in target  # cut: no end token
    assert codec.target_ids("red car")[-1] == codec.end_id


def test_trim_and_rouge() -> None:
    assert trim_to_sentence("A red car. It is fast. And") == "A red car. It is fast."
    assert first_line(" A red car. Fast\nDescription: A") == ("A red car. Fast", True)
    assert first_line(" A red car.") == ("A red car.", False)
    # no sentence end in the second half: the last clause, else the last (maybe cut) word goes
    assert trim_to_sentence("Short. and then a long unfinished tail") == (
        "Short. and then a long unfinished"
    )
    assert trim_to_sentence("Black and red checked casual shirt, has") == (
        "Black and red checked casual shirt"
    )
    assert trim_to_sentence("A trolley bag with a handle on the upper part of the trol") == (
        "A trolley bag with a handle on the upper part of the"
    )
    assert trim_to_sentence("Red, and a long tail of words without any stop") == (
        "Red, and a long tail of words without any"
    )
    assert trim_to_sentence("红色连衣裙夏季新款") == "红色连衣裙夏季新款"  # no spaces: kept
    # Chinese ends a sentence with no space after it
    cut = "这是一款很好的智能手机。屏幕很大，电池耐用。拍照清"
    assert trim_to_sentence(cut) == "这是一款很好的智能手机。屏幕很大，电池耐用。"
    import rouge_score  # noqa: F401  (required: its absence fails the tests)

    assert rouge_l_f1(["The red car"], ["the red car"]) == pytest.approx(1.0)
    assert rouge_l_f1(["the red car"], ["the red car is fast"]) == pytest.approx(0.75)
    words = " ".join(f"w{i}" for i in range(100))
    # only the first 60 words count
    assert rouge_l_f1([words], [" ".join(words.split()[:60])]) == pytest.approx(1.0)
    assert rouge_l_f1(["乐高城市"], ["乐高城市系列"]) > 0.5  # CJK characters are words
    # also right after a Latin word: "iphone手机壳" is "iphone 手机壳"
    assert rouge_l_f1(["iphone手机壳"], ["iphone 手机壳"]) == pytest.approx(1.0)
    # the first 60 words of Chinese are its first 60 characters
    chinese = "".join(chr(0x4E00 + i) for i in range(100))
    assert first_words(chinese).split() == list(chinese[:60])
    assert rouge_l_f1([chinese], [chinese[:60]]) == pytest.approx(1.0)
    assert first_words("Red car, 2 doors") == "red car, 2 doors"  # English: words between spaces
    assert first_words("好，" * 70).split() == ["好"] * 60  # Chinese punctuation is no word
    assert rouge_l_f1([], []) == 0.0


# ---------------------------------------------------------------------- references


def test_prompt_shows_the_reference_before_the_cue() -> None:
    product = Product("1", "Red kite", "", ["color:Red"])
    text = prompt_text(product, reference=("Blue  kite", "A blue kite.  It flies."))
    assert text == (
        "Product: Red kite\ncolor: Red\nSimilar product: Blue kite\n"
        "Its description: A blue kite. It flies.\nDescription:"
    )
    assert cap_chars("one two three four", 10) == "one two"
    assert cap_chars("乐高城市警察局", 3) == "乐高城"
    assert prompt_text(product, reference=("k", "aaa bbb ccc"), reference_chars=7).endswith(
        "Its description: aaa bbb\nDescription:"
    )


def test_long_references_are_cut_before_the_title(tiny_decoder: Path) -> None:
    from labelrec.model import load_tokenizer

    tok = load_tokenizer(str(tiny_decoder))
    meta = {"max_prompt_tokens": 60, "max_target_tokens": 5, "max_tags": 12}
    codec = DescribeCodec.from_meta(tok, meta)
    ids = codec.prompt_ids(Product("1", "red car"), ("blue car", "blue car fast " * 20))
    text = tok.decode(ids)
    assert len(ids) == 60 and text.startswith("product : red car similar product : blue car")
    assert "its description : blue car fast" in text and text.endswith("fast description :")
    assert "similar" not in tok.decode(codec.prompt_ids(Product("1", "red car " * 20), ("a", "b")))


def described(n: int = 3) -> list[Product]:
    """Products with unique descriptions; titles 0 and 1 are identical."""
    titles = ["lego city police station", "lego city police station", "lego city fire engine"]
    titles += ["plush bear soft baby", "remote control car red", "remote control drone blue"]
    return [Product(str(i), titles[i], f"text {i} .", ["Toys"]) for i in range(min(n, 6))]


def test_neighbour_index_excludes_the_product_itself() -> None:
    products = described(6)
    index = NeighbourIndex.fit(products)
    titles = [p.title for p in products]
    assert index.nearest(titles) == [0, 0, 2, 3, 4, 5]  # itself (or its first duplicate)
    nearest = index.nearest(titles, exclude=range(6))
    assert all(j != i for i, j in enumerate(nearest))
    assert nearest[:3] == [1, 0, 0]  # a duplicate title is a fine neighbour
    assert nearest[4:] == [5, 4]
    assert index.references(["remote control car blue"]) == [("remote control car red", "text 4 .")]
    ranked = index.ranked(titles, 3)
    assert ranked.shape == (6, 3)
    assert ranked[:, 0].tolist() == index.nearest(titles)  # the nearest first, ties in index order
    assert ranked[0].tolist() == [0, 1, 2] and ranked[2].tolist() == [2, 0, 1]
    assert index.ranked(titles, 99).shape == (6, 6) and index.ranked([], 3).shape == (0, 3)
    alone = NeighbourIndex.fit(products[:1])
    assert alone.nearest(["lego"], exclude=[0]) == [-1]
    assert alone.references(["lego"], exclude=[0]) == [None]
    # a title that shares no word or character n-gram with any: no reference, not product 0's
    assert index.nearest(["华为智能手机"]) == [-1] and index.references(["华为智能手机"]) == [None]


def test_neighbour_index_answers_long_query_lists_in_order() -> None:
    """More queries than one similarity block holds (1,024 rows): the blocks come back in order,
    and the exclusions of each block are its own queries'."""
    products = described(6)
    index = NeighbourIndex.fit(products)
    titles = [p.title for p in products] * 400  # 2,400 queries: three blocks
    exclude = [i % 6 for i in range(len(titles))]
    assert index.nearest(titles) == [0, 0, 2, 3, 4, 5] * 400
    first = index.nearest(titles[:6], exclude=range(6))
    assert index.nearest(titles, exclude=exclude) == first * 400
    ranked = index.ranked(titles, 2)
    assert ranked.shape == (2400, 2)
    assert ranked.tolist() == index.ranked(titles[:6], 2).tolist() * 400


def test_training_prompts_show_another_products_description(
    tiny_decoder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import labelrec.describe as describe

    seen: list = []

    def fake_fit(model, tokenizer, examples, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003
        seen.extend(examples)
        return model, [{"epoch": 1, "loss": 1.0, "products_per_s": 1.0, "epoch_seconds": 1.0}]

    monkeypatch.setattr(describe, "fit_causal_lm", fake_fit)
    products = described(6)
    cfg = load_config(
        None, [f"describe.backbone={tiny_decoder}", "describe.max_train_products=4", *SHORT]
    )
    describer, _ = fit_describer(cfg.describe, products, progress=False)
    assert describer.meta["reference"] and describer.meta["n_indexed"] == 6 and len(seen) == 4
    tok = describer.tokenizer
    for example in seen:
        prompt = tok.decode(example.prompt)
        own = tok.decode(example.target[:-1]).strip()  # "text i ."
        assert "its description : text" in prompt and own not in prompt, prompt


def test_neighbour_index_round_trip(tmp_path: Path) -> None:
    products = described(6)
    index = NeighbourIndex.fit(products)
    index.save(tmp_path)
    assert {INDEX_META, INDEX_ARRAYS, INDEX_TEXTS} <= {f.name for f in tmp_path.iterdir()}
    assert b"pickle" not in (tmp_path / INDEX_META).read_bytes()
    loaded = NeighbourIndex.load(tmp_path)
    assert loaded is not None and loaded.titles == index.titles
    assert loaded.descriptions == index.descriptions
    queries = ["lego police", "drone", "plush", "乐高"]
    assert loaded.nearest(queries) == index.nearest(queries)
    assert NeighbourIndex.load(tmp_path / "nothing") is None
    (tmp_path / INDEX_TEXTS).unlink()
    with pytest.raises(ModelError, match=INDEX_TEXTS):
        NeighbourIndex.load(tmp_path)


def test_describer_prompts_show_the_nearest_training_description(describer_dir: Path) -> None:
    assert (describer_dir / INDEX_META).is_file()
    card = (describer_dir / "README.md").read_text(encoding="utf-8")  # its card, as a tagger's
    assert "# d\n" in card and "labelrec describe d < products.jsonl" in card
    describer = Describer.load(describer_dir, device="cpu")
    assert describer.index is not None and not describer.penalize_prompt
    [prompt] = describer.prompt_texts([{"title": "lego city police station 1"}])
    assert "similar product : lego city police station 1" in prompt
    assert "its description : a great lego city police station 1 for kids." in prompt
    assert describer.references([{"title": "plush bear"}])[0][0].startswith("plush bear soft")


def test_old_describer_without_index_loads(describer_dir: Path, tmp_path: Path) -> None:
    old = tmp_path / "old"
    shutil.copytree(describer_dir, old)
    for name in (INDEX_META, INDEX_ARRAYS, INDEX_TEXTS):
        (old / name).unlink()
    info = json.loads((old / "causal.json").read_text())
    with pytest.raises(ModelError, match="trained with a reference"):
        Describer.load(old, device="cpu")
    for key in ("reference", "reference_chars", "penalize_prompt", "n_indexed"):
        info.pop(key)  # as written before references existed
    (old / "causal.json").write_text(json.dumps(info))
    describer = Describer.load(old, device="cpu")
    assert describer.index is None and describer.penalize_prompt
    assert "similar" not in describer.prompt_texts([{"title": "kite"}])[0]
    assert describer.references([{"title": "kite"}]) == [None]
    assert all(t.strip() for t in describer.describe([{"title": "kite"}, {"title": "lego"}]))


def test_penalties_skip_the_prompt() -> None:
    import torch
    from transformers import NoRepeatNGramLogitsProcessor

    from labelrec.describe import _OnWritten

    ids = torch.tensor([[5, 6, 5, 7]])  # prompt 5 6, written 5 7
    scores = torch.zeros(1, 10)
    banned = NoRepeatNGramLogitsProcessor(2)(torch.tensor([[5, 6, 5]]), scores.clone())
    assert banned[0, 6] == -float("inf")  # HF's own: the prompt's bigram (5, 6) is banned
    written = _OnWritten(NoRepeatNGramLogitsProcessor(2), start=2)
    assert torch.isfinite(written(torch.tensor([[5, 6, 5]]), scores.clone())).all()
    assert written(ids, scores.clone())[0].isinf().sum() == 0
    assert written(torch.tensor([[5, 6, 5, 7, 5]]), scores.clone())[0, 7] == -float("inf")
    assert written(torch.tensor([[5, 6]]), scores.clone()).equal(scores)


# ---------------------------------------------------------------------- training and describing


def test_describer_writes_non_empty_texts(describer_dir: Path) -> None:
    assert is_describer_dir(describer_dir)
    info = json.loads((describer_dir / "causal.json").read_text())
    assert info["kind"] == "describer" and info["n_skipped_no_description"] == 0
    describer = Describer.load(describer_dir, device="cpu")
    products = [
        {"title": "lego city police station", "tags": ["Toys", "color:Blue"]},
        Product("x", "plush bear"),
        {"title": "jigsaw puzzle 1000 pieces"},
    ]
    texts = describer.describe(products)
    assert len(texts) == 3 and all(t.strip() for t in texts)
    describer.batch_products = 1  # batching and left padding do not change greedy outputs
    assert describer.describe(products) == texts
    with pytest.raises(ValueError, match="product 1, field 'title'"):
        describer.describe([{"title": "ok"}, {"title": ""}])


def test_decoding_settings_change_on_a_loaded_describer(describer_dir: Path) -> None:
    describer = Describer.load(describer_dir, device="cpu")
    saved = json.loads((describer_dir / "causal.json").read_text())
    products = [{"title": "lego city police station"}, {"title": "plush bear"}]
    config = describer.generation_config()
    assert (config.num_beams, config.max_new_tokens) == (saved["num_beams"], 12)
    other = describer.with_decoding(
        num_beams=2, max_new_tokens=3, min_new_tokens=1, repetition_penalty=1.0
    )
    config = other.generation_config()
    assert (config.num_beams, config.max_new_tokens, config.min_new_tokens) == (2, 3, 1)
    assert other.meta["repetition_penalty"] == 1.0 and other.model is describer.model
    assert describer.generation_config().max_new_tokens == 12  # the original is unchanged
    generate, written = other.model.generate, []

    def counted(**kwargs):  # the number of tokens written per call
        out = generate(**kwargs)
        written.append(out.shape[1] - kwargs["input_ids"].shape[1])
        return out

    other.model.generate = counted
    assert len(other.generate(products)) == 2
    assert written and max(written) <= 3  # the new limit binds what is written
    del other.model.generate
    assert other.with_decoding(num_beams=None).meta["num_beams"] == 2  # None keeps a setting
    with pytest.raises(ConfigError, match="describe.num_beams: must be >= 1"):
        describer.with_decoding(num_beams=0)
    with pytest.raises(ConfigError, match="describe.min_new_tokens"):
        other.with_decoding(min_new_tokens=5)  # above max_new_tokens 3
    assert saved["min_new_tokens"] == 2
    lowered = describer.with_decoding(max_new_tokens=1)  # below the trained minimum: it follows
    assert (lowered.meta["max_new_tokens"], lowered.meta["min_new_tokens"]) == (1, 1)
    assert describer.with_decoding(max_new_tokens=5).meta["min_new_tokens"] == 2  # kept
    with pytest.raises(ConfigError, match="describe.min_new_tokens"):
        describer.with_decoding(max_new_tokens=1, min_new_tokens=2)  # both given: checked
    with pytest.raises(ValueError, match="not a decoding setting: lr"):
        describer.with_decoding(lr=0.1)
    with pytest.raises(ValueError, match="length_penalty: acts in beam search only"):
        describer.with_decoding(num_beams=1, length_penalty=2.0)  # greedy: it would do nothing
    assert other.with_decoding(length_penalty=2.0).meta["length_penalty"] == 2.0  # 2 beams
    assert describer.with_decoding(num_beams="2").meta["num_beams"] == 2  # as an override reads
    for bad in ({"num_beams": 2.5}, {"num_beams": True}, {"repetition_penalty": float("inf")}):
        with pytest.raises(ConfigError, match=f"describe.{next(iter(bad))}: expected"):
            describer.with_decoding(**bad)
    with pytest.raises(ValueError, match=r"describe.max_new_tokens: at most \d+ for this"):
        describer.with_decoding(max_new_tokens=10**6)
    assert json.loads((describer_dir / "causal.json").read_text()) == saved  # on disk: untouched


def test_empty_outputs_fall_back_to_title_and_tags(
    describer_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    describer = Describer.load(describer_dir, device="cpu")
    describer.generate = lambda items: [""] * len(items)  # type: ignore[method-assign]
    with caplog.at_level("WARNING", logger="labelrec.describe"):
        texts = describer.describe([{"title": "kite", "tags": ["color:Red"]}])
    assert texts == ["kite. Color: Red."]
    assert "1 of 1 generated descriptions were empty" in caplog.text


def test_products_without_description_are_skipped(
    tiny_decoder: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = load_config(None, [f"describe.backbone={tiny_decoder}", "describe.max_steps=1"])
    bare = [Product("1", "kite"), Product("2", "ball")]
    with pytest.raises(ValueError, match="none of the 2 training products has a description"):
        fit_describer(cfg.describe, bare, progress=False)


def test_errors_name_the_problem(tiny_decoder: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="does not exist"):
        Describer.load(tmp_path / "missing")
    with pytest.raises(ModelError, match="not a describer directory"):
        Describer.load(tiny_decoder)
    cfg = load_config(None, [f"describe.backbone={tmp_path / 'nothing-here'}"])
    with pytest.raises(ModelError, match="describe.backbone"):
        fit_describer(cfg.describe, products_with_descriptions(1), progress=False)
    long = load_config(
        None, [f"describe.backbone={tiny_decoder}", "describe.max_prompt_tokens=200"]
    )  # the tiny decoder has 256 positions
    with pytest.raises(ModelError, match="256 positions"):
        fit_describer(long.describe, products_with_descriptions(1), progress=False)


def test_a_describer_swapped_while_it_loads_is_read_again(
    describer_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A training replaces a describer folder whole (``replace_dir``): between its two renames
    the folder is absent. A load that checks it at that instant reads again and gets the new
    describer instead of failing with "does not exist"."""
    import os

    import labelrec.describe as describe_mod
    from labelrec.modeldir import CAUSAL_INFO

    model, new, old = tmp_path / "d", tmp_path / ".d.new", tmp_path / ".d.new.old"
    shutil.copytree(describer_dir, model)
    shutil.copytree(describer_dir, new)
    meta = json.loads((new / CAUSAL_INFO).read_text(encoding="utf-8"))
    (new / CAUSAL_INFO).write_text(json.dumps({**meta, "marker": "new"}), encoding="utf-8")
    real, calls = describe_mod.is_describer_dir, []

    def swapped_meanwhile(path: Path) -> bool:
        calls.append(path)
        if len(calls) == 1:  # the old folder has moved aside, the new one not yet in
            os.replace(model, old)
            answer = real(path)
            os.replace(new, model)
            return answer
        return real(path)

    monkeypatch.setattr(describe_mod, "is_describer_dir", swapped_meanwhile)
    monkeypatch.setattr("labelrec.modeldir.time.sleep", lambda seconds: None)
    loaded = Describer.load(model)
    assert len(calls) == 2 and loaded.meta.get("marker") == "new"
    with pytest.raises(ModelError, match="does not exist"):  # a folder that stays absent
        Describer.load(tmp_path / "nothing")
    monkeypatch.undo()

    # a load that begins and fails inside the gap waits for the folder beside it to come in
    import threading

    shutil.rmtree(old)  # the first swap's old folder
    shutil.copytree(model, new)
    os.replace(model, old)
    threading.Timer(0.2, os.replace, (new, model)).start()
    assert Describer.load(model).meta.get("marker") == "new"

    # a first training's folder staged beside one that was never there: no gap to wait for
    shutil.rmtree(old)
    (tmp_path / ".first.abc123").mkdir()
    waits = []
    monkeypatch.setattr("labelrec.modeldir.time.sleep", waits.append)
    with pytest.raises(ModelError, match="does not exist"):
        Describer.load(tmp_path / "first")
    assert waits == []


def test_damaged_describer_files_are_one_line_errors_naming_them(
    describer_dir: Path, tmp_path: Path
) -> None:
    import shutil

    for name, content, message in [
        ("model.safetensors", b"garbage", r"the decoder's weights \(model.safetensors\) cannot"),
        ("tokenizer.json", b'{"bad": 1}', r"the decoder's tokenizer \(tokenizer.json\) cannot"),
        ("causal.json", b"{broken", r"causal.json: not valid JSON"),
        ("neighbours.json", b"{broken", r"neighbours.json: not valid JSON"),
        ("neighbours.npz", b"garbage", r"neighbours.npz: not a numpy archive"),
        ("neighbours.jsonl", b'{"title": "a", "descr', r"neighbours.jsonl, line 1: not a"),
        # JSON, but parts gone or of another type
        ("neighbours.json", b'{"format_version": 1, "n_products": 20}', r"\(no 'tfidf'\)"),
        ("tokenizer.json", None, r"tokenizer \(none\) cannot be loaded \(ValueError: \d+ tok"),
    ]:
        damaged = tmp_path / f"{name}-{len(list(tmp_path.iterdir()))}"
        shutil.copytree(describer_dir, damaged)
        if content is None:
            (damaged / name).unlink()
        else:
            (damaged / name).write_bytes(content)
        with pytest.raises((ModelError, ValueError), match=message):
            Describer.load(damaged)
    info = json.loads((describer_dir / "causal.json").read_text(encoding="utf-8"))
    for change in ({"max_prompt_tokens": None}, {"num_beams": "two"}):
        damaged = tmp_path / f"causal-{len(list(tmp_path.iterdir()))}"
        shutil.copytree(describer_dir, damaged)
        changed = {k: v for k, v in {**info, **change}.items() if v is not None}
        (damaged / "causal.json").write_text(json.dumps(changed), encoding="utf-8")
        with pytest.raises(ModelError, match=r"causal.json: a setting is missing or wrong"):
            Describer.load(damaged)


def test_a_backbone_whose_weights_are_cut_short_is_a_one_line_error(
    tiny_decoder: Path, tmp_path: Path
) -> None:
    """Weights that do not load (a folder of converted weights cut short) name the setting,
    the folder and what to do, not a traceback of safetensors."""
    import shutil

    from labelrec.causal import load_causal_lm

    cut = shutil.copytree(tiny_decoder, tmp_path / "cut")
    weights = cut / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(ModelError, match=r"describe.backbone: the weights of .* cannot be loaded"):
        load_causal_lm(str(cut), "describe.backbone")


def test_a_describer_without_any_tag_says_so(
    tiny_decoder: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from labelrec.train import train

    rows = [dict(r, description=f"a great {r['title']}.") for r in toy_catalog(1)]
    data = write_jsonl(rows, tmp_path / "train.jsonl")
    cfg = load_config(
        None,
        [
            "task=describe",
            f"describe.backbone={tiny_decoder}",
            f"data.train={data}",
            "data.tag_columns=[categories]",  # the catalog calls them tags
            "describe.eval_products=0",
            f"output={tmp_path / 'd'}",
            *FAST,
            *SHORT,
        ],
    )
    with caplog.at_level(logging.WARNING, logger="labelrec.describe"):
        train(cfg, progress=False)
    assert "no training product has a tag in data.tag_columns=['categories']" in caplog.text


def test_labelrec_train_with_task_describe(
    tiny_decoder: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    import rouge_score  # noqa: F401  (required: its absence fails the tests)

    from labelrec.cli import main

    rows = [dict(r, description=f"a great {r['title']}.") for r in toy_catalog(2)]
    rows[0]["description"] = ""
    train = write_jsonl(rows[:16], tmp_path / "train.jsonl")
    valid = write_jsonl(rows[16:], tmp_path / "valid.jsonl")
    out = tmp_path / "describer"
    args = [
        "train", "--config", str(Path(__file__).parents[1] / "configs" / "describe.yaml"),
        f"describe.backbone={tiny_decoder}", f"data.train={train}", f"data.valid={valid}",
        f"output={out}", "describe.eval_products=3", *FAST, *SHORT, "--no-progress",
    ]  # fmt: skip
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert f"describer saved to {out}" in printed and "ROUGE-L F1" in printed
    info = json.loads((out / "causal.json").read_text())
    assert info["n_skipped_no_description"] == 1
    assert info["valid_metrics"]["valid_n_products"] == 3
    m = info["valid_metrics"]
    assert 0 <= m["valid_empty_outputs"] <= m["valid_n_products"]
    assert m["valid_rougeL_gain"] == pytest.approx(
        m["valid_rougeL_f1"] - m["valid_rougeL_copy_nearest"]
    )
    assert m["valid_rougeL_gain_low"] <= m["valid_rougeL_gain"] <= m["valid_rougeL_gain_high"]
    assert "describer minus copying" in printed


def test_evaluation_sets_the_describer_against_copying_its_reference(describer_dir: Path) -> None:
    import rouge_score  # noqa: F401  (required: its absence fails the tests)

    from labelrec.describe import evaluate_describer

    describer = Describer.load(describer_dir, device="cpu")
    products = [
        Product("1", "lego city police station", "a police station with three minifigures"),
        Product("2", "plush bear", "a soft brown bear for kids"),
        Product("3", "kite", ""),  # no description: not scored
    ]
    shown = [r[1] for r in describer.references(products[:2])]
    describer.generate = lambda items: list(shown)  # type: ignore[method-assign]
    copy = evaluate_describer(describer, products)
    assert copy["n_products"] == 2
    assert copy["rougeL_f1"] == copy["rougeL_copy_nearest"]  # it wrote exactly the references
    assert copy["rougeL_gain"] == copy["rougeL_gain_low"] == copy["rougeL_gain_high"] == 0.0
    describer.generate = lambda items: [p.description for p in items]  # type: ignore[method-assign]
    perfect = evaluate_describer(describer, products)
    assert perfect["rougeL_f1"] == 1.0
    assert perfect["rougeL_gain"] == pytest.approx(1.0 - copy["rougeL_copy_nearest"])
    assert perfect["rougeL_gain_low"] > 0  # the references are not the real descriptions


# ---------------------------------------------------------------------- CLI


def test_describe_verb_reads_json_lines(
    describer_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from labelrec.cli import main

    lines = [
        {"id": "a", "title": "lego city police station", "tags": ["Toys", "color:Red"]},
        {"id": 7, "title": "plush bear", "description": "old text"},
        {"title": "kite"},
    ]
    stdin = "\n".join(json.dumps(x) for x in lines) + "\n\n"
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    assert main(["describe", str(describer_dir), "--batch-size", "2", "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert "Loading weights" not in captured.err
    out = [json.loads(x) for x in captured.out.strip().splitlines()]
    assert [o["id"] for o in out] == ["a", "7", None]  # a string, as the service echoes it
    assert all(isinstance(o["description"], str) and o["description"].strip() for o in out)

    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    assert main(["describe", str(describer_dir), "--num-beams", "2", "--max-new-tokens", "4"]) == 0
    beams = [json.loads(x)["description"] for x in capsys.readouterr().out.strip().splitlines()]
    assert len(beams) == 3 and all(b.strip() for b in beams)
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    assert main(["describe", str(describer_dir), "--repetition-penalty", "0.5"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "--repetition-penalty: must be >= 1" in captured.err
    for option in ("--batch-size", "--num-beams", "--max-new-tokens"):  # before the describer
        with pytest.raises(SystemExit) as exc:
            main(["describe", str(describer_dir), option, "0"])
        assert exc.value.code == 2 and f"{option}: must be >= 1" in capsys.readouterr().err


def test_describe_verb_writes_in_batches_of_batch_size(
    describer_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from labelrec.cli import main

    batches: list[int] = []

    def batch(self: Describer, prompts: list, config: object) -> list[str]:
        batches.append(len(prompts))
        return ["text"] * len(prompts)

    monkeypatch.setattr(Describer, "_generate_batch", batch)
    stdin = "".join(json.dumps({"title": f"kite {i}"}) + "\n" for i in range(5))
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    assert main(["describe", str(describer_dir), "--batch-size", "2", "--num-beams", "2"]) == 0
    assert batches == [2, 2, 1]
    assert len(capsys.readouterr().out.strip().splitlines()) == 5

    # written DESCRIBE_BATCHES batches at a time: a stop keeps the lines already out
    def stop_at_the_third(self: Describer, prompts: list, config: object) -> list[str]:
        if len(batches) == 2 + 3:
            raise KeyboardInterrupt
        return batch(self, prompts, config)

    monkeypatch.setattr(Describer, "_generate_batch", stop_at_the_third)
    monkeypatch.setattr("labelrec.cli.DESCRIBE_BATCHES", 1)
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    assert main(["describe", str(describer_dir), "--batch-size", "1", "--no-progress"]) == 130
    out = [json.loads(x) for x in capsys.readouterr().out.strip().splitlines()]
    assert [o["description"] for o in out] == ["text", "text"]  # the two before the stop


def test_describe_verb_names_its_options_in_decoding_errors(
    describer_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from labelrec.cli import main

    for options, message in [
        (["--max-new-tokens", "100000"], r"--max-new-tokens: at most \d+ for this describer"),
        (["--length-penalty", "2", "--num-beams", "1"], "--length-penalty: acts in beam search"),
        (["--min-new-tokens", "-1"], "--min-new-tokens: must be"),
    ]:
        monkeypatch.setattr(sys, "stdin", io.StringIO('{"title": "kite"}\n'))
        assert main(["describe", str(describer_dir), *options]) == 2
        err = capsys.readouterr().err
        assert re.search(message, err) and "describe." not in err, err


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "line 2: invalid JSON"),
        ("a plain title", "line 2: invalid JSON: Expecting value (each line is a JSON object"),
        ('{"tags": ["a"]}', "line 2, field 'title'"),
        ('{"title": "kite", "tags": ["Toys", 3]}', "line 2, field 'tags'"),
        ('{"title": "kite", "id": [1]}', "line 2, field 'id'"),
        ('["kite"]', "line 2: expected a JSON object"),
        ('{"title": "\\u200b"}', "line 2, field 'title'"),  # no visible text once cleaned
        ('{"title": "kite", "tags": ["' + "x" * 600 + '"]}', "line 2, field 'tags': a tag of 600"),
    ],
)
def test_describe_verb_names_the_bad_line(
    describer_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
    line: str,
    message: str,
) -> None:
    from labelrec.cli import main

    monkeypatch.setattr(sys, "stdin", io.StringIO('{"title": "ok"}\n' + line + "\n"))
    assert main(["describe", str(describer_dir)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert f"labelrec describe: error: <stdin>, {message}" in captured.err


# ---------------------------------------------------------------------- service


def test_service_describe_endpoint(
    make_service, trained_model_dir: Path, describer_dir: Path, tmp_path: Path
) -> None:
    from labelrec.service import DescribeIn

    model = tmp_path / "model"
    shutil.copytree(trained_model_dir, model, ignore=shutil.ignore_patterns("checkpoints"))
    products = [DescribeIn(title="lego city", tags=["Toys"], id=3), DescribeIn(title="kite")]

    svc = make_service(model)  # no describer configured: 404 naming the setting
    missing = asyncio.run(svc.describe(products=products))
    assert missing.status_code == 404 and b"LABELREC_DESCRIBER" in missing.body

    svc = make_service(model, LABELREC_DESCRIBER=str(tmp_path / "nope"))  # tagging still up
    broken = asyncio.run(svc.describe(products=products))
    assert broken.status_code == 503 and b"failed to load" in broken.body
    assert str(tmp_path).encode() not in broken.body and "…/nope".encode() in broken.body
    assert svc.__is_ready__()

    svc = make_service(model, LABELREC_DESCRIBER=str(describer_dir))
    out = asyncio.run(svc.describe(products=products))
    assert [o.id for o in out] == ["3", None] and all(o.description.strip() for o in out)
    assert svc.describe_items(products) == out  # the adaptive-batching core agrees
    assert asyncio.run(svc.describe(products=[])) == []
    assert svc.model()["describer"]["uri"] == f"…/{describer_dir.name}"  # no local path shown


def test_service_removes_the_describer_it_downloaded_at_shutdown(
    make_service,
    trained_model_dir: Path,
    describer_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A describer in a remote MLflow store is copied at each worker start: the copy goes into a
    folder of the service's, removed at shutdown; a local describer leaves no folder."""
    import tempfile

    import labelrec.service as service_mod
    from labelrec.opener import download_destination

    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    model = tmp_path / "model"
    shutil.copytree(trained_model_dir, model, ignore=shutil.ignore_patterns("checkpoints"))

    def downloaded(uri: str) -> Describer:  # what resolving a remote models:/ URI does
        copy = Path(download_destination()) / "d"
        shutil.copytree(describer_dir, copy)
        return Describer.load(copy, device="cpu")

    monkeypatch.setattr(service_mod, "load_describer", downloaded)
    svc = make_service(model, LABELREC_DESCRIBER="models:/describer@champion")
    assert svc.describer is not None
    [folder] = temp.glob("labelrec-describer-*")
    assert any(folder.rglob("causal.json"))
    svc._shut_down()
    assert not folder.exists()

    monkeypatch.undo()  # a describer directory: read in place, nothing made
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    svc = make_service(model, LABELREC_DESCRIBER=str(describer_dir))
    assert svc.describer is not None and not list(temp.glob("labelrec-describer-*"))


def test_service_describe_takes_decoding_settings_and_tag_strings(
    make_service, trained_model_dir: Path, describer_dir: Path, tmp_path: Path
) -> None:
    from pydantic import ValidationError

    from labelrec.service import MAX_DESCRIBE_BEAMS, DecodingIn, DescribeIn

    model = tmp_path / "model"
    shutil.copytree(trained_model_dir, model, ignore=shutil.ignore_patterns("checkpoints"))
    svc = make_service(model, LABELREC_DESCRIBER=str(describer_dir))
    native = Describer.load(describer_dir, device="cpu")
    # tags as catalogs write them, full-width forms folded as catalogs fold them
    products = [DescribeIn(title="lego city", tags="Toys|color：Ｒｅｄ"), DescribeIn(title="kite")]
    assert products[0].tags == ["Toys", "color：Ｒｅｄ"]
    as_lists = [{"title": "lego city", "tags": ["Toys", "color:Red"]}, {"title": "kite"}]
    assert native.prompt_texts([p.model_dump() for p in products]) == native.prompt_texts(as_lists)

    decoding = DecodingIn(num_beams=2, max_new_tokens=3, min_new_tokens=3)
    out = asyncio.run(svc.describe(products=products, decoding=decoding))
    expected = native.with_decoding(num_beams=2, max_new_tokens=3, min_new_tokens=3)
    assert [o.description for o in out] == expected.describe(as_lists)
    plain = asyncio.run(svc.describe(products=products))  # the request's settings did not stay
    assert [o.description for o in plain] == native.describe(as_lists)
    assert [o.description for o in plain] != [o.description for o in out]

    bad = asyncio.run(
        svc.describe(products=products, decoding=DecodingIn(max_new_tokens=2, min_new_tokens=5))
    )
    assert bad.status_code == 400 and b"decoding.min_new_tokens" in bad.body
    # within the service's cap, past the backbone's positions: a 400 too, not a 500
    long = asyncio.run(svc.describe(products=products, decoding=DecodingIn(max_new_tokens=500)))
    assert long.status_code == 400 and b"decoding.max_new_tokens: at most" in long.body
    with pytest.raises(ValidationError, match="num_beams"):
        DecodingIn(num_beams=MAX_DESCRIBE_BEAMS + 1)
    with pytest.raises(ValidationError, match="batch_products"):
        DecodingIn.model_validate({"batch_products": 1000})  # the service's own setting
    with pytest.raises(ValidationError, match="at most 512 characters"):
        DescribeIn(title="kite", tags=["x" * 513])
    # 300 characters that Unicode's normal form makes 600 as tags are read: refused here too,
    # not by the describer in a batch shared with other requests
    with pytest.raises(ValidationError, match="field 'tags': a tag of 600 characters"):
        DescribeIn(title="kite", tags=["\u0958" * 300])


# ---------------------------------------------------------------------- MLflow


def test_describer_as_mlflow_model(describer_dir: Path, registry: Path) -> None:
    import mlflow

    import labelrec.mlflow as lrm

    with mlflow.start_run():
        info = lrm.log_model(describer_dir, registered_model_name="describer")
    assert info.flavors["labelrec"]["kind"] == "describer"
    pyfunc = mlflow.pyfunc.load_model("models:/describer/1")
    import pandas as pd

    frame = pd.DataFrame(
        {"title": ["lego city police", "kite"], "tags": [["Toys", "color:Red"], []]}
    )
    out = pyfunc.predict(frame)
    assert list(out.columns) == ["description"] and len(out) == 2
    assert all(t.strip() for t in out["description"])
    # a product without tags beside one with them (NaN), and tags as catalogs write them
    mixed = pd.DataFrame(
        [{"title": "lego city police", "tags": ["Toys", "color:Red"]}, {"title": "kite"}]
    )
    assert mixed["tags"].isna().tolist() == [False, True]
    assert list(pyfunc.predict(mixed)["description"]) == list(out["description"])
    piped = pd.DataFrame({"title": ["lego city police", "kite"], "tags": ["Toys|color:Red", ""]})
    assert list(pyfunc.predict(piped)["description"]) == list(out["description"])
    from mlflow.exceptions import MlflowException

    with pytest.raises(MlflowException, match="product 1, field 'tags': expected a list of str"):
        pyfunc.predict(pd.DataFrame({"title": ["a", "b"], "tags": [["Toys"], [3]]}))
    native = lrm.load_model("models:/describer/1", device="cpu")
    assert isinstance(native, Describer)
    assert native.describe(frame.to_dict("records")) == list(out["description"])
    params = {p.name for p in pyfunc.metadata.get_params_schema().params}
    assert params == {
        "num_beams",
        "max_new_tokens",
        "min_new_tokens",
        "length_penalty",
        "repetition_penalty",
        "no_repeat_ngram_size",
    }
    short = pyfunc.predict(frame, params={"num_beams": 2, "max_new_tokens": 9})
    assert len(short) == 2 and all(t.strip() for t in short["description"])
    expected = native.with_decoding(num_beams=2, max_new_tokens=9).describe(
        frame.to_dict("records")
    )
    assert list(short["description"]) == expected
    # a bad decoding param names itself in an MlflowException (a 400 over REST)
    with pytest.raises(MlflowException, match="param num_beams: must be >= 1") as err:
        pyfunc.predict(frame, params={"num_beams": 0})
    assert err.value.error_code == "INVALID_PARAMETER_VALUE"
    with pytest.raises(MlflowException, match=r"param max_new_tokens: at most \d+") as err:
        pyfunc.predict(frame, params={"max_new_tokens": 5000})  # past the context
    assert err.value.error_code == "INVALID_PARAMETER_VALUE"
    # a product's bad field names itself too, not "an unexpected error"
    with pytest.raises(MlflowException, match="product 0, field 'title'") as err:
        pyfunc.predict(pd.DataFrame({"title": ["\u200b"], "tags": [["Toys"]]}))
    assert err.value.error_code == "INVALID_PARAMETER_VALUE"


def test_describer_products_read_text_as_the_tagger_does() -> None:
    from labelrec.data import MAX_TITLE_CHARS
    from labelrec.describe import as_product

    raw = as_product({"title": " hor\u200bnby  rail\ufeffway\t", "tags": ["Toys\u00ad ", " "]})
    assert (raw.title, raw.tags) == ("hornby railway", ["Toys"])
    assert len(as_product({"title": "kite " * 100_000}).title) == MAX_TITLE_CHARS
    with pytest.raises(ValueError, match="product 3, field 'title': missing, empty"):
        as_product({"title": "\u200b\u200b"}, 3)
    with pytest.raises(ValueError, match="product 0, field 'tags': holds a lone surrogate"):
        as_product({"title": "kite", "tags": ["Toys\ud800"]})
    # tags read as catalogs read them: a '|' string, full-width forms folded, long ones refused
    folded = as_product({"title": "kite", "tags": "品牌：华为| Toys |"})
    assert folded.tags == ["品牌:华为", "Toys"]
    assert as_product({"title": "kite", "tags": ["x" * 512]}).tags == ["x" * 512]
    with pytest.raises(ValueError, match="product 2, field 'tags': a tag of 513 characters"):
        as_product({"title": "kite", "tags": ["x" * 513]}, 2)
