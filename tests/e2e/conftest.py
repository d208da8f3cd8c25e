"""Fixtures shared by the end-to-end modules that run the platform as processes (tests/e2e/platform.py)."""

from __future__ import annotations

import pytest


@pytest.fixture
def work_dir(platform, tmp_path):
    """This test's own work dir; the module's `platform` restarts its scheduler on it."""
    work = tmp_path / "work"
    work.mkdir()
    platform.use_work_dir(work)
    return work
