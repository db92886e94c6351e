"""Tests of labelrec.data: catalog formats, tag handling, validation, vocabulary and splits."""

from __future__ import annotations

import csv
import gzip
import json
import pickle
import random
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from labelrec.config import Config, DataConfig, LexicalConfig
from labelrec.data import (
    Catalog,
    CatalogError,
    Product,
    TagVocab,
    category_separator,
    expand_hierarchy,
    iter_catalog,
    read_catalog,
    read_texts,
    split_products,
    tag_cell,
)
from labelrec.taxonomy import parent_index

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

ROWS = [
    {"id": "p1", "title": "Wooden  puzzle", "description": "A 100 piece\njigsaw", "tags": ["toys"]},
    {"id": "p2", "title": "Train set", "description": "", "tags": ["toys", "trains"]},
    {
        "id": "p3",
        "title": "拼图 玩具 🧩",
        "description": "儿童 益智",
        "tags": ["玩具", "品牌:乐高"],
    },
]


def write_jsonl(path: Path, rows: list[dict], blank_lines: bool = False) -> Path:
    lines = [json.dumps(r, ensure_ascii=False) for r in rows]
    sep = "\n\n" if blank_lines else "\n"
    path.write_text(sep.join(lines) + "\n", encoding="utf-8")
    return path


def ids(products: list[Product]) -> list[str]:
    return [p.id for p in products]


# --------------------------------------------------------------------------- formats


def test_jsonl_basic_unicode_and_whitespace(tmp_path):
    path = write_jsonl(tmp_path / "cat.jsonl", ROWS, blank_lines=True)
    cat = read_catalog(path, DataConfig())
    assert isinstance(cat, Catalog)
    assert cat.source == str(path) and cat.n_skipped == 0 and len(cat) == 3
    p1, p2, p3 = cat.products
    assert p1 == Product("p1", "Wooden puzzle", "A 100 piece jigsaw", ["toys"])
    assert p2.description == "" and p2.tags == ["toys", "trains"]
    assert p3.title == "拼图 玩具 🧩" and p3.description == "儿童 益智"
    assert p3.tags == ["玩具", "品牌:乐高"]


def test_json_array_and_ndjson_and_gz(tmp_path):
    arr = tmp_path / "cat.json"
    arr.write_text(json.dumps(ROWS, ensure_ascii=False), encoding="utf-8")
    nd = write_jsonl(tmp_path / "cat.ndjson", ROWS)
    gz = tmp_path / "cat.jsonl.gz"
    with gzip.open(gz, "wt", encoding="utf-8") as fh:
        fh.write("\n".join(json.dumps(r, ensure_ascii=False) for r in ROWS))
    expected = read_catalog(nd, DataConfig()).products
    assert read_catalog(arr, DataConfig()).products == expected
    assert read_catalog(gz, DataConfig()).products == expected


def test_csv_with_header_delimited_tags(tmp_path):
    path = tmp_path / "cat.csv"
    path.write_text(
        "id,title,description,tags\n"
        'p1,"Puzzle, wooden",,toys| puzzles |\n'
        'p2,Train,"Big, red","[""toys"", ""trains""]"\n',
        encoding="utf-8",
    )
    cat = read_catalog(path, DataConfig())
    assert cat.products == [
        Product("p1", "Puzzle, wooden", "", ["toys", "puzzles"]),
        Product("p2", "Train", "Big, red", ["toys", "trains"]),
    ]


def test_csv_of_a_pandas_list_column(tmp_path):
    import pandas as pd

    path = tmp_path / "cat.csv"
    rows = [
        {"id": "p1", "title": "Planter", "tags": ["Garden", "Garden > Planters", "Kid's"]},
        {"id": "p2", "title": "Sale item", "tags": "[Sale]"},  # a tag in brackets stays one
    ]
    pd.DataFrame(rows).to_csv(path, index=False)  # a list is written as Python's repr
    cat = read_catalog(path, DataConfig(hierarchy_separator=" > "))
    assert [p.tags for p in cat.products] == [
        ["Garden", "Garden > Planters", "Kid's"],
        ["[Sale]"],
    ]


def test_full_width_tags_are_the_ascii_tags(tmp_path):
    rows = [
        {"id": "1", "title": "a", "tags": ["品牌：Ａｐｐｌｅ", "服饰 ＞ 男装"]},
        {"id": "2", "title": "b", "tags": ["品牌:Apple", "服饰 > 男装 > T恤"]},
    ]
    path = write_jsonl(tmp_path / "cat.jsonl", rows)
    cat = read_catalog(path, DataConfig(hierarchy_separator=" > "))
    assert cat.products[0].tags == ["品牌:Apple", "服饰", "服饰 > 男装"]
    vocab = TagVocab.from_products(cat.products)
    assert vocab.tags.count("品牌:Apple") == 1 and len(vocab) == 4
    prefixed = DataConfig(tag_columns=["brand"], tag_prefixes=["品牌："])
    path = write_jsonl(
        tmp_path / "brands.jsonl", [{"id": "1", "title": "a", "brand": "Ａｐｐｌｅ"}]
    )
    assert read_catalog(path, prefixed).products[0].tags == ["品牌:Apple"]


def test_one_tag_in_two_unicode_forms_is_one_tag(tmp_path):
    nfc, nfd = "brand:Caf\u00e9", "brand:Cafe\u0301"
    path = write_jsonl(
        tmp_path / "cat.jsonl",
        [{"id": "1", "title": "a", "tags": [nfc]}, {"id": "2", "title": "b", "tags": [nfd]}],
    )
    vocab = TagVocab.from_products(read_catalog(path).products)
    assert vocab.tags == [nfc] and list(vocab.counts) == [2]
    assert vocab.find(nfd) == 0 and vocab.find("BRAND:CAFE\u0301") == 0


def test_tags_that_differ_only_in_case_are_named(tmp_path):
    vocab = TagVocab(["brand:Toyland", "Toys", "brand:TOYLAND", "toys", "Books"], [3, 3, 1, 1, 1])
    assert vocab.variants() == [["brand:Toyland", "brand:TOYLAND"], ["Toys", "toys"]]
    assert TagVocab(["a", "b"], [1, 1]).variants() == []


def test_full_width_delimiters_split_tags_as_ascii_ones(tmp_path):
    path = tmp_path / "cat.csv"
    path.write_text(
        "id,title,tags\n"
        '1,华为手机 Mate60,"品牌:华为，品类:手机"\n'
        '2,小米手机,"品牌:小米,品类:手机"\n',
        encoding="utf-8",
    )
    comma = read_catalog(path, DataConfig(tag_delimiter=","))
    assert [p.tags for p in comma.products] == [
        ["品牌:华为", "品类:手机"],
        ["品牌:小米", "品类:手机"],
    ]
    wide_comma = read_catalog(path, DataConfig(tag_delimiter="，"))
    assert [p.tags for p in wide_comma.products] == [p.tags for p in comma.products]
    bars = write_jsonl(tmp_path / "bars.jsonl", [{"id": "1", "title": "a", "tags": "a｜b|c"}])
    assert read_catalog(bars, DataConfig()).products[0].tags == ["a", "b", "c"]
    assert tag_cell("品牌:华为｜品类:手机") == ["品牌:华为", "品类:手机"]
    from labelrec.data import split_tag_string, tag_string

    assert split_tag_string("color：Ｒｅｄ｜Toys") == ["color：Ｒｅｄ", "Toys"]  # as written
    for tags in (["a｜b", "c"], ["[Sale]"], ["brand:|MFG", "Toys"]):  # read back as one tag each
        assert len(tag_cell(tag_string(tags))) == len(tags)


