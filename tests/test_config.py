"""Config: YAML files, ``a.b=value`` overrides, validation, and the documentation of every field."""

from __future__ import annotations

import dataclasses
import logging
import re
import typing
from pathlib import Path

import pytest
import yaml

from labelrec.config import (
    Config,
    ConfigError,
    DataConfig,
    config_to_dict,
    describe,
    flatten,
    load_config,
)

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"


@pytest.mark.parametrize("name", sorted(p.name for p in CONFIGS.glob("*.yaml")))
def test_shipped_configs_load(name: str) -> None:
    cfg = load_config(CONFIGS / name)
    raw = yaml.safe_load((CONFIGS / name).read_text(encoding="utf-8"))
    # Every value written in the file arrives in the Config (no key silently dropped).
    flat = flatten(config_to_dict(cfg))
    for key, value in flatten(raw).items():
        assert flat[key] == value, key


def test_default_yaml_equals_dataclass_defaults() -> None:
    """configs/default.yaml documents the defaults: it must not drift from the dataclasses."""
    assert config_to_dict(load_config(CONFIGS / "default.yaml")) == config_to_dict(Config())


def test_tiny_gpu_and_thorough_configs_differ_where_they_say() -> None:
    tiny = load_config(CONFIGS / "tiny.yaml")
    gpu = load_config(CONFIGS / "gpu.yaml")
    assert tiny.model.max_length < Config().model.max_length
    assert gpu.train.mixed_precision == "bf16"
    assert gpu.model.dtype == "bfloat16"
    thorough = flatten(config_to_dict(load_config(CONFIGS / "thorough.yaml")))
    default = flatten(config_to_dict(Config()))
    changed = {
        key: (default[key], value) for key, value in thorough.items() if value != default[key]
    }
    # the two settings it is for (tuning by folds needs the refit, which it keeps on), its output
    assert changed == {
        "train.tuning_folds": ("auto", 3),
        "lexical.ridge": (0.0, 0.3),
        "output": (default["output"], "runs/thorough"),
    }


def test_generate_config_is_the_defaults_plus_the_measured_generator() -> None:
    """configs/generate.yaml changes only the generator's settings (those of the measured runs)."""
    generate = flatten(config_to_dict(load_config(CONFIGS / "generate.yaml")))
    default = flatten(config_to_dict(Config()))
    changed = {key for key, value in generate.items() if value != default[key]}
    assert changed - {"output"} == {
        "generate.enabled",
        "generate.backbone",
        "generate.epochs",
        "generate.max_prompt_tokens",
        "generate.description_chars",
        "generate.max_new_tokens",
        "generate.num_beams",
        "generate.refit",
    }
    assert generate["generate.backbone"] == "google/gemma-3-270m"
    # the tagger, the voters and the refit of the tagger stay the defaults'
    assert generate["train.refit"] and generate["model.backbone"] == default["model.backbone"]


def test_overrides_coerce_types() -> None:
    cfg = load_config(
        CONFIGS / "tiny.yaml",
        [
            "train.epochs=5",
            "train.lr=1e-3",
            "train.head_lr=0.02",
            "lora.enabled=false",
            "data.csv_header=yes",
            "lora.target_modules=[query, key]",
            "data.tag_columns=tags,brand",
            "data.tag_prefixes=['', 'brand:']",
            "data.csv_delimiter=null",
            "data.max_products=None",
            "train.max_steps=7",
            "output=runs/x",
            "seed=3",
        ],
    )
    assert cfg.train.epochs == 5 and isinstance(cfg.train.epochs, int)
    assert cfg.train.lr == pytest.approx(1e-3) and isinstance(cfg.train.lr, float)
    assert cfg.train.head_lr == pytest.approx(0.02)
    assert cfg.lora.enabled is False
    assert Config().lora.enabled == "auto" and Config().train.lr is None
    assert load_config(None, ["lora.enabled=TRUE"]).lora.enabled is True
    assert load_config(None, ["lora.enabled=auto", "train.lr=null"]).lora.enabled == "auto"
    assert cfg.data.csv_header is True
    assert cfg.lora.target_modules == ["query", "key"]
    assert cfg.data.tag_columns == ["tags", "brand"]
    assert cfg.data.tag_prefixes == ["", "brand:"]
    assert cfg.data.csv_delimiter is None
    assert cfg.data.max_products is None
    assert cfg.train.max_steps == 7
    assert cfg.output == "runs/x" and cfg.seed == 3
    # Values of the file that were not overridden stay.
    assert cfg.model.max_length == 32


