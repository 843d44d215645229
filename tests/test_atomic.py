"""Atomic output (mosaicfit.io.atomic): temporary names, and the concurrent writes of a
mosaic's products."""
import contextlib
import errno
import os
import re

import pytest

import mosaicfit.io.atomic as atomic
from mosaicfit.io.atomic import (OutputError, atomic_path, concurrent_writes, write_bytes,
                                 write_copies)
from mosaicfit.io.lock import remove_stale_temporaries


def test_temporary_names_are_fresh_hidden_and_known_to_the_lock(tmp_path):
    names = set()
    for _ in range(50):
        with atomic_path(tmp_path / "sub" / "wcs-1.fits") as tmp:
            assert not os.path.lexists(tmp)
            names.add(os.path.basename(tmp))
            open(tmp, "wb").close()
    assert len(names) == 50
    assert all(re.match(r"^\.wcs-1\.fits\.[0-9a-f]{8}\.tmp$", n) for n in names)
    # a killed run's leftover with the next name is not reused
    leftover = tmp_path / "sub" / f".x.{atomic._TOKEN}{(next(atomic._COUNT) + 1) % 0x10000:04x}.tmp"
    leftover.write_bytes(b"old")
    with atomic_path(tmp_path / "sub" / "x") as tmp:
        assert not os.path.lexists(tmp)
        open(tmp, "wb").close()
    assert remove_stale_temporaries(str(tmp_path)) == 1


def test_concurrent_writes_write_every_file_whole(tmp_path):
    with concurrent_writes(threads=3, depth=4):
        for i in range(200):
            write_bytes(bytes([i % 256]) * (1000 + i), tmp_path / f"d{i % 7}" / f"f{i}")
    for i in range(200):
        assert (tmp_path / f"d{i % 7}" / f"f{i}").read_bytes() == bytes([i % 256]) * (1000 + i)
    assert not [p for p in tmp_path.rglob("*.tmp")]


def test_concurrent_writes_stop_at_the_first_error(tmp_path, monkeypatch):
    real = atomic.write_temporary

    def full(tmp, data):
        if data == b"bad":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(tmp, data)

    monkeypatch.setattr(atomic, "write_temporary", full)
    with pytest.raises(OutputError) as e:
        with concurrent_writes(threads=2, depth=2):
            for i in range(100):
                write_bytes(b"bad" if i == 10 else b"ok", tmp_path / f"f{i}")
    assert str(e.value) == f"{tmp_path / 'f10'}: cannot write ({os.strerror(errno.ENOSPC)})"
    written = {p.name for p in tmp_path.iterdir()}
    assert "f10" not in written and {"f0", "f9"} <= written
    assert len(written) < 30               # the submissions stopped at the error
    assert not [p for p in tmp_path.rglob("*.tmp")]


@pytest.mark.parametrize("pooled", [False, True])
def test_copies_are_one_file_linked_into_every_folder(tmp_path, pooled):
    paths = [tmp_path / f"t{k}" / "wcs-1.fits" for k in range(3)]
    with concurrent_writes(threads=2) if pooled else contextlib.nullcontext():
        write_copies(b"product", paths)
    assert [p.read_bytes() for p in paths] == [b"product"] * 3
    assert len({p.stat().st_ino for p in paths}) == 1 and paths[0].stat().st_nlink == 3
    # a later run replaces a name by a new file: the other folders keep theirs
    write_bytes(b"again", paths[1])
    assert [p.read_bytes() for p in paths] == [b"product", b"again", b"product"]
    assert not [p for p in tmp_path.rglob("*.tmp")]


def test_copies_are_written_where_the_file_system_has_no_links(tmp_path, monkeypatch):
    def no_links(src, dst):
        raise OSError(errno.EPERM, os.strerror(errno.EPERM))

    monkeypatch.setattr(atomic.os, "link", no_links)
    paths = [tmp_path / f"t{k}" / "fcr-1.fits" for k in range(2)]
    write_copies(b"fcr", paths)
    assert [p.read_bytes() for p in paths] == [b"fcr"] * 2
    assert paths[0].stat().st_ino != paths[1].stat().st_ino


def test_a_copy_that_cannot_be_made_is_an_output_error(tmp_path, monkeypatch):
    def full(src, dst):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(atomic.os, "link", full)
    paths = [tmp_path / "a" / "x", tmp_path / "b" / "x"]
    with pytest.raises(OutputError) as e:
        write_copies(b"x", paths)
    assert str(e.value) == f"{paths[1]}: cannot write ({os.strerror(errno.ENOSPC)})"
    assert not [p for p in tmp_path.rglob("*.tmp")]
