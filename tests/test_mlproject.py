"""The MLflow Project: MLproject entry points, conda.yaml against pyproject.toml, `mlflow run`."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

tomllib = pytest.importorskip("tomllib")  # Python 3.11 and later

import mlflow  # noqa: E402
from mlflow.projects._project_spec import load_project  # noqa: E402
from mlflow_fixtures import MLFLOW_ENV, fresh_db  # noqa: E402
from packaging.requirements import Requirement  # noqa: E402
from packaging.specifiers import SpecifierSet  # noqa: E402

from labelrec.mlflow import steps  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ENTRY_POINTS = {"main", "pretrain", "train", "evaluate", "promote", "batch"}
TYPES = {"string", "float", "path", "uri"}


@pytest.fixture(scope="module")
def project():
    return load_project(str(ROOT))


def test_entry_points_and_typed_parameters(project) -> None:
    assert project.name == "labelrec"
    assert project.env_type == "conda_env" and project.env_config_path.endswith("conda.yaml")
    assert set(project._entry_points) == ENTRY_POINTS
    raw = yaml.safe_load((ROOT / "MLproject").read_text(encoding="utf-8"))
    for name, spec in raw["entry_points"].items():
        declared = spec["parameters"]
        for param, value in declared.items():
            kind = value if isinstance(value, str) else value.get("type")
            assert kind in TYPES, f"{name}.{param}: untyped or unknown type {kind!r}"
        used = set(re.findall(r"{(\w+)}", spec["command"]))
        assert used == set(declared), f"{name}: command and parameters disagree"
        assert spec["command"].startswith(f"python -m labelrec.mlflow.steps {name} ")


@pytest.mark.parametrize("entry_point", ["evaluate", "batch"])
def test_a_model_directory_is_a_model_uri(project, entry_point: str, tmp_path: Path) -> None:
    """`-P model_uri=runs/uk`: MLflow passes a model directory on, as every step opens one."""
    given = {"model_uri": "runs/uk", **SAMPLE[entry_point]}
    given = {k: str(ROOT / v) if v.startswith("tests/") else v for k, v in given.items()}
    params, _ = project.get_entry_point(entry_point).compute_parameters(given, str(tmp_path))
    assert params["model_uri"] == "runs/uk"


SAMPLE = {
    "evaluate": {"data": "tests/conftest.py"},
    "promote": {"data": "tests/conftest.py"},
    "batch": {"input": "tests/conftest.py", "output": "out.jsonl"},
}


@pytest.mark.parametrize("entry_point", sorted(ENTRY_POINTS))
def test_commands_parse_with_the_steps_cli(project, entry_point: str) -> None:
    """Every MLproject command, with its defaults, is accepted by `labelrec.mlflow.steps`."""
    command = project.get_entry_point(entry_point).compute_command(
        SAMPLE.get(entry_point, {}), None
    )
    argv = shlex.split(command)
    assert argv[:4] == ["python", "-m", "labelrec.mlflow.steps", entry_point]
    args = steps.build_parser().parse_args(argv[3:])
    assert args.step == entry_point
    if entry_point in ("main", "promote"):
        assert args.n_resamples == 1000 and args.metric == "nDCG@3" and args.margin == 0.0
        assert args.seed == 0  # the promotion gate's options, one definition for both CLIs
    if entry_point == "batch":
        assert args.chunk_size == 1000 and args.limit == 10 and args.threshold is None
    if entry_point in ("main", "train"):
        assert args.config == "configs/default.yaml" and steps._opt(args.train) is None
        # used directly, outside the project (an installed wheel has no configs/): the defaults
        assert steps.build_parser().parse_args([entry_point]).config is None


def test_a_threshold_out_of_range_stops_at_the_parser(capsys: pytest.CaptureFixture) -> None:
    base = ["evaluate", "--model-uri", "models:/labelrec@challenger", "--data", "d.jsonl"]
    assert steps.build_parser().parse_args([*base, "--threshold", ""]).threshold is None
    assert steps.build_parser().parse_args([*base, "--threshold", "0.3"]).threshold == 0.3
    for bad in ("2", "nan", "x"):
        with pytest.raises(SystemExit):
            steps.build_parser().parse_args([*base, "--threshold", bad])
        assert "--threshold" in capsys.readouterr().err


def test_a_steps_data_overrides_go_on_top_of_the_models_columns(tmp_path: Path) -> None:
    info = {"config": {"data": {"title_column": "name", "train": "t.jsonl"}}}
    data = steps.reading_data_config(None, ["data.on_error=skip"], info)
    assert (data.title_column, data.on_error, data.train) == ("name", "skip", None)
    config = tmp_path / "c.yaml"
    config.write_text("data:\n  id_column: sku\n", encoding="utf-8")
    data = steps.reading_data_config(str(config), [], info)  # a config's data section replaces them
    assert (data.title_column, data.id_column) == ("title", "sku")


def test_overrides_parameter_splits_like_a_shell() -> None:
    assert steps.split_overrides("") == []
    assert steps.split_overrides("train.epochs=1 model.backbone='/a b/c'") == [
        "train.epochs=1",
        "model.backbone=/a b/c",
    ]
    # a list is split already (the main step hands its own on to the train step): as it is
    given = "'data.tag_columns=[tags, brand]' 'data.holdout=[\"a b.jsonl\"]' train.epochs=1"
    items = steps.split_overrides(given)
    assert items == [
        "data.tag_columns=[tags, brand]",
        'data.holdout=["a b.jsonl"]',
        "train.epochs=1",
    ]
    assert steps.split_overrides(items) == items


def _conda_pip(conda: dict) -> list[str]:
    for dep in conda["dependencies"]:
        if isinstance(dep, dict) and "pip" in dep:
            return dep["pip"]
    raise AssertionError("conda.yaml has no pip section")


def test_conda_env_matches_pyproject() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    conda = yaml.safe_load((ROOT / "conda.yaml").read_text(encoding="utf-8"))
    assert conda["name"] == "labelrec" and conda["channels"]
    python = [d for d in conda["dependencies"] if isinstance(d, str) and d.startswith("python")]
    assert len(python) == 1
    version = python[0].split("=", 1)[1]
    assert SpecifierSet(pyproject["requires-python"]).contains(f"{version}.0")
    assert "pip" in conda["dependencies"]

    def normalised(specs: list[str]) -> dict[str, str]:
        out = {}
        for spec in specs:
            req = Requirement(spec)
            out[re.sub(r"[-_.]+", "-", req.name).lower()] = str(req.specifier)
        return out

    conda_deps = normalised(_conda_pip(conda))
    project_deps = normalised(pyproject["dependencies"])
    # torch: the version the Makefile installs, within pyproject's range
    pinned = makefile_torch()
    assert conda_deps.pop("torch") == f"=={pinned}"
    assert SpecifierSet(project_deps.pop("torch")).contains(pinned)
    assert conda_deps == project_deps


def makefile_torch() -> str:
    """The torch version the Makefile installs by default (``TORCH_SPEC ?= torch==X``)."""
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    (version,) = re.findall(r"^TORCH_SPEC \?= torch==(\S+)$", makefile, flags=re.M)
    return version


@pytest.mark.slow
def test_mlflow_run_main_ends_with_a_champion(
    tiny_backbone: Path,
    toy_data_dir: Path,
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """`mlflow run . --env-manager local` (main): train -> evaluate -> promote as child runs."""
    db = fresh_db(tmp_path / "mlruns.db", tmp_path_factory)
    uri = f"sqlite:///{db}"
    env = {k: v for k, v in os.environ.items() if k not in MLFLOW_ENV}
    env.update(
        MLFLOW_TRACKING_URI=uri,
        MLFLOW_DISABLE_TELEMETRY="true",
        HF_HUB_OFFLINE="1",
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
    )
    overrides = f"model.backbone={tiny_backbone} train.epochs=2"
    subprocess.run(  # experiment with artifacts under tmp_path, as `make demo` does
        [sys.executable, "-m", "labelrec.mlflow.store"], env=env, cwd=tmp_path, check=True
    )
    cmd = [
        sys.executable, "-m", "mlflow", "run", str(ROOT), "--env-manager", "local",
        "--experiment-name", "labelrec",
        "-P", "config=configs/tiny.yaml",
        "-P", f"train={toy_data_dir / 'train.jsonl'}",
        "-P", f"valid={toy_data_dir / 'valid.jsonl'}",
        "-P", f"overrides={overrides}",
        "-P", "n_resamples=200",
    ]  # fmt: skip
    done = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]

    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    champion = client.get_model_version_by_alias("labelrec", "champion")
    assert str(champion.version) == "1"
    assert str(client.get_model_version_by_alias("labelrec", "challenger").version) == "1"
    experiment = client.get_experiment_by_name("labelrec")
    assert experiment.artifact_location.startswith((tmp_path / "mlartifacts").resolve().as_uri())
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if r.data.tags.get("mlflow.project.entryPoint") == "main"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    parent_id = parents[0].info.run_id
    children = {
        r.data.tags["labelrec.step"]: r
        for r in runs
        if r.data.tags.get("mlflow.parentRunId") == parent_id
    }
    assert set(children) == {"train", "evaluate", "promote"}
    assert all(r.info.status == "FINISHED" for r in children.values())
    assert champion.run_id == children["train"].info.run_id
    assert "valid_nDCG_at_3" in children["train"].data.metrics
    assert "nDCG_at_3" in children["evaluate"].data.metrics
    assert children["promote"].data.metrics["promoted"] == 1.0
    assert parents[0].data.params["config"] == "configs/tiny.yaml"
    assert (
        parents[0].data.metrics["promoted"] == 1.0 and "eval_nDCG_at_3" in parents[0].data.metrics
    )


def test_promote_step_can_fail_a_pipeline(monkeypatch, capsys) -> None:
    """`-P exit_code=true`: a challenger that is not promoted exits 3 (the CLI's
    --exit-code), so `mlflow run -e promote` can gate a pipeline; the default exits 0."""
    summary = {"run_id": "r1", "promoted": False, "decision": {"reason": "not better"}}
    monkeypatch.setattr(steps, "run_promote", lambda *a, **k: summary)
    monkeypatch.setattr(steps.store, "configure", lambda *a, **k: None)
    argv = ["promote", "--data", "tests/conftest.py"]
    assert steps.main(argv) == 0
    assert steps.main([*argv, "--exit-code", "true"]) == steps.NOT_PROMOTED == 3
    summary["promoted"] = True
    assert steps.main([*argv, "--exit-code", "true"]) == 0
    assert "promote: run r1: promoted" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        steps.main([*argv, "--exit-code", "maybe"])


@pytest.mark.parametrize(
    ("error", "said"),
    [
        ("full", "could not write the model runs/m: its disk is full"),
        ("refused", "[Errno 20] Not a directory: 'runs/m/x'"),
        ("store", "[Errno 28] No space left on device: a disk MLflow writes the run's files"),
    ],
)
def test_a_step_on_a_full_disk_or_a_refused_path_says_so(
    error: str, said: str, monkeypatch, capsys, tmp_path: Path
) -> None:
    """A step whose model or artifact cannot be written exits 2 with the error (what and where
    where labelrec writes it), no traceback, as the CLI does; a full disk under MLflow's copy,
    which names no file, is told with the artifact store and the temporary folder."""
    import errno
    import tempfile

    from labelrec.mlflow.store import StoreInfo
    from labelrec.modeldir import DiskFull

    artifacts = tmp_path / "mlartifacts"
    found = StoreInfo("sqlite:///x.db", "sqlite:///x.db", "1", "labelrec", artifacts.as_uri())

    def fails(*args: object, **kwargs: object) -> None:
        if error == "full":
            raise DiskFull(errno.ENOSPC, "could not write the model runs/m: its disk is full")
        if error == "refused":
            raise NotADirectoryError(errno.ENOTDIR, "Not a directory", "runs/m/x")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(steps, "run_promote", fails)
    monkeypatch.setattr(steps.store, "configure", lambda *a, **k: found)
    assert steps.main(["promote", "--data", "tests/conftest.py"]) == 2
    err = capsys.readouterr().err
    assert f"labelrec promote: error: {said}" in err and "Traceback" not in err
    told = f"the artifact store {artifacts} (" in err and "MB free)" in err
    told = told and f"the temporary folder {tempfile.gettempdir()} (" in err
    assert told == (error == "store"), err


@pytest.mark.parametrize("module", ["labelrec.mlflow.steps", "labelrec.mlflow.store"])
def test_entry_modules_run_without_docstrings(module: str) -> None:
    """``python -OO`` drops docstrings; the entry points' help is taken from them."""
    done = subprocess.run(
        [sys.executable, "-OO", "-m", module, "--help"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith(f"usage: python -m {module}")