def test_category_paths_use_the_hierarchy_separator_of_the_catalog(tmp_path):
    rows = [{"id": "1", "title": "a", "tags": ["数码＞手机配件＞手机壳"]}]
    path = write_jsonl(tmp_path / "cat.jsonl", rows)
    cfg = Config(data=DataConfig(hierarchy_separator="＞"))
    tags = read_catalog(path, cfg.data).products[0].tags
    assert tags == ["数码", "数码>手机配件", "数码>手机配件>手机壳"]
    separator = category_separator(cfg)
    assert separator == ">"
    assert parent_index(tags, separator).tolist() == [-1, 0, 1]
    assert category_separator(Config()) == " > "
    assert category_separator(Config(lexical=LexicalConfig(path_separator=" / "))) == " / "
    assert category_separator(Config(lexical=LexicalConfig(ancestor_consistency=False))) is None


def test_csv_without_header_guessed_and_explicit(tmp_path):
    path = tmp_path / "raw.csv"
    path.write_text(
        "a1,Hornby catalogue,Hobbies > Trains,Hornby,3.42\n"
        "a2,Jigsaw 1000,Toys > Puzzles > Jigsaw,,12.50\n"
        "a3,Lego car,Toys > Construction,brand:LEGO,20.00\n"
        "a4,Lego bus,Toys > Construction,Brand:LEGO,20.00\n",
        encoding="utf-8",
    )
    mapping = dict(
        id_column="0",
        title_column="1",
        description_column=None,
        tag_columns=["2", "3"],
        tag_prefixes=["", "brand:"],
        hierarchy_separator=" > ",
    )
    explicit = read_catalog(path, DataConfig(**mapping, csv_header=False))
    guessed = read_catalog(path, DataConfig(**mapping))
    assert explicit.products == guessed.products
    assert ids(explicit.products) == ["a1", "a2", "a3", "a4"]
    assert explicit.products[0].tags == ["Hobbies", "Hobbies > Trains", "brand:Hornby"]
    assert explicit.products[1].tags == ["Toys", "Toys > Puzzles", "Toys > Puzzles > Jigsaw"]
    # the prefix is not added twice, in the value's case or another
    assert explicit.products[2].tags == ["Toys", "Toys > Construction", "brand:LEGO"]
    assert explicit.products[3].tags == explicit.products[2].tags


def test_csv_header_addressed_by_index(tmp_path):
    path = tmp_path / "cat.csv"
    path.write_text("sku,name,cats\nx1,Ball,sport\n", encoding="utf-8")
    cfg = DataConfig(
        id_column="0", title_column="1", description_column=None, tag_columns=["2"], csv_header=True
    )
    assert read_catalog(path, cfg).products == [Product("x1", "Ball", "", ["sport"])]


@pytest.mark.parametrize(
    ("name", "delim"), [("cat.csv", ";"), ("cat.tsv", "\t"), ("cat.csv", "|"), ("cat.csv", "\t")]
)
def test_csv_delimiters_sniffed(tmp_path, name, delim):
    path = tmp_path / name
    rows = [
        ["id", "title", "description", "tags"],
        ["p1", "Puzzle, wooden; nice", "Fun", "toys"],
        ["p2", "Train", "A, b; c", "toys,trains"],
    ]
    with open(path, "w", encoding="utf-8", newline="") as fh:
        csv.writer(fh, delimiter=delim, lineterminator="\n").writerows(rows)
    cfg = DataConfig(tag_delimiter=",")
    products = read_catalog(path, cfg).products
    assert products == [
        Product("p1", "Puzzle, wooden; nice", "Fun", ["toys"]),
        Product("p2", "Train", "A, b; c", ["toys", "trains"]),
    ]
    # an explicit delimiter gives the same
    explicit = DataConfig(tag_delimiter=",", csv_delimiter=delim)
    assert read_catalog(path, explicit).products == products


def test_csv_gz_and_long_description(tmp_path):
    long_text = "word " * 60_000  # > csv's default field size limit of 131072 characters
    path = tmp_path / "cat.csv.gz"
    with gzip.open(path, "wt", encoding="utf-8", newline="") as fh:
        fh.write(f'id,title,description,tags\np1,Book,"{long_text}",books\n')
    (product,) = read_catalog(path, DataConfig()).products
    assert product.description == long_text.strip()


def test_parquet_lists_strings_ids_and_nulls(tmp_path):
    table = pa.table(
        {
            "sku": pa.array([101, 102, 103], pa.int64()),
            "name": ["Ball", "Kite 🪁", "积木"],
            "text": ["Round", None, "  儿童\t玩具 "],
            "cats": [["Sport > Balls"], [], ["Toys > Blocks", "Toys"]],
            "brand": ["Acme", None, "brand:乐高"],
        }
    )
    path = tmp_path / "cat.parquet"
    pq.write_table(table, path, row_group_size=2)
    cfg = DataConfig(
        id_column="sku",
        title_column="name",
        description_column="text",
        tag_columns=["cats", "brand"],
        tag_prefixes=["", "brand:"],
        hierarchy_separator=" > ",
        on_error="skip",
    )
    cat = read_catalog(path, cfg)
    assert cat.products == [
        Product("101", "Ball", "Round", ["Sport", "Sport > Balls", "brand:Acme"]),
        Product("103", "积木", "儿童 玩具", ["Toys", "Toys > Blocks", "brand:乐高"]),
    ]
    assert cat.n_skipped == 1
    assert cat.skipped[0] == f"{path}, row 2, field 'cats, brand': no tags"
    # not requiring tags keeps the row
    assert ids(read_catalog(path, cfg, require_tags=False).products) == ["101", "102", "103"]


def test_a_parquet_file_damaged_inside_names_the_row_it_fails_at(tmp_path, monkeypatch):
    """Rows before the damage are read; the error names the file and the first row not read."""
    from labelrec import data

    table = pa.table({"id": [str(i) for i in range(6)], "title": [f"t{i}" for i in range(6)]})
    path = tmp_path / "cat.parquet"
    pq.write_table(table, path, row_group_size=2, compression="none")
    page = pq.ParquetFile(path).metadata.row_group(1).column(1).data_page_offset
    raw = bytearray(path.read_bytes())
    raw[page : page + 24] = b"\xff" * 24
    path.write_bytes(bytes(raw))
    monkeypatch.setattr(data, "_PARQUET_BATCH", 2)  # a batch a row group
    read = []
    with pytest.raises(CatalogError, match=r"cat\.parquet, row 3: cannot read Parquet") as err:
        for chunk in data.iter_catalog(path, DataConfig(), require_tags=False, chunk_size=2):
            read += [p.id for p in chunk]
    assert read == ["0", "1"] and err.value.line == 3 and err.value.unit == "row"


