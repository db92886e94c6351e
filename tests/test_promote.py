"""Gated promotion of ``@challenger`` to ``@champion`` in the Model Registry."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import mlflow
import numpy as np
import pytest
from conftest import toy_catalog, write_jsonl  # noqa: E402
from test_mlflow_flavor import open_store  # noqa: E402

from labelrec import cli  # noqa: E402
from labelrec.data import TagVocab, read_catalog  # noqa: E402
from labelrec.evaluate import evaluate_scores_on  # noqa: E402
from labelrec.mlflow.registry import (  # noqa: E402
    RegistryError,
    decide,
    model_version_info,
    promote,
    register_challenger,
)
from labelrec.predict import TagRecommender  # noqa: E402

NAME = "labelrec"


@pytest.fixture
def mlflow_store(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    yield from open_store(tmp_path, tmp_path_factory, monkeypatch)


@pytest.fixture(scope="module")
def weak_model_dir(trained_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The trained tagger with the head rows of its most frequent tag and another swapped.

    Products with either tag rank them wrongly; the others rank exactly as before.
    """
    from safetensors.torch import load_file, save_file

    out = tmp_path_factory.mktemp("weak") / "model"
    shutil.copytree(trained_model_dir, out, ignore=shutil.ignore_patterns("checkpoints"))
    vocab = TagVocab.load(out / "tags.json")
    i, j = vocab.index["Toys"], vocab.index["Hobbies > Trains"]
    state = load_file(out / "model.safetensors")
    for key in ("classifier.weight", "classifier.bias"):
        swapped = state[key].clone()
        swapped[[i, j]] = state[key][[j, i]]
        state[key] = swapped
    save_file(state, out / "model.safetensors", metadata={"format": "pt"})
    return out


@pytest.fixture(scope="module")
def eval_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_jsonl(toy_catalog(), tmp_path_factory.mktemp("eval") / "all.jsonl")


def per_product_ndcg3(model_dir: Path, data: Path) -> np.ndarray:
    rec = TagRecommender.load(model_dir)
    products = read_catalog(data).products
    scores, _ = rec.predict_scores(products)
    return evaluate_scores_on(scores, products, rec.vocab, rec.thresholds(None)).per_product[
        "nDCG@3"
    ]


def champion_version() -> int | None:
    try:
        return model_version_info(f"models:/{NAME}@champion")["version"]
    except RegistryError:
        return None


