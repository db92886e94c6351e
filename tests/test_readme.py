"""The configuration reference in docs/ is the one the code describes."""

from pathlib import Path

from labelrec.config import REFERENCE_MARK, describe, reference_table

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "docs" / "configuration.md"


def test_config_reference_is_the_generated_one():
    """docs/configuration.md ends with the table `make config-reference` writes."""
    text = REFERENCE.read_text(encoding="utf-8")
    assert REFERENCE_MARK in text, "the marker line of the generated table is missing"
    assert text.split(REFERENCE_MARK, 1)[1] == "\n\n" + reference_table()


def test_reference_table_has_a_row_with_help_for_every_setting():
    rows = reference_table().splitlines()[2:]
    settings = describe()
    assert len(rows) == len(settings) > 100
    for row, (name, default, help_text) in zip(rows, settings, strict=True):
        assert row == f"| `{name}` | `{default}` | {help_text} |"
        assert help_text, f"{name} has no help text"


def test_readme_links_the_reference_and_stays_short():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "docs/configuration.md" in readme
    assert len(readme.splitlines()) <= 300
