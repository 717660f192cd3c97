"""Every environment variable darktower/settings.py reads is documented in .env.example."""

from __future__ import annotations

import re

from tools.devenv import ROOT


def test_env_example_documents_every_variable_settings_reads():
    settings_source = (ROOT / "darktower/settings.py").read_text()
    read = set(re.findall(r'env_(?:str|bool|int|float|list|secret)\(\s*"([A-Z0-9_]+)"', settings_source))
    documented = set(re.findall(r"^# ([A-Z0-9_]+)=", (ROOT / ".env.example").read_text(), flags=re.MULTILINE))

    assert len(read) > 50
    assert read - documented == set()
    assert {"HTTP_BIND", "SIMULATE", "DARKTOWER_DATA_DIR"} <= documented