def test_a_key_given_twice_in_a_json_row_is_a_bad_row(tmp_path):
    """JSON keeps the last value of a repeated key: a column read twice is refused, naming the
    line and field; a repeated key labelrec does not read is no one's business."""
    rows = [
        '{"id": "K1", "title": "LEGO City", "tags": ["Toys"], "tags": []}',
        '{"id": "K2", "title": "Hornby", "tags": ["Hobbies"], "Title": "Doll"}',
        '{"id": "K3", "title": "Kite", "tags": ["Toys"], "price": 1, "price": 2}',
    ]
    path = tmp_path / "cat.jsonl"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    with pytest.raises(CatalogError, match=r"line 1, field 'tags': key 'tags' given twice"):
        read_catalog(path, DataConfig())
    cat = read_catalog(path, DataConfig(on_error="skip"))
    assert ids(cat.products) == ["K2", "K3"] and cat.products[0].title == "Hornby"  # the exact key
    assert cat.skipped == [
        f"{path}, line 1, field 'tags': key 'tags' given twice: the second would replace the first"
    ]
    array = tmp_path / "cat.json"
    array.write_text("[" + ",\n".join(rows) + "]", encoding="utf-8")
    with pytest.raises(CatalogError, match=r"item 1, field 'tags': key 'tags' given twice"):
        read_catalog(array, DataConfig())
    # a title named in a nested object too is one title; an object where a string belongs is
    # called a dict, as JSON's reader makes it, also one that repeats a key of its own
    nested = (
        '{"id": "K4", "title": "Kite", "tags": ["Toys"], "meta": {"title": "x", "a": 1, "a": 2}}'
    )
    path.write_text(nested + '\n{"id": {"a": 1, "a": 2}, "title": "Ball", "tags": ["Toys"]}\n')
    cat = read_catalog(path, DataConfig(on_error="skip"))
    assert ids(cat.products) == ["K4"] and cat.skipped[0].endswith("got dict")
    array.write_text("[" + path.read_text().strip().replace("\n", ",") + "]")
    assert read_catalog(array, DataConfig(on_error="skip")).skipped[0].endswith("got dict")
    # a key written another way is that key: in Chinese, escaped as json.dumps writes it,
    # with a \u escape of its own, with a quote in it
    for column, line in [
        ("标题", '{"id": "K5", "标题": "风筝", "tags": ["Toys"], "标题": "球"}'),
        ("标题", '{"id": "K5", "\\u6807\\u9898": "a", "tags": ["Toys"], "\\u6807\\u9898": "b"}'),
        ("tags", '{"id": "K5", "title": "Kite", "tags": ["Toys"], "\\u0074ags": ["Books"]}'),
        ('ti"tle', '{"id": "K5", "ti\\"tle": "a", "tags": ["Toys"], "ti\\"tle": "b"}'),
    ]:
        path.write_text(line + "\n", encoding="utf-8")
        cfg = DataConfig(title_column="title" if column == "tags" else column)
        with pytest.raises(CatalogError, match=f"key {column!r} given twice"):
            read_catalog(path, cfg)


def test_unknown_and_txt_formats_rejected(tmp_path):
    for name in ("cat.txt", "cat.xlsx"):
        path = tmp_path / name
        path.write_text("x\n", encoding="utf-8")
        with pytest.raises(CatalogError, match=name):
            read_catalog(path, DataConfig())
    with pytest.raises(FileNotFoundError):
        read_catalog(tmp_path / "nope.jsonl", DataConfig())


# --------------------------------------------------------------------------- tags


def test_expand_hierarchy():
    assert expand_hierarchy("Toys > Puzzles > Jigsaw", " > ") == [
        "Toys",
        "Toys > Puzzles",
        "Toys > Puzzles > Jigsaw",
    ]
    assert expand_hierarchy("Toys", " > ") == ["Toys"]
    assert expand_hierarchy("Toys >  > Puzzles > ", " > ") == ["Toys", "Toys > Puzzles"]
    assert expand_hierarchy("a|b", "|") == ["a", "a|b"]
    assert expand_hierarchy("Age 3>5 > Kids", " > ") == ["Age 3>5", "Age 3>5 > Kids"]
    # the separator's mark inside a level's own text stays
    assert expand_hierarchy("Books + C++", " + ") == ["Books", "Books + C++"]
    assert expand_hierarchy("Toys > >3 years", " > ") == ["Toys", "Toys > >3 years"]
    assert expand_hierarchy("Deals - -50% off", " - ") == ["Deals", "Deals - -50% off"]
    assert expand_hierarchy("Toys > > > Jigsaw", " > ") == ["Toys", "Toys > Jigsaw"]


def test_category_paths_with_a_separator_at_an_end_or_twice_read_as_their_levels(tmp_path):
    """A catalog's tags are trimmed and their spaces collapsed before the path is split: a
    separator at an end or given twice still leaves no empty level nor a stray mark."""
    path = tmp_path / "cat.jsonl"
    tags = ["Toys > ", " > Toys > Puzzles", "Toys >  > Jigsaw"]
    path.write_text(json.dumps({"id": "1", "title": "x", "tags": tags}) + "\n", encoding="utf-8")
    (product,) = read_catalog(path, DataConfig(hierarchy_separator=" > ")).products
    assert product.tags == ["Toys", "Toys > Puzzles", "Toys > Jigsaw"]


def test_tags_prefix_hierarchy_only_unprefixed_and_dedupe(tmp_path):
    rows = [
        {
            "id": "p1",
            "title": "T",
            "cat": "Toys > Puzzles|Toys",
            "brand": ["A > B", "brand:A > B", " "],
        }
    ]
    path = write_jsonl(tmp_path / "c.jsonl", rows)
    cfg = DataConfig(
        description_column=None,
        tag_columns=["cat", "brand"],
        tag_prefixes=["", "brand:"],
        hierarchy_separator=" > ",
    )
    (product,) = read_catalog(path, cfg).products
    assert product.tags == ["Toys", "Toys > Puzzles", "brand:A > B"]


def test_an_inline_facet_is_not_split_at_the_hierarchy_separator(tmp_path):
    rows = [{"id": "p1", "title": "T", "tags": ["Toys/Balloons", "brand:Anagram/MD"]}]
    path = write_jsonl(tmp_path / "c.jsonl", rows)
    (product,) = read_catalog(path, DataConfig(hierarchy_separator="/")).products
    assert product.tags == ["Toys", "Toys/Balloons", "brand:Anagram/MD"]
    # a colon in a later level of a path: a path, split as any other
    rows = [{"id": "p1", "title": "T", "tags": ["Computers/Laptops:Gaming"]}]
    path = write_jsonl(tmp_path / "c.jsonl", rows)
    (product,) = read_catalog(path, DataConfig(hierarchy_separator="/")).products
    assert product.tags == ["Computers", "Computers/Laptops:Gaming"]


