"""The README's configuration reference is the one the code describes."""

from pathlib import Path

from labelrec.config import describe

README = Path(__file__).resolve().parents[1] / "README.md"


def test_config_reference_matches_the_dataclasses():
    text = README.read_text(encoding="utf-8")
    for name, default, help_text in describe():
        assert f"| `{name}` | `{default}` | {help_text} |" in text, name
