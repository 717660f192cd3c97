"""The Makefile's first install: it says what it is doing before pip's silent minute, and shows pip's own words
when the install fails."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tools.devenv import ROOT

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")


def make_install(tmp_path: Path, fake_pip: str) -> subprocess.CompletedProcess[str]:
    """`make <venv>/.installed` with a stand-in python whose `-m pip install` runs `fake_pip`."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    python = venv / "bin/python"
    python.write_text(f"#!/bin/sh\n{fake_pip}\n")
    python.chmod(0o755)
    return subprocess.run(
        ["make", "--no-print-directory", "-C", str(ROOT), f"VENV={venv}", f"{venv}/.installed"],
        capture_output=True, text=True, timeout=60,
    )


def test_the_install_says_what_it_does_and_how_long_it_takes(tmp_path):
    done = make_install(tmp_path, "echo 'Collecting django'; echo 'Successfully installed django'")

    assert done.returncode == 0, done.stderr
    assert "Installing the pinned requirements" in done.stdout
    assert "minute" in done.stdout
    assert "Collecting django" not in done.stdout + done.stderr
    assert (tmp_path / "venv/.installed").exists()


def test_a_failed_install_shows_pips_last_lines_and_leaves_no_stamp(tmp_path):
    noise = "; ".join(f"echo 'Collecting package{n}'" for n in range(100))
    done = make_install(tmp_path, f"{noise}; echo 'ERROR: No matching distribution found for nosuch==1.0' >&2; exit 1")

    assert done.returncode != 0
    assert "ERROR: No matching distribution found for nosuch==1.0" in done.stderr
    assert "Collecting package99" in done.stderr
    assert "Collecting package0\n" not in done.stderr
    assert "pip-install.log" in done.stderr
    assert not (tmp_path / "venv/.installed").exists()