def test_no_prefixes_configured(tmp_path):
    path = write_jsonl(tmp_path / "c.jsonl", [{"id": "1", "title": "T", "tags": "b|a|b| "}])
    assert read_catalog(path, DataConfig()).products[0].tags == ["b", "a"]


# --------------------------------------------------------------------------- validation


def test_a_quote_left_open_to_the_end_of_the_file_is_an_error(tmp_path):
    path = tmp_path / "catalog.csv"
    path.write_text(
        "id,tags,title\n"
        "p1,toys,Puzzle\n"
        'p2,toys,"Kite with a stray quote\n'  # line 3: the rest of the file would be its title
        "p3,trains,Train\n"
        "p4,toys,Ball\n",
        encoding="utf-8",
    )
    with pytest.raises(CatalogError, match="quoted field is not closed") as info:
        read_catalog(path, DataConfig())
    assert info.value.line == 3
    # a quoted field over several lines, closed, ending the file: a good catalog
    path.write_text('id,tags,title\np1,toys,"Kite\nred"\n', encoding="utf-8")
    assert read_catalog(path, DataConfig()).products[0].title == "Kite red"


def test_a_stray_quote_is_reported_before_the_row_it_swallowed(tmp_path):
    # the row holding the quote would fail on its tags (its title takes the rest of the file):
    # the quote is what is reported, with or without tags required
    path = tmp_path / "catalog.csv"
    path.write_text('id,title,tags\np1,Puzzle,toys\np2,"Puzzle,d,toys\n', encoding="utf-8")
    for require_tags in (True, False):
        with pytest.raises(CatalogError, match="quoted field is not closed") as info:
            read_catalog(path, DataConfig(), require_tags=require_tags)
        assert info.value.line == 3


def test_a_stray_quote_inside_the_file_is_an_error_not_lost_rows(tmp_path):
    """A quote opening a field that a later quote closes (not as CSV closes one) would take the
    rows in between as its text: an error naming the line, not silently fewer products."""
    path = tmp_path / "catalog.csv"
    path.write_text(
        'id,title,description,tags\n1,"12 inch ruler,d,Toys\n2,Train,d,Hobbies\n'
        '3,Car,d,Toys\n4,Doll "Anna",d,Toys\n5,Kite,d,Toys\n',
        encoding="utf-8",
    )
    with pytest.raises(CatalogError, match="stray quote mark") as info:
        read_catalog(path, DataConfig())
    assert info.value.line == 2 and "to line 5" in str(info.value)
    # quoted fields over several lines, each closed: read as they are, inch marks too
    path.write_text(
        'id,title,description,tags\n1,"LEGO\nset, big",d,Toys\n'
        '2,Train 12" long,"two\nlines, here",Hobbies\n',
        encoding="utf-8",
    )
    products = read_catalog(path, DataConfig()).products
    assert [(p.title, p.description) for p in products] == [
        ("LEGO set, big", "d"),
        ('Train 12" long', "two lines, here"),
    ]


def test_the_header_again_is_a_bad_row_not_a_product(tmp_path):
    """Files joined end to end repeat their header (with its BOM): a bad row naming its line,
    skipped and counted under data.on_error=skip."""
    path = tmp_path / "catalog.csv"
    path.write_text(
        "id,title,tags\n1,LEGO,Toys\n\ufeffid,title,tags\n2,Train,Hobbies\n", encoding="utf-8"
    )
    with pytest.raises(CatalogError, match="the header row again") as info:
        read_catalog(path, DataConfig())
    assert info.value.line == 3
    catalog = read_catalog(path, DataConfig(on_error="skip"))
    assert [p.id for p in catalog.products] == ["1", "2"] and len(catalog.skipped) == 1


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ("id,title,tags,tags", "column 'tags' appears 2 times"),
        ("id,Title,TITLE,tags", "'Title', 'TITLE' all match it"),
    ],
)
def test_a_column_named_twice_is_an_error(tmp_path, header, message):
    """Two columns that both answer to a configured one: which holds the data cannot be told,
    so neither is dropped unseen (CSV kept the first, Parquet the last)."""
    path = tmp_path / "catalog.csv"
    path.write_text(f"{header}\n1,LEGO,Toys,brand:Lego\n", encoding="utf-8")
    with pytest.raises(CatalogError, match=message):
        read_catalog(path, DataConfig())
    table = pa.Table.from_arrays(
        [pa.array(["1"]), pa.array(["LEGO"]), pa.array(["Toys"]), pa.array(["brand:Lego"])],
        names=header.split(","),
    )
    pq.write_table(table, tmp_path / "catalog.parquet")
    with pytest.raises(CatalogError, match=message):
        read_catalog(tmp_path / "catalog.parquet", DataConfig())


@pytest.mark.parametrize(
    ("cell", "tags"),
    [
        ("['Toys' 'brand:Lego']", ["Toys", "brand:Lego"]),  # numpy's repr (Parquet lists, to_csv)
        ("['Toys'\n 'brand:Lego']", ["Toys", "brand:Lego"]),
        ("['Toys', None]", ["Toys"]),
        ("['Toys', nan]", ["Toys"]),
        ("['Toys', 'brand:Lego']", ["Toys", "brand:Lego"]),
        ("[Sale]", ["[Sale]"]),  # not a list: one tag
        ("['a' + 'b']", ["['a' + 'b']"]),
    ],
)
def test_list_cells_as_pandas_and_numpy_write_them(cell, tags):
    from labelrec.data import tag_cell

    assert tag_cell(cell) == tags


def test_an_empty_valid_file_is_an_error(tmp_path):
    """A data.valid with no products (a header only, or every row skipped) would leave nothing
    to stop, tune or measure on: an error naming it, not a model with untuned thresholds."""
    from labelrec.config import Config
    from labelrec.runs import load_splits

    train, valid = tmp_path / "train.csv", tmp_path / "valid.csv"
    train.write_text("id,title,tags\n1,LEGO,Toys\n2,Train,Hobbies\n", encoding="utf-8")
    valid.write_text("id,title,tags\n", encoding="utf-8")
    cfg = Config()
    cfg.data.train, cfg.data.valid = str(train), str(valid)
    with pytest.raises(ValueError, match=r"data.valid=.*valid.csv: no products$"):
        load_splits(cfg)
    valid.write_text("id,title,tags\n3,,Toys\n", encoding="utf-8")
    cfg.data.on_error = "skip"
    with pytest.raises(ValueError, match=r"no products \(1 bad rows skipped\)"):
        load_splits(cfg)


