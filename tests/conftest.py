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


@pytest.fixture
def failing_replace(monkeypatch):
    """Make os.replace (the commit of every atomic write) fail with OSError(`code`) once
    `after` files whose names start with `prefixes` have been committed. Returns
    install(prefixes, code, after) -> a one-element list counting those commits."""
    import os
    real_replace = os.replace

    def install(prefixes, code, after):
        count = [0]

        def replace(src, dst):
            if os.path.basename(dst).startswith(prefixes):
                count[0] += 1
                if count[0] > after:
                    raise OSError(code, os.strerror(code), src)
            return real_replace(src, dst)

        monkeypatch.setattr(os, "replace", replace)
        return count
    return install
