"""The README's rq-dashboard install line installs what rq-dashboard imports (0.9.0 needs `six`,
which it does not declare); tests/test_rq_dashboard.py runs the dashboard itself."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).parent.parent / "README.md"


def test_readme_installs_what_rq_dashboard_imports():
    [command] = re.findall(r"`(pip install rq-dashboard[^`]*)`", README.read_text())
    assert command.split(";")[0].split()[2:] == ["rq-dashboard", "six"]