def test_lone_surrogates_name_their_line_and_field(tmp_path):
    # JSON can spell half of a surrogate pair ("\\ud800"): no tokenizer or database takes it
    lines = {
        "title": '{"id": "p2", "title": "bad \\ud800 x", "tags": ["a"]}',
        "id": '{"id": "p\\udc00", "title": "fine", "tags": ["a"]}',
        "tags": '{"id": "p2", "title": "fine", "tags": ["\\ud800"]}',
    }
    for field, line in lines.items():
        path = tmp_path / "catalog.jsonl"
        path.write_text(json.dumps(ROWS[0]) + "\n" + line + "\n", encoding="utf-8")
        with pytest.raises(CatalogError, match="surrogate") as info:
            read_catalog(path, DataConfig())
        assert (info.value.line, info.value.field) == (2, field)


def test_unreadable_gzip_files_are_catalog_errors(tmp_path):
    good = tmp_path / "good.jsonl.gz"
    rows = [{**ROWS[0], "id": f"p{i}"} for i in range(150)]
    good.write_bytes(gzip.compress("".join(json.dumps(r) + "\n" for r in rows).encode()))
    truncated = tmp_path / "cut.jsonl.gz"
    truncated.write_bytes(good.read_bytes()[:-40])
    not_gzip = tmp_path / "plain.jsonl.gz"
    not_gzip.write_text(json.dumps(ROWS[0]) + "\n", encoding="utf-8")
    csv_cut = tmp_path / "cut.csv.gz"
    body = "".join(f"p{i},Puzzle,toys\n" for i in range(500))
    csv_cut.write_bytes(gzip.compress(("id,title,tags\n" + body).encode())[:-40])
    for path, message in (
        (truncated, "ends early"),
        (not_gzip, "not a readable gzip file"),
        (csv_cut, "ends early"),
    ):
        with pytest.raises(CatalogError, match=message) as info:
            read_catalog(path, DataConfig(), require_tags=False)
        assert str(path) in str(info.value)
    with pytest.raises(CatalogError, match="ends early"):
        read_texts(truncated, DataConfig())


def test_bad_csv_row_line_number_after_multiline_field(tmp_path):
    path = tmp_path / "catalog.csv"
    path.write_text(
        "id,title,description,tags\n"  # line 1
        'p1,Puzzle,"first line\nsecond line\nthird line",toys\n'  # lines 2-4
        "p2,Train,ok,trains\n"  # line 5
        "p3,,no title here,toys\n"  # line 6
        "p4,Kite,ok,toys\n",  # line 7
        encoding="utf-8",
    )
    with pytest.raises(CatalogError) as info:
        read_catalog(path, DataConfig())
    err = info.value
    assert (err.path, err.line, err.field) == (str(path), 6, "title")
    assert str(err) == f"{path}, line 6, field 'title': empty title"
    assert "catalog.csv" in str(err)
    # the exception survives pickling (multiprocessing)
    assert str(pickle.loads(pickle.dumps(err))) == str(err)

    cat = read_catalog(path, DataConfig(on_error="skip"))
    assert ids(cat.products) == ["p1", "p2", "p4"]
    assert cat.products[0].description == "first line second line third line"
    assert cat.n_skipped == 1 and cat.skipped == [str(err)]


def test_a_pretty_printed_object_gets_a_hint(tmp_path):
    path = tmp_path / "one.json"
    path.write_text(json.dumps(ROWS[0], indent=2), encoding="utf-8")
    with pytest.raises(CatalogError, match="line 1: invalid JSON.*one whole product a line"):
        read_catalog(path, DataConfig())
    path.write_text(json.dumps([ROWS[0]], indent=2), encoding="utf-8")  # an array is read
    assert ids(read_catalog(path, DataConfig()).products) == ["p1"]


def test_bad_json_line_and_wrong_type(tmp_path):
    path = tmp_path / "cat.jsonl"
    path.write_text(
        json.dumps(ROWS[0])
        + "\n\n"
        + '{"id": "p9", "title": "broken"\n'  # line 3
        + json.dumps({"id": "p8", "title": 42, "tags": ["x"]})  # line 4
        + "\n"
        + json.dumps(ROWS[1])
        + "\n[1, 2]\n",  # line 6
        encoding="utf-8",
    )
    with pytest.raises(CatalogError, match=r"cat\.jsonl, line 3: invalid JSON") as info:
        read_catalog(path, DataConfig())
    assert info.value.line == 3 and info.value.field is None
    cat = read_catalog(path, DataConfig(on_error="skip"))
    assert ids(cat.products) == ["p1", "p2"]
    assert cat.n_skipped == 3
    assert "line 4, field 'title': expected a string, got int" in cat.skipped[1]
    assert "line 6: expected a JSON object, got list" in cat.skipped[2]


def test_no_tags_required_or_not(tmp_path):
    path = write_jsonl(
        tmp_path / "c.jsonl",
        [{"id": "1", "title": "A", "tags": []}, {"id": "2", "title": "B", "tags": "x"}],
    )
    with pytest.raises(CatalogError, match=r"line 1, field 'tags': no tags"):
        read_catalog(path, DataConfig())
    assert len(read_catalog(path, DataConfig(), require_tags=False).products) == 2
    assert ids(read_catalog(path, DataConfig(on_error="skip")).products) == ["2"]


def test_empty_id_is_an_error(tmp_path):
    path = write_jsonl(tmp_path / "c.jsonl", [{"id": " ", "title": "A", "tags": ["x"]}])
    with pytest.raises(CatalogError, match=r"line 1, field 'id': empty id"):
        read_catalog(path, DataConfig())


def test_duplicate_ids(tmp_path):
    path = tmp_path / "cat.csv"
    path.write_text("id,title,tags\na,One,x\nb,Two,y\na,Three,z\n", encoding="utf-8")
    with pytest.raises(CatalogError) as info:
        read_catalog(path, DataConfig())
    assert info.value.line == 4 and info.value.field == "id"
    assert "duplicate id 'a' (first at line 2)" in str(info.value)
    cat = read_catalog(path, DataConfig(on_error="skip"))
    assert [p.title for p in cat.products] == ["One", "Two"] and cat.n_skipped == 1


def test_missing_column_lists_available(tmp_path):
    csv_path = tmp_path / "cat.csv"
    csv_path.write_text("sku,name,tags\n1,Ball,x\n", encoding="utf-8")
    for on_error in ("raise", "skip"):  # a missing column is always an error
        with pytest.raises(CatalogError) as info:
            read_catalog(csv_path, DataConfig(on_error=on_error))
        assert info.value.line == 1 and info.value.field == "id"
        assert "missing columns 'id', 'title'" in str(info.value)
        assert "available: 'sku', 'name', 'tags'" in str(info.value)

    json_path = write_jsonl(tmp_path / "cat.jsonl", [{"id": "1", "name": "Ball", "tags": []}])
    for on_error in ("raise", "skip"):  # no object has a title
        with pytest.raises(CatalogError, match=r"line 1, field 'title': missing column 'title'"):
            read_catalog(json_path, DataConfig(on_error=on_error))
    # each JSON object has its own keys: one without a title is one bad row, wherever it is
    rows = [{"id": "0", "name": "Ball", "tags": ["x"]}]
    rows += [
        {"Title": "Kite", "id": "1", "tags": ["y"]},
        {"id": "2", "title": "Bat", "tags": ["z"]},
    ]
    json_path = write_jsonl(tmp_path / "some.jsonl", rows)
    with pytest.raises(CatalogError, match=r"line 1, field 'title': missing column 'title'"):
        read_catalog(json_path, DataConfig())
    cat = read_catalog(json_path, DataConfig(on_error="skip"))
    assert [p.title for p in cat.products] == ["Kite", "Bat"] and cat.n_skipped == 1

    pq_path = tmp_path / "cat.parquet"
    pq.write_table(pa.table({"id": ["1"], "title": ["Ball"]}), pq_path)
    with pytest.raises(CatalogError, match=r"missing column 'tags' \(available: 'id', 'title'\)"):
        read_catalog(pq_path, DataConfig())
    # tags are optional when not required, and so is the description column
    assert read_catalog(pq_path, DataConfig(), require_tags=False).products == [
        Product("1", "Ball")
    ]


