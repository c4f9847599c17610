"""Regenerate the parameter table in README.md from daris_ros/ros/parameters.py.

    scripts/run_in_install.sh python scripts/update_readme_params.py
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
PATTERN = re.compile(r"(<!-- PARAMS:BEGIN -->\n).*?(<!-- PARAMS:END -->)", re.S)


def render(text: str) -> str:
    from daris_ros.ros.parameters import parameter_reference_markdown

    return PATTERN.sub(lambda m: m.group(1) + parameter_reference_markdown() + m.group(2), text)


def main() -> int:
    text = README.read_text(encoding="utf-8")
    new = render(text)
    if new != text:
        README.write_text(new, encoding="utf-8")
        print("README.md parameter table updated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
