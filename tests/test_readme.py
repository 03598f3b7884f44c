"""The README's generated parts are current, and its title comes first."""

from __future__ import annotations

import runpy
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_layer_list_in_the_readme_is_generated_from_the_registry() -> None:
    from bnlab.models import list_layer_types

    script = runpy.run_path(str(ROOT / "scripts" / "layer_reference.py"))
    text = (ROOT / "README.md").read_text("utf-8")
    assert script["updated"](text) == text, "run python scripts/layer_reference.py"
    section = script["section"]()
    for name in list_layer_types():
        assert f"\n| {name} | " in section
    assert "| Dense | `units` (required); `activation` = none, `use_bias` = true," in section


def test_the_title_comes_before_any_code_block() -> None:
    text = (ROOT / "README.md").read_text("utf-8")
    assert text.startswith("# bnlab\n")
