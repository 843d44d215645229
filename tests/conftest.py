"""Fixtures shared by the test modules."""
import shutil

import pytest


@pytest.fixture
def repo(base, tmp_path):
    """A private copy of the module's `base` repository (a module-scoped fixture each module
    that damages repositories defines), so that every case starts from the same files."""
    root = str(tmp_path / "repo")
    shutil.copytree(base, root)
    return root