def test_headerless_missing_index_column(tmp_path):
    path = tmp_path / "raw.csv"
    path.write_text("a,Ball\nb,Kite\n", encoding="utf-8")
    cfg = DataConfig(id_column="0", title_column="1", tag_columns=["5"], csv_header=False)
    with pytest.raises(CatalogError, match=r"missing column '5' \(available: '0', '1'\)"):
        read_catalog(path, cfg)


def test_extra_fields_are_a_row_error(tmp_path):
    path = tmp_path / "cat.csv"
    path.write_text("id,title,tags\na,One,x\nb,Two, big,y\nc,Three,z\n", encoding="utf-8")
    cat = read_catalog(path, DataConfig(on_error="skip"))
    assert ids(cat.products) == ["a", "c"]
    assert cat.skipped[0].startswith(f"{path}, line 3: 4 fields where the header has 3")


def test_max_products(tmp_path):
    path = write_jsonl(tmp_path / "c.jsonl", ROWS)
    assert ids(read_catalog(path, DataConfig(max_products=2)).products) == ["p1", "p2"]


# --------------------------------------------------------------------------- streaming


def _many_rows(n: int) -> list[dict]:
    return [
        {"id": f"p{i}", "title": f"Item {i}", "description": "", "tags": [f"t{i % 7}"]}
        for i in range(n)
    ]


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_iter_catalog_chunks_equal_read_catalog(tmp_path, fmt):
    rows = _many_rows(2500)
    rows[1234]["title"] = ""  # one bad row, skipped
    if fmt == "jsonl":
        path = write_jsonl(tmp_path / "c.jsonl", rows)
    elif fmt == "csv":
        path = tmp_path / "c.csv"
        lines = ["id,title,description,tags"]
        lines += [f"{r['id']},{r['title']},,{r['tags'][0]}" for r in rows]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    else:
        path = tmp_path / "c.parquet"
        pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=700)
    cfg = DataConfig(on_error="skip")
    full = read_catalog(path, cfg)
    skipped: list[str] = []
    chunks = list(iter_catalog(path, cfg, require_tags=True, chunk_size=1000, skipped=skipped))
    assert [len(c) for c in chunks] == [1000, 1000, 499]
    assert [p for c in chunks for p in c] == full.products
    assert skipped == full.skipped and len(skipped) == 1
    assert "field 'title': empty title" in skipped[0]


def test_count_records_gives_a_bar_its_total_where_it_is_cheap(tmp_path):
    from labelrec.data import count_records

    rows = _many_rows(2500)
    jsonl = write_jsonl(tmp_path / "c.jsonl", rows)
    assert count_records(jsonl, block=4096) == 2500  # lines across reading blocks
    unended = tmp_path / "u.jsonl"
    unended.write_bytes(b"\xef\xbb\xbf" + jsonl.read_bytes().rstrip(b"\n"))  # BOM, no last newline
    assert count_records(unended) == 2500 == len(read_catalog(unended, DataConfig()).products)
    parquet = tmp_path / "c.parquet"
    pq.write_table(pa.Table.from_pylist(rows), parquet, row_group_size=700)
    assert count_records(parquet) == 2500
    array = tmp_path / "a.json"
    array.write_text(json.dumps(rows[:3]), encoding="utf-8")
    csv_file = tmp_path / "c.csv"
    csv_file.write_text('id,title\np1,"two\nlines"\n', encoding="utf-8")  # 1 record, 3 lines
    gz = tmp_path / "c.jsonl.gz"
    gz.write_bytes(gzip.compress(jsonl.read_bytes()))
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"not parquet")
    for unknown in (array, csv_file, gz, bad, tmp_path / "missing.jsonl"):
        assert count_records(unknown) is None, unknown.name


def test_iter_catalog_duplicates_across_chunks(tmp_path):
    rows = [*_many_rows(30), _many_rows(1)[0]]
    path = write_jsonl(tmp_path / "c.jsonl", rows)
    with pytest.raises(CatalogError, match=r"line 31, field 'id': duplicate id 'p0'"):
        for _ in iter_catalog(path, DataConfig(), chunk_size=4):
            pass


def test_read_texts(tmp_path):
    txt = tmp_path / "texts.txt"
    txt.write_text("first  text\n\n  中文 文本 😀 \nthird\n", encoding="utf-8")
    assert read_texts(txt, DataConfig()) == ["first text", "中文 文本 😀", "third"]
    assert read_texts(txt, DataConfig(max_products=1)) == ["first text"]
    jsonl = write_jsonl(tmp_path / "c.jsonl", [{"title": "A", "description": "d"}, {"title": "B"}])
    assert read_texts(jsonl, DataConfig()) == ["A d", "B"]


# --------------------------------------------------------------------------- vocab and split


def _products() -> list[Product]:
    return [
        Product("a", "A", tags=["x", "y"]),
        Product("b", "B", tags=["y", "z"]),
        Product("c", "C", tags=["y", "x", "品牌:乐高"]),
        Product("d", "D", tags=["w"]),
    ]


def test_vocab_counts_order_and_min_count():
    vocab = TagVocab.from_products(_products())
    assert vocab.tags == ["y", "x", "w", "z", "品牌:乐高"]
    assert vocab.counts.dtype == np.int64 and vocab.counts.tolist() == [3, 2, 1, 1, 1]
    assert vocab.index["x"] == 1 and len(vocab) == 5
    small = TagVocab.from_products(_products(), min_count=2)
    assert small.tags == ["y", "x"]


def test_vocab_encode_decode(tmp_path):
    vocab = TagVocab.from_products(_products(), min_count=2)
    matrix = vocab.encode([*_products(), Product("e", "E", tags=["unknown"])])
    assert matrix.shape == (5, 2) and matrix.dtype == np.float32 and matrix.format == "csr"
    assert matrix.toarray().tolist() == [[1, 1], [1, 0], [1, 1], [0, 0], [0, 0]]
    assert vocab.decode(np.array([1, 0])) == ["x", "y"]
    assert vocab.encode([["x", "x"]]).toarray().tolist() == [[0, 1]]


