"""The README's parameter reference equals the one generated from the declarations."""

from __future__ import annotations

import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_readme_parameter_table_in_sync():
    spec = importlib.util.spec_from_file_location("update_readme_params", REPO / "scripts" / "update_readme_params.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    text = (REPO / "README.md").read_text(encoding="utf-8")
    assert "| `tasks.<name>.topic`" in text
    assert mod.render(text) == text, "README parameter table is stale: run scripts/update_readme_params.py"