def champion_moves_to(version: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another promotion, beside the one under test: @champion moves to ``version`` once the
    champion has been evaluated."""
    from labelrec.mlflow import registry

    evaluate = registry._evaluate_version

    def evaluate_and_move(model, mv, alias, frame, metric, counts=None):
        out = evaluate(model, mv, alias, frame, metric, counts)
        if alias == "champion":
            mlflow.MlflowClient().set_registered_model_alias(NAME, "champion", version)
        return out

    monkeypatch.setattr(registry, "_evaluate_version", evaluate_and_move)


# ----------------------------------------------------------------------- the rule itself


def test_decide_first_model_needs_min_metric() -> None:
    values = np.array([1.0, 0.5, 0.0, np.nan])
    assert decide(values, None, min_metric=0.5).promoted
    refused = decide(values, None, min_metric=0.6)
    assert not refused.promoted and "min_metric" in refused.reason
    assert refused.challenger_score == pytest.approx(0.5)
    assert refused.champion_score is None and refused.ci_low is None


def test_decide_promotes_a_clearly_better_model() -> None:
    rng = np.random.default_rng(0)
    old = rng.uniform(0.3, 0.7, 200)
    new = old + rng.uniform(0.05, 0.15, 200)
    bands_old = {"head": 0.8, "torso": 0.6, "tail": 0.3}
    bands_new = {"head": 0.82, "torso": 0.58, "tail": 0.35}
    d = decide(new, old, bands_new, bands_old, margin=0.05)
    assert d.promoted, d.reason
    assert d.diff == pytest.approx(new.mean() - old.mean())
    assert 0 < d.ci_low < d.diff < d.ci_high
    assert d.band_drops == pytest.approx({"head": -0.02, "torso": 0.02, "tail": -0.05})


def test_decide_refuses_a_worse_model() -> None:
    rng = np.random.default_rng(1)
    old = rng.uniform(0.3, 0.7, 100)
    d = decide(old - 0.1, old)
    assert not d.promoted and "not better" in d.reason and d.diff < 0


def test_decide_refuses_better_on_average_but_not_significant() -> None:
    # two products gain a lot, two lose almost as much, the rest are equal
    old = np.full(40, 0.5)
    new = old.copy()
    new[:2] += 0.5
    new[2:4] -= 0.4
    d = decide(new, old)
    assert d.diff > 0
    assert not d.promoted
    assert "not significant" in d.reason and "not better" not in d.reason
    assert d.ci_low <= 0 < d.ci_high


def test_decide_refuses_a_band_drop_and_a_small_gain() -> None:
    old = np.linspace(0.2, 0.8, 100)
    new = old + 0.05
    d = decide(new, old, {"head": 0.9, "tail": 0.2}, {"head": 0.9, "tail": 0.3})
    assert not d.promoted and "tail" in d.reason and "head" not in d.reason
    assert d.band_drops["tail"] == pytest.approx(0.1)
    assert decide(new, old, {"tail": 0.28}, {"tail": 0.3}).promoted  # within max_band_drop
    small = decide(new, old, margin=0.06)
    assert not small.promoted and "margin" in small.reason
    # a band one side has and the other lacks: nothing says it held
    one_sided = decide(new, old, {"torso": 0.8}, {"head": 1.0, "torso": 0.0})
    assert not one_sided.promoted and "head tags measured for one side only" in one_sided.reason


# ----------------------------------------------------------------------- in the registry


def test_promotion_in_the_registry(
    trained_model_dir: Path, weak_model_dir: Path, eval_file: Path, mlflow_store: Path
) -> None:
    # first model: any model passes min_metric=0 (refusals: test_promote_command)
    weak = register_challenger(weak_model_dir)
    d = promote(NAME, eval_file, min_metric=0.0)
    assert d.promoted and champion_version() == int(weak.version)
    assert model_version_info(f"models:/{NAME}/{weak.version}")["tags"]["promotion.decision"] == (
        "promoted"
    )

    # a better model moves @champion; scores and interval are tagged on the version
    strong = register_challenger(trained_model_dir)
    d = promote(NAME, eval_file)
    assert d.promoted, d.reason
    assert champion_version() == int(strong.version)
    assert d.champion_version == int(weak.version) and d.challenger_version == int(strong.version)
    assert d.ci_low > 0 and d.diff > 0
    want = per_product_ndcg3(trained_model_dir, eval_file).mean()
    assert d.challenger_score == pytest.approx(want)  # the numbers of `labelrec eval`
    tags = model_version_info(f"models:/{NAME}/{strong.version}")["tags"]
    assert float(tags["promotion.challenger_score"]) == pytest.approx(d.challenger_score)
    assert float(tags["promotion.champion_score"]) == pytest.approx(d.champion_score)
    assert float(tags["promotion.ci_low"]) == pytest.approx(d.ci_low)
    assert float(tags["promotion.ci_high"]) == pytest.approx(d.ci_high)

    # a worse challenger is refused and @champion stays
    worse = register_challenger(weak_model_dir)
    d = promote(NAME, eval_file)
    assert not d.promoted and "not better" in d.reason
    assert champion_version() == int(strong.version)
    assert (
        model_version_info(f"models:/{NAME}/{worse.version}")["tags"]["promotion.decision"]
        == "rejected"
    )
    client = mlflow.MlflowClient()
    aliases = client.get_registered_model(NAME).aliases
    assert aliases == {"champion": strong.version, "challenger": worse.version}  # aliases only
    versions = client.search_model_versions(f"name='{NAME}'")
    assert all(mv.current_stage in (None, "None") for mv in versions)


@pytest.mark.slow  # the rule itself: test_decide_refuses_better_on_average_but_not_significant
def test_better_on_average_but_not_significant_in_the_registry(
    trained_model_dir: Path,
    weak_model_dir: Path,
    eval_file: Path,
    mlflow_store: Path,
    tmp_path: Path,
) -> None:
    strong = per_product_ndcg3(trained_model_dir, eval_file)
    weak = per_product_ndcg3(weak_model_dir, eval_file)
    diff = strong - weak
    gain, equal = int(np.nanargmax(diff)), int(np.flatnonzero(diff == 0)[0])
    assert diff[gain] > 0
    rows = toy_catalog()
    small = write_jsonl([rows[gain], rows[equal]], tmp_path / "two.jsonl")

    register_challenger(weak_model_dir)
    assert promote(NAME, small).promoted
    register_challenger(trained_model_dir)
    d = promote(NAME, small)
    assert d.diff > 0 and d.ci_low <= 0
    assert not d.promoted and "not significant" in d.reason
    assert champion_version() == 1


def test_both_versions_are_banded_by_the_champions_training_counts(
    trained_model_dir: Path, eval_file: Path, mlflow_store: Path, tmp_path: Path
) -> None:
    """A challenger with other training counts (here: every tag seen once, all tail by its own
    counts) is compared band by band on the champion's bands, which hold the same tags."""
    register_challenger(trained_model_dir)
    assert promote(NAME, eval_file).promoted
    recounted = shutil.copytree(trained_model_dir, tmp_path / "recounted")
    vocab = TagVocab.load(recounted / "tags.json")
    TagVocab(vocab.tags, [1] * len(vocab), vocab.n_products).save(recounted / "tags.json")
    register_challenger(recounted)
    decision = promote(NAME, eval_file)
    assert not decision.promoted and "one side" not in decision.reason
    # the same weights: the same ranking, so no band of the champion's moves
    assert decision.band_drops and set(decision.band_drops.values()) == {0.0}
    assert len(decision.band_drops) > 1  # not all tail, as the challenger's own counts say


def test_broken_challenger_fails_clearly_and_keeps_the_champion(
    trained_model_dir: Path, weak_model_dir: Path, eval_file: Path, mlflow_store: Path
) -> None:
    with pytest.raises(RegistryError, match="@challenger"):
        promote(NAME, eval_file)  # nothing registered yet
    register_challenger(weak_model_dir)
    assert promote(NAME, eval_file).promoted
    broken = register_challenger(trained_model_dir)
    client = mlflow.MlflowClient()
    model_id = model_version_info(f"models:/{NAME}/{broken.version}")["model_id"]
    location = client.get_logged_model(model_id).artifact_location
    weights = Path(location.removeprefix("file://")) / "artifacts" / "model" / "model.safetensors"
    assert weights.is_file()
    weights.write_bytes(b"not a safetensors file")
    with pytest.raises(RegistryError, match=f"version {broken.version} .*cannot be loaded"):
        promote(NAME, eval_file)
    assert champion_version() == 1
    assert "promotion.decision" not in model_version_info(f"models:/{NAME}@challenger")["tags"]
    with pytest.raises(ValueError, match="PSP@3"):
        promote(NAME, eval_file, metric="PSP@3")


def test_promotion_reads_the_catalog_as_the_challenger_reads_catalogs(
    trained_model_dir: Path, eval_file: Path, mlflow_store: Path, tmp_path: Path
) -> None:
    model = tmp_path / "model"
    shutil.copytree(trained_model_dir, model, ignore=shutil.ignore_patterns("checkpoints"))
    info = json.loads((model / "labelrec.json").read_text(encoding="utf-8"))
    info["config"]["data"]["title_column"] = "name"  # trained on a catalog with this column
    (model / "labelrec.json").write_text(json.dumps(info), encoding="utf-8")
    rows = [json.loads(line) for line in eval_file.read_text(encoding="utf-8").splitlines()]
    named = [{"name" if k == "title" else k: v for k, v in row.items()} for row in rows]
    catalog = write_jsonl(named, tmp_path / "named.jsonl")
    register_challenger(model)
    with pytest.raises(ValueError, match="title"):
        promote(NAME, catalog, data_overrides=["data.title_column=title"])  # overrides win
    d = promote(NAME, catalog)
    assert d.promoted, d.reason
    assert d.challenger_score == pytest.approx(
        per_product_ndcg3(trained_model_dir, eval_file).mean()
    )


def test_promote_command(
    trained_model_dir: Path,
    eval_file: Path,
    mlflow_store: Path,
    capsys: pytest.CaptureFixture,
) -> None:
    register_challenger(trained_model_dir)
    assert cli.main(["promote", "--data", str(eval_file), "--min-metric", "1.01"]) == 0
    out = capsys.readouterr().out
    assert "not promoted" in out and "first model" in out
    args = ["promote", "--data", str(eval_file), "--min-metric", "1.01", "--exit-code"]
    assert cli.main(args) == cli.NOT_PROMOTED  # a gate in CI
    assert "not promoted" in capsys.readouterr().out
    assert cli.main(["promote", "--data", str(eval_file), "--n-resamples", "200"]) == 0
    assert ": promoted" in capsys.readouterr().out
    assert champion_version() == 1
    assert cli.main(["promote", "--name", "missing", "--data", str(eval_file)]) == 2
    assert "@challenger" in capsys.readouterr().err


def test_promotion_is_safe_against_a_flaky_registry_and_a_moving_champion(
    trained_model_dir: Path,
    weak_model_dir: Path,
    eval_file: Path,
    mlflow_store: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import TEMPORARILY_UNAVAILABLE

    client = mlflow.MlflowClient()
    weak = register_challenger(weak_model_dir)
    client.set_registered_model_alias(NAME, "champion", weak.version)
    strong = register_challenger(trained_model_dir)

    # A champion that cannot be read (HTTP 503) is not "no champion": nothing moves.
    real = mlflow.MlflowClient.get_model_version_by_alias

    def unavailable(self, name: str, alias: str):
        if alias == "champion":
            raise MlflowException("registry busy", error_code=TEMPORARILY_UNAVAILABLE)
        return real(self, name, alias)

    monkeypatch.setattr(mlflow.MlflowClient, "get_model_version_by_alias", unavailable)
    with pytest.raises(RegistryError, match="@champion of 'labelrec' cannot be read"):
        promote(NAME, eval_file)
    monkeypatch.setattr(mlflow.MlflowClient, "get_model_version_by_alias", real)
    assert champion_version() == int(weak.version)

    # @champion moved by someone else while the challenger was being evaluated: refused.
    other = register_challenger(weak_model_dir, alias="other")
    champion_moves_to(other.version, monkeypatch)
    with pytest.raises(RegistryError, match="moved to version .* while version"):
        promote(NAME, eval_file)
    assert champion_version() == int(other.version)  # the other move stands
    assert int(strong.version) != champion_version()
    # ...and the version that lost the race is not recorded as promoted, so it never becomes
    # the champion to beat when the alias is gone
    lost = client.get_model_version(NAME, strong.version).tags
    assert lost.get("promotion.decision") == "superseded"


def test_a_deleted_champion_is_still_the_one_to_beat(
    trained_model_dir: Path,
    weak_model_dir: Path,
    eval_file: Path,
    mlflow_store: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Deleting the champion's version drops the alias with it: the next challenger is
    compared with the last promoted version still there, not let through as a first model;
    a promotion of the same version beside this one is no error."""
    from labelrec.mlflow import registry

    client = mlflow.MlflowClient()
    register_challenger(trained_model_dir)
    assert promote(NAME, eval_file).promoted  # version 1: the first model
    strong = register_challenger(trained_model_dir)
    strong_decision = promote(NAME, eval_file)  # the same model: not better, stays version 1
    assert not strong_decision.promoted and champion_version() == 1
    client.set_registered_model_alias(NAME, "champion", strong.version)
    client.set_model_version_tag(NAME, strong.version, "promotion.decision", "promoted")
    client.delete_model_version(NAME, strong.version)  # the champion's version, and its alias
    assert champion_version() is None
    weak = register_challenger(weak_model_dir)
    d = promote(NAME, eval_file)
    assert not d.promoted and d.champion_version == 1, d.reason
    assert d.reason.startswith("no @champion; compared with version 1, the last promoted")
    assert champion_version() is None  # nothing moved

    # Another promotion of the same challenger set @champion meanwhile: this one agrees.
    client.set_registered_model_alias(NAME, "champion", "1")
    better = register_challenger(trained_model_dir)
    monkeypatch.setattr(registry, "decide", lambda *a, **k: registry.PromotionDecision(True, "ok"))
    champion_moves_to(better.version, monkeypatch)
    assert promote(NAME, eval_file).promoted and champion_version() == int(better.version)
    assert int(weak.version) != champion_version()


def test_code_version_names_a_commit_of_labelrec_only(monkeypatch) -> None:
    """An installed labelrec inside another git repository (a project's virtualenv) is not
    that repository's commit."""
    import subprocess
    from pathlib import Path

    from labelrec.mlflow import registry

    root = Path(registry.__file__).resolve().parents[2]

    def git(top: Path):
        def run(*args, **kwargs):
            return subprocess.CompletedProcess(args, 0, stdout=f"{top}\nabc123def456\n")

        return run

    monkeypatch.setattr(registry.subprocess, "run", git(root))
    assert registry.code_version().endswith("+gabc123def456")
    monkeypatch.setattr(registry.subprocess, "run", git(root.parent / "someone-else"))
    assert "+g" not in registry.code_version()