def test_vocab_save_load_round_trip(tmp_path):
    vocab = TagVocab.from_products(_products())
    path = tmp_path / "sub" / "vocab.json"
    vocab.save(path)
    text = path.read_text(encoding="utf-8")
    assert "品牌:乐高" in text  # stored as UTF-8, not \u escapes
    assert set(json.loads(text)) == {"tags", "counts", "n_products"}
    loaded = TagVocab.load(path)
    assert loaded.tags == vocab.tags and loaded.counts.tolist() == vocab.counts.tolist()
    assert loaded.n_products == vocab.n_products == len(_products())
    assert loaded.index == vocab.index


def test_split_is_deterministic_and_order_independent():
    products = [Product(f"id{i}", f"T{i}", tags=["x"]) for i in range(2000)]
    train, valid = split_products(products, 0.2, seed=3)
    assert len(train) + len(valid) == 2000
    assert 300 < len(valid) < 500
    shuffled = products[:]
    random.Random(0).shuffle(shuffled)
    train2, valid2 = split_products(shuffled, 0.2, seed=3)
    assert set(ids(valid2)) == set(ids(valid)) and set(ids(train2)) == set(ids(train))
    _, valid_other = split_products(products, 0.2, seed=4)
    assert set(ids(valid_other)) != set(ids(valid))
    # a product's side does not depend on the others
    _, valid_sub = split_products(products[:500], 0.2, seed=3)
    assert set(ids(valid_sub)) == set(ids(valid)) & {f"id{i}" for i in range(500)}


def test_split_by_title_keeps_variants_of_a_product_on_one_side():
    words = ["kite", "drone", "puzzle", "robot", "yoyo", "train", "doll", "ball", "bear", "car"]
    products = [
        Product(f"{w}{size}", f"{w.title()} toy, {size} cm", tags=["x"])
        for w in words * 20
        for size in (10, 20, 35)
    ]
    train, valid = split_products(products, 0.3, seed=1, by_title=True)
    assert valid and train
    sides = {}
    for side, part in (("train", train), ("valid", valid)):
        for p in part:
            sides.setdefault(p.title.split()[0], set()).add(side)
    assert all(len(s) == 1 for s in sides.values())  # sizes of a toy never straddle the split
    # a title of digits alone has no key: its id decides
    numbered = [Product(f"n{i}", "12345", tags=["x"]) for i in range(200)]
    _, apart = split_products(numbered, 0.5, seed=0, by_title=True)
    assert 0 < len(apart) < 200


# --------------------------------------------------------------------------- real data


def test_amazon_uk_toys_raw_csv_matches_normalized():
    folder = SHARED_DATA / "amazon_uk_toys"
    if not (folder / "raw.csv").is_file() or not (folder / "train.jsonl").is_file():
        pytest.skip(f"shared data folder {folder} is absent (development-only real catalogs)")
    cfg = DataConfig(
        id_column="0",
        title_column="1",
        description_column=None,
        tag_columns=["2", "3"],
        tag_prefixes=["", "brand:"],
        hierarchy_separator=" > ",
        csv_header=False,
        on_error="skip",
    )
    raw = read_catalog(folder / "raw.csv", cfg)
    n_rows = len(raw.products) + raw.n_skipped
    assert len(raw.products) > 0.9 * n_rows
    assert all("raw.csv, line" in msg and "field" in msg for msg in raw.skipped)

    train = {p.id: p for p in read_catalog(folder / "train.jsonl", DataConfig()).products}
    first = raw.products[0]
    assert first.title == "Hornby 2014 Catalogue"
    assert first.tags == train[first.id].tags

    common = [p for p in raw.products if p.id in train]
    assert len(common) > 0.9 * len(train)
    agree = sum(set(p.tags) == set(train[p.id].tags) for p in common)
    assert agree / len(common) > 0.99


def test_not_utf8_and_bad_arguments(tmp_path):
    path = tmp_path / "latin1.csv"
    path.write_bytes("id,title,tags\n1,Caf\u00e9,x\n".encode("latin-1"))
    with pytest.raises(CatalogError, match="not valid UTF-8") as info:
        read_catalog(path, DataConfig())
    assert info.value.line == 2
    # far into a gzipped file, and after a character split across the scan's blocks
    rows = "".join(
        f'{{"id": "{i}", "title": "Caf\u00e9 {i}", "tags": ["x"]}}\n' for i in range(3000)
    )
    data = rows.encode() + b'{"id": "bad", "title": "caf\xe9", "tags": ["x"]}\n'
    gz = tmp_path / "big.jsonl.gz"
    gz.write_bytes(gzip.compress(data))
    with pytest.raises(CatalogError, match="not valid UTF-8") as info:
        read_catalog(gz, DataConfig())
    assert info.value.line == 3001
    from labelrec.data import _first_bad_utf8_line

    assert _first_bad_utf8_line(gz, block=7) == 3001
    with pytest.raises(ValueError, match="chunk_size"):
        iter_catalog(write_jsonl(tmp_path / "c.jsonl", ROWS), DataConfig(), chunk_size=0)
    with pytest.raises(FileNotFoundError):
        iter_catalog(tmp_path / "missing.jsonl", DataConfig())


@pytest.mark.parametrize("ext", [".jsonl", ".csv"])
def test_a_row_that_is_not_utf8_is_one_bad_row(tmp_path, ext):
    """Every row before it is read (a run that stops there has scored them), and with
    data.on_error=skip every row after it too; the sniffed CSV sample may hold it."""
    good = [{"id": str(i), "title": f"product {i} " + "x" * 40, "tags": ["a"]} for i in range(3000)]
    if ext == ".jsonl":
        lines = [json.dumps(r).encode() for r in good]
        lines[1499] = b'{"id": "bad", "title": "caf\xe9", "tags": ["a"]}'
        data = b"\n".join(lines) + b"\n"
        bad_line = 1500
    else:
        lines = [b"id,title,tags"] + [f"{r['id']},{r['title']},a".encode() for r in good]
        lines[1500] = b"bad,caf\xe9,a"
        data = b"\r\n".join(lines) + b"\r\n"
        bad_line = 1501
    path = tmp_path / f"latin1{ext}"
    path.write_bytes(data)
    before = []
    with pytest.raises(CatalogError, match=r"not valid UTF-8 \(byte 0xe9 at character") as info:
        for chunk in iter_catalog(path, DataConfig(), chunk_size=100):
            before += chunk
    assert info.value.line == bad_line and len(before) == 1499
    skipped = read_catalog(path, DataConfig(on_error="skip"))
    assert len(skipped.products) == 2999 and len(skipped.skipped) == 1
    assert "bad" not in ids(skipped.products)
    # a file in another encoding: its first row says so, whatever data.on_error says
    gbk = tmp_path / f"gbk{ext}"
    rows = [{"id": str(i), "title": f"华为手机 Mate{i}", "tags": ["a"]} for i in range(5)]
    if ext == ".jsonl":
        gbk.write_bytes(
            "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("gbk")
        )
    else:
        gbk.write_bytes(
            b"id,title,tags\n" + "".join(f"{r['id']},{r['title']},a\n" for r in rows).encode("gbk")
        )
    with pytest.raises(CatalogError, match="another encoding, GBK or Latin-1"):
        read_catalog(gbk, DataConfig(on_error="skip"))
    small = tmp_path / f"small{ext}"  # within the first block read: the bad line third
    head = data.splitlines()[: 3 if ext == ".csv" else 2]
    small.write_bytes(b"\n".join([*head, lines[bad_line - 1], head[-1]]) + b"\n")
    assert len(read_catalog(small, DataConfig(on_error="skip")).products) == 2