def test_override_null_on_optional_and_back() -> None:
    cfg = load_config(None, ["lora.target_modules=[q_proj]", "data.hierarchy_separator= > "])
    assert cfg.lora.target_modules == ["q_proj"]
    assert cfg.data.hierarchy_separator == " > "
    assert (
        load_config(CONFIGS / "gpu.yaml", ["lora.target_modules=null"]).lora.target_modules is None
    )


def test_override_value_may_contain_equals_sign() -> None:
    assert load_config(None, ["output=runs/a=b"]).output == "runs/a=b"


@pytest.mark.parametrize(
    "override, field",
    [
        ("train.foo=1", "train.foo"),
        ("nosuch.key=1", "nosuch"),
        ("train.epochs=abc", "train.epochs"),
        ("train.epochs=2.5", "train.epochs"),
        ("train.epochs=0", "train.epochs"),
        ("train.epochs=true", "train.epochs"),
        ("train.lr=fast", "train.lr"),
        ("train.lr=-1", "train.lr"),
        ("train.head_lr=0", "train.head_lr"),
        ("train.eval_batch_size=0", "train.eval_batch_size"),
        ("train.max_steps=0", "train.max_steps"),
        ("train.early_stopping_patience=-1", "train.early_stopping_patience"),
        ("train.scheduler=step", "train.scheduler"),
        ("train.mixed_precision=fp8", "train.mixed_precision"),
        ("generate.mixed_precision=fp8", "generate.mixed_precision"),
        ("describe.mixed_precision=int8", "describe.mixed_precision"),
        ("lora.enabled=maybe", "lora.enabled"),
        ("lora.r=0", "lora.r"),
        ("model.backbone=null", "model.backbone"),
        ("model.pooling=max", "model.pooling"),
        ("model.max_length=4", "model.max_length"),
        ("model.dtype=int4", "model.dtype"),
        ("model.save_dtype=float16", "model.save_dtype"),
        ("data.valid_fraction=1.5", "data.valid_fraction"),
        ("data.on_error=ignore", "data.on_error"),
        ("data.tag_prefixes=[a, b]", "data.tag_prefixes"),
        ("data.max_products=0", "data.max_products"),
        ("pretrain.mlm_probability=0", "pretrain.mlm_probability"),
        ("pretrain.batch_size=0", "pretrain.batch_size"),
        ("train=3", "train"),
        ("data.tag_columns=[2,3", "data.tag_columns"),  # a list that YAML cannot read
        ("train.lr=inf", "train.lr"),  # no setting means inf (or nan)
        ("train.weight_decay=-inf", "train.weight_decay"),
        ("train.threshold_prior=nan", "train.threshold_prior"),
        ("output=", "output"),  # the model would be written into the current directory
        ("output= ", "output"),
        ("data.tag_delimiter=", "data.tag_delimiter"),  # tags would not be split
        ("data.title_column=", "data.title_column"),
        ("data.id_column=", "data.id_column"),
        ("data.description_column=", "data.description_column"),
        ("data.tag_columns=", "data.tag_columns"),
        ("data.tag_columns=tags,", "data.tag_columns"),
        ("data.train=", "data.train"),
        ("data.hierarchy_separator=", "data.hierarchy_separator"),
        ("data.csv_delimiter=ab", "data.csv_delimiter"),
        ("data.tag_delimiter=null", "data.tag_delimiter"),
    ],
)
def test_bad_overrides_name_the_field(override: str, field: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert str(err.value).startswith(f"{field}:"), str(err.value)


def test_override_without_equals_sign() -> None:
    with pytest.raises(ConfigError, match="key=value"):
        load_config(None, ["train.epochs"])


def test_unknown_key_lists_the_known_ones(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  epoch: 3\n", encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert "train.epoch: unknown key (did you mean train.epochs?" in str(err.value)
    assert str(err.value).startswith(f"{path}: ")  # a setting of the file names the file
    # an override that breaks a setting of the file is the override's fault, not the file's
    path.write_text("train:\n  epochs: 3\n", encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_config(path, ["train.epochs.x=3"])
    assert str(err.value).startswith("train.epochs: "), str(err.value)


def test_strings_of_a_file_are_what_they_say_and_overrides_read_null_words(
    tmp_path: Path,
) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        'data:\n  tag_delimiter: "~"\n  csv_delimiter: "~"\n  hierarchy_separator: ~\n'
        "train:\n  refit: off\n",
        encoding="utf-8",
    )
    cfg = load_config(path)
    assert (cfg.data.tag_delimiter, cfg.data.csv_delimiter) == ("~", "~")  # quoted: the text
    assert cfg.data.hierarchy_separator is None and cfg.train.refit is False
    cfg = load_config(path, ["data.csv_delimiter=~", "train.refit=on", "lora.enabled=AUTO"])
    assert cfg.data.csv_delimiter is None and cfg.train.refit is True  # as YAML reads them
    assert cfg.lora.enabled == "auto"
    with pytest.raises(ConfigError, match="lora.enabled: must be true, false or auto"):
        load_config(None, ["lora.enabled=maybe"])
    with pytest.raises(ConfigError, match=r"^train.epochs: expected int"):  # not the file's
        load_config(path, ["train.epochs=x"])


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    bad.write_text("train:\n  epochs: 3\nlora:\n  r: 8\ntrain:\n  lr: 0.1\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="(?s)not valid YAML: .*'train' is given twice.*line 5"):
        load_config(bad)  # the second section would silently replace the first
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("3\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(scalar)
    section = tmp_path / "section.yaml"
    section.write_text("model: tiny\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"section\.yaml: model: expected a section"):
        load_config(section)


def test_text_that_yaml_reads_as_something_else_is_refused(tmp_path: Path) -> None:
    """`brand:` unquoted in a flow list is a mapping, `NO` a boolean, `1.10` a number: their
    Python text would be a wrong setting, so the error says to quote them."""
    path = tmp_path / "c.yaml"
    for text, key, kind in zip(
        (
            'data: {tag_columns: [tags, brand], tag_prefixes: ["", brand:]}',
            "data: {tag_columns: [NO, brand]}",
            "model: {backbone: 1.10}",
        ),
        ("data.tag_prefixes", "data.tag_columns", "model.backbone"),
        ("a mapping", "a boolean", "a number"),
        strict=True,
    ):
        path.write_text(text, encoding="utf-8")
        with pytest.raises(ConfigError, match=rf"{key}: expected text, got {kind} .*quote it"):
            load_config(path)
    with pytest.raises(ConfigError, match="data.tag_prefixes: expected text, got a mapping"):
        load_config(None, ['data.tag_prefixes=["", brand:]'])
    with pytest.raises(ConfigError, match="data.tag_columns: expected text, got a boolean"):
        load_config(None, ["data.tag_columns=[NO, brand]"])  # a list is read as YAML reads it
    cfg = load_config(None, ["data.tag_columns=['NO', brand]", "data.title_column=yes"])
    assert cfg.data.tag_columns == ["NO", "brand"] and cfg.data.title_column == "yes"
    assert load_config(None, ["data.id_column=0"]).data.id_column == "0"


def test_yaml_merge_keys_load_as_yaml_reads_them(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  <<: {epochs: 2, lr: 0.001}\n  epochs: 4\n", encoding="utf-8")
    cfg = load_config(path)
    assert (cfg.train.epochs, cfg.train.lr) == (4, 0.001)


def test_a_catalog_to_score_is_not_cut_by_the_configs_training_cap(tmp_path: Path) -> None:
    from labelrec.config import catalog_data_config

    path = tmp_path / "c.yaml"
    path.write_text("data:\n  max_products: 2000\n  on_error: skip\n", encoding="utf-8")
    data = catalog_data_config(path)
    assert data.max_products is None and data.on_error == "skip"
    assert catalog_data_config(path, ["data.max_products=5"]).max_products == 5


def test_a_models_data_settings_read_its_catalogs(caplog: pytest.LogCaptureFixture) -> None:
    from labelrec.config import model_data_config

    saved = {
        "title_column": "name",
        "train": "train.jsonl",
        "max_products": 50,
        "from_a_newer_labelrec": 1,
        "on_error": "sometimes",
    }
    info = {"config": {"data": saved}}
    with caplog.at_level(logging.WARNING, logger="labelrec.config"):
        data = model_data_config(info, ["data.id_column=sku"], values={"description_column": "d"})
    assert (data.title_column, data.id_column, data.description_column) == ("name", "sku", "d")
    assert data.train is None and data.max_products is None  # training files: not how it reads
    assert data.on_error == "raise"  # a saved value this labelrec refuses: the default
    warned = caplog.text
    assert "data.from_a_newer_labelrec: unknown key" in warned and "data.on_error" in warned
    assert model_data_config(None) == DataConfig()
    facets = {"tag_columns": ["tags", "brand"], "tag_prefixes": ["", "brand:"]}  # checked together
    data = model_data_config({"config": {"data": facets}})
    assert (data.tag_columns, data.tag_prefixes) == (["tags", "brand"], ["", "brand:"])
    crossed = {"config": {"data": {**facets, "tag_columns": ["tags"]}}}  # a saved pair refused
    assert model_data_config(crossed).tag_prefixes is None
    assert model_data_config(info, ["data.title_column=t"]).title_column == "t"
    with pytest.raises(ConfigError, match="data.on_error"):
        model_data_config(info, ["data.on_error=never"])  # the user's own value is checked


def _dataclass_fields(cls: type = Config, prefix: str = ""):
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            yield from _dataclass_fields(hints[f.name], f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", f


def test_every_field_has_help() -> None:
    missing = [name for name, f in _dataclass_fields() if not f.metadata.get("help", "").strip()]
    assert not missing, f"fields without a help string: {missing}"
    rows = describe()
    assert {name for name, _, _ in rows} == {name for name, _ in _dataclass_fields()}
    assert all(help_text for _, _, help_text in rows)


def _yaml_keys_with_comments(path: Path) -> dict[str, bool]:
    """Dotted key -> whether its line carries a ``#`` comment (leaf keys of a 2-level YAML)."""
    keys: dict[str, bool] = {}
    section = None
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = re.match(r"^(\s*)([A-Za-z_][\w]*):(.*)$", line)
        assert match, f"{path.name}: cannot parse line {line!r}"
        indent, key, rest = match.groups()
        value = re.sub(r"#.*$", "", rest).strip()
        if not indent and not value:  # a section header
            section = key
            continue
        dotted = f"{section}.{key}" if indent else key
        if not indent:
            section = None
        keys[dotted] = "#" in rest
    return keys


@pytest.mark.parametrize(
    "name", ["default.yaml", "tiny.yaml", "gpu.yaml", "thorough.yaml", "generate.yaml"]
)
def test_every_yaml_key_is_commented(name: str) -> None:
    keys = _yaml_keys_with_comments(CONFIGS / name)
    uncommented = [k for k, has in keys.items() if not has]
    assert not uncommented, f"{name}: keys without a comment: {uncommented}"
    # The parser saw exactly the keys YAML sees.
    assert set(keys) == set(flatten(yaml.safe_load((CONFIGS / name).read_text(encoding="utf-8"))))


def test_default_yaml_lists_every_field() -> None:
    keys = set(_yaml_keys_with_comments(CONFIGS / "default.yaml"))
    fields = {name for name, _ in _dataclass_fields()}
    assert fields == keys, f"missing: {fields - keys}, unknown: {keys - fields}"


def test_promotion_gate_is_declared_once_for_every_front_end() -> None:
    import argparse

    from labelrec.cli import build_parser
    from labelrec.config import PromotionConfig, add_arguments, from_arguments
    from labelrec.mlflow.steps import build_parser as steps_parser

    parser = argparse.ArgumentParser()
    add_arguments(parser, PromotionConfig)
    gate = from_arguments(PromotionConfig, parser.parse_args(["--n-resamples", "2000.0"]))
    assert gate == PromotionConfig(n_resamples=2000)
    gate = from_arguments(PromotionConfig, parser.parse_args(["--metric", "P_at_1"]))
    assert gate.metric == "P@1"
    cli = build_parser().parse_args(["promote", "--data", "d.jsonl", "--seed", "7"])
    step = steps_parser().parse_args(["promote", "--data", "d.jsonl", "--seed", "7"])
    assert from_arguments(PromotionConfig, cli) == from_arguments(PromotionConfig, step)
    assert from_arguments(PromotionConfig, cli).seed == 7
    for bad, message in [
        (dict(metric="PSP@3"), "metric: expected P@k"),
        (dict(margin=float("nan")), "margin: must be a finite number"),
        (dict(max_band_drop=2.0), "max_band_drop: must be in"),
        (dict(n_resamples=10), "n_resamples: must be >= 100"),
    ]:
        with pytest.raises(ConfigError, match=message):
            PromotionConfig(**bad)


def test_a_quoted_string_override_is_read_as_yaml_reads_it() -> None:
    """``'data.tag_delimiter=", "'`` and ``"data.hierarchy_separator=' > '"``: the quotes a
    user types to keep the spaces are not part of the value."""
    from labelrec.config import load_config

    cfg = load_config(None, ['data.tag_delimiter=", "', "data.hierarchy_separator=' > '"])
    assert (cfg.data.tag_delimiter, cfg.data.hierarchy_separator) == (", ", " > ")
    cfg = load_config(None, ["data.hierarchy_separator= > ", "data.tag_delimiter='"])
    assert (cfg.data.tag_delimiter, cfg.data.hierarchy_separator) == ("'", " > ")


def test_tuning_folds_auto_is_two_only_where_the_folds_can_run(tmp_path: Path) -> None:
    # the default: two folds for a tagger's refit
    assert Config().train.tuning_folds == "auto" and Config().tuning_fold_count == 2
    assert load_config(None, ["train.tuning_folds=1"]).tuning_fold_count == 1
    assert load_config(None, ["train.tuning_folds=auto"]).tuning_fold_count == 2
    for overrides in (
        ["train.refit=false"],  # the folds choose what a refit trains with
        ["generate.enabled=true"],  # one decoder a fold
        ["task=describe"],
    ):
        auto = load_config(None, ["train.tuning_folds=auto", *overrides])
        assert auto.tuning_fold_count == 1, overrides
    assert load_config(None, ["train.tuning_folds=3"]).tuning_fold_count == 3
    assert load_config(None, ["train.tuning_folds=AUTO"]).train.tuning_folds == "auto"
    for bad in ("0", "two", "2.5", "true"):
        with pytest.raises(ConfigError, match=r"^train.tuning_folds: must be"):
            load_config(None, [f"train.tuning_folds={bad}"])
    # an override quoted as YAML quotes it reads as the file's '2' does
    assert load_config(None, ["train.tuning_folds='2'"]).tuning_fold_count == 2
    for bad in ("2_0", "\u0662", "'2", "''", "+-2"):  # int() reads the first two; no setting does
        with pytest.raises(ConfigError, match=r"^train.tuning_folds: must be a whole number"):
            load_config(None, [f"train.tuning_folds={bad}"])
    yaml_file = tmp_path / "folds.yaml"
    for bad in ("2.0", "true", "0", "\"'2'\""):  # YAML's float, boolean, zero, quotes in text
        yaml_file.write_text(f"train:\n  tuning_folds: {bad}\n", encoding="utf-8")
        with pytest.raises(ConfigError, match=r"folds.yaml: train.tuning_folds: must be a whole"):
            load_config(yaml_file)
    with pytest.raises(ConfigError, match=r"^train.tuning_folds: needs train.refit"):
        load_config(None, ["train.tuning_folds=2", "train.refit=false"])


def test_a_check_of_two_settings_broken_by_an_override_does_not_blame_the_file() -> None:
    with pytest.raises(ConfigError, match=r"^train.tuning_folds: needs train.refit") as info:
        load_config(CONFIGS / "thorough.yaml", ["train.refit=false"])
    assert "thorough.yaml" not in str(info.value)
    with pytest.raises(ConfigError, match=r"^describe.min_new_tokens: .*describe.max_new_tokens"):
        load_config(CONFIGS / "describe.yaml", ["describe.max_new_tokens=4"])


def test_overrides_this_configuration_does_not_read_are_warned_about(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """`train.max_steps=1`, a quick check of a tagger, would train a describer in full."""
    import logging

    with caplog.at_level(logging.WARNING, logger="labelrec.config"):
        load_config(
            CONFIGS / "describe.yaml",
            ["train.max_steps=1", "describe.max_steps=1", "lexical.path_separator= / "],
        )
        load_config(None, ["describe.epochs=2", "generate.num_beams=2", "lexical.k=5"])
    warned = [r.getMessage().split(":")[0] for r in caplog.records]
    assert warned == ["train.max_steps", "describe.epochs", "generate.num_beams"]


def test_a_setting_given_outside_its_section_names_the_sections_that_have_it() -> None:
    with pytest.raises(ConfigError, match=r"^lr: unknown key \(did you mean train.lr or "):
        load_config(None, ["lr=1e-4"])


def test_a_config_edited_in_code_is_checked_before_a_run(tmp_path: Path) -> None:
    from labelrec.config import checked
    from labelrec.train import train

    cfg = load_config(None)
    cfg.output = tmp_path / "model"  # a Path, as a notebook writes it: the text of it
    assert checked(cfg).output == str(tmp_path / "model") and checked(checked(cfg)) == checked(cfg)
    cfg.train.epochs = -3
    with pytest.raises(ConfigError, match="train.epochs: must be >= 1"):
        train(cfg)  # before any data is read or model built
    assert not (tmp_path / "model").exists()
    with pytest.raises(TypeError, match="expected a labelrec Config"):
        checked({"output": "x"})  # type: ignore[arg-type]


@pytest.mark.parametrize("overrides", ["train.epochs=3", {"train.epochs": 3}, [3]])
def test_overrides_are_a_list_of_strings(overrides: object) -> None:
    with pytest.raises(ConfigError, match="overrides must be a list|expected a key=value string"):
        load_config(None, overrides)  # type: ignore[arg-type]


def test_a_home_folder_in_paths_is_expanded() -> None:
    """``~`` as zsh, PowerShell and YAML files leave it: the user's home, not a folder "~"."""
    cfg = load_config(None, ["output=~/models/m", "data.train=~/data/train.jsonl"])
    home = str(Path.home())
    assert cfg.output == f"{home}/models/m" and cfg.data.train == f"{home}/data/train.jsonl"
    assert load_config(None, ["output=runs/~x"]).output == "runs/~x"