def test_a_deeply_nested_json_line_is_a_bad_row(tmp_path):
    path = tmp_path / "deep.jsonl"
    deep = "[" * 100_000 + "]" * 100_000
    path.write_text(
        '{"id": "1", "title": "ok", "tags": ["a"]}\n'
        + deep
        + "\n"
        + '{"id": "3", "title": "also ok", "tags": ["a"]}\n',
        encoding="utf-8",
    )
    with pytest.raises(CatalogError, match="line 2: invalid JSON: nested too deeply"):
        read_catalog(path, DataConfig())
    cat = read_catalog(path, DataConfig(on_error="skip"))
    assert ids(cat.products) == ["1", "3"] and cat.n_skipped == 1


def test_of_tags_that_fold_alike_the_first_is_found() -> None:
    from labelrec.data import TagVocab

    assert TagVocab(["brand:Lego", "brand:LEGO"], [5, 2]).find("BRAND:lego") == 0
    assert TagVocab(["brand:LEGO", "brand:Lego"], [2, 5]).find("BRAND:lego") == 0


def test_tags_joined_by_commas_get_a_hint(tmp_path, caplog):
    """Most tag cells read as one tag holding commas (Shopify's, WooCommerce's exports): a
    warning naming data.tag_delimiter; a catalog where few do (category names with commas)
    gets none."""
    path = tmp_path / "shop.csv"
    rows = "".join(f'{i},toy {i},"city, police, building"\n' for i in range(12))
    path.write_text("id,title,tags\n" + rows, encoding="utf-8")
    with caplog.at_level("WARNING", logger="labelrec.data"):
        read_catalog(path, DataConfig())
    assert "12 of 12 tagged products have a tag like 'city, police, building'" in caplog.text
    assert "data.tag_delimiter" in caplog.text and str(path) in caplog.text
    caplog.clear()
    split = read_catalog(path, DataConfig(tag_delimiter=","))
    assert split.products[0].tags == ["city", "police", "building"] and not caplog.text
    few = "".join(
        f'{i},toy {i},"Toys|Arts, Crafts"\n' if i < 3 else f"{i},toy {i},Toys\n" for i in range(12)
    )
    path.write_text("id,title,tags\n" + few, encoding="utf-8")
    with caplog.at_level("WARNING", logger="labelrec.data"):
        read_catalog(path, DataConfig())
    assert not caplog.text


def test_a_float_id_too_large_to_be_exact_is_a_bad_row(tmp_path):
    """12345678901234567890.0 is 12345678901234567168 as a float: an error, not another id."""
    path = tmp_path / "c.jsonl"
    path.write_text(
        '{"id": 7.0, "title": "a", "tags": ["x"]}\n'
        '{"id": 12345678901234567890.0, "title": "b", "tags": ["x"]}\n',
        encoding="utf-8",
    )
    with pytest.raises(CatalogError, match="line 2, field 'id': .*write ids as strings"):
        read_catalog(path, DataConfig())
    assert [p.id for p in read_catalog(path, DataConfig(on_error="skip")).products] == ["7"]


@pytest.mark.parametrize("name", ["export.csv", "export.txt.csv.gz"])
def test_utf16_text_is_named_as_such(tmp_path, name):
    """Excel's "Unicode Text" is UTF-16 with a byte order mark: the error says so and how to
    save it, rather than only "not valid UTF-8"."""
    data = "id\ttitle\ttags\n1\tLEGO\tToys\n".encode("utf-16")
    path = tmp_path / name
    path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    with pytest.raises(CatalogError, match="UTF-16 text .*save it as UTF-8"):
        read_catalog(path, DataConfig())


def test_excels_sep_line_names_the_delimiter(tmp_path):
    """Excel may write "sep=;" as a CSV's first line: the delimiter, not a row; the lines after
    it keep their numbers in errors."""
    path = tmp_path / "excel.csv"
    path.write_text("sep=;\r\nid;title;tags\r\n1;LEGO, big;Toys\r\n2;;Toys\r\n", encoding="utf-8")
    with pytest.raises(CatalogError, match="line 4, field 'title'"):
        read_catalog(path, DataConfig())
    products = read_catalog(path, DataConfig(on_error="skip")).products
    assert [(p.id, p.title, p.tags) for p in products] == [("1", "LEGO, big", ["Toys"])]


def test_a_first_row_of_data_read_as_a_header_gets_a_hint(tmp_path):
    """Column names that a guessed header does not have: the error says how to read a file
    without one; with data.csv_header=true set, it does not guess."""
    path = tmp_path / "raw.csv"
    path.write_text("1,LEGO set,Toys\n2,Train,Hobbies\n", encoding="utf-8")
    with pytest.raises(CatalogError, match="available: '1', 'LEGO set', 'Toys'.*csv_header=false"):
        read_catalog(path, DataConfig())
    with pytest.raises(CatalogError) as info:
        read_catalog(path, DataConfig(csv_header=True))
    assert "csv_header" not in str(info.value)
    cfg = DataConfig(csv_header=False, id_column="0", title_column="1", tag_columns=["2"])
    assert [p.title for p in read_catalog(path, cfg).products] == ["LEGO set", "Train"]


def test_control_characters_are_dropped_from_texts(tmp_path):
    """NUL, ESC and DEL show nothing: a title holding them reads as the title without them,
    in a catalog as in ``clean_text`` (which every front end uses)."""
    from labelrec.data import clean_text

    assert clean_text("LEGO\x00 police\x1b\x7f\tstation") == "LEGO police station"
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps({"id": "1", "title": "LE\x00GO", "tags": ["Toys"]}) + "\n", "utf-8")
    assert read_catalog(path, DataConfig()).products[0].title == "LEGO"


def test_bytes_that_are_not_utf8_in_a_column_not_read_do_not_matter(tmp_path):
    path = tmp_path / "notes.csv"
    path.write_bytes(b"id,title,tags,notes\n1,kite,Toys,ok\n2,ball,Toys,caf\xe9\n3,cup,Home,ok\n")
    assert ids(read_catalog(path, DataConfig()).products) == ["1", "2", "3"]
    path.write_bytes(b"id,title,tags\n1,kite,Toys\n2,caf\xe9,Toys\n")
    with pytest.raises(CatalogError, match="line 3, field 'title': not valid UTF-8"):
        read_catalog(path, DataConfig())
