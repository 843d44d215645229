"""Reading the inputs (issue 15): mosaicfit's own reader of well-formed FITS files
(:mod:`mosaicfit.io.fits`: ``read_headers``, ``read_bintable``) side by side with fitsio
(cfitsio) and astropy, on the same files, in the same run.

    python bench/bench_read.py [--root DIR] [--ccds N] [--repeat 3]

On the CORR (header-only calexp) and SRC (afw table) files of a simulated tract (made in a
temporary folder with ``mosaicfit simulate --visits 2`` unless ``--root`` names one), per file:

- CORR: the primary and the first extension's headers as key -> value (what mosaic.py reads:
  the exposure's metadata and the single-frame WCS);
- SRC: the binary table's header and its columns as native-order numpy arrays.

Prints the time per file of each reader (best of `--repeat` passes, the files in the page
cache after a first pass), the ratios to mosaicfit's, and checks that the readers agree on
every header value and every column. Needs fitsio (``pip install fitsio``; the ``bench`` extra).
"""
import argparse
import glob
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "python"))


def ours_corr(path):
    from mosaicfit.io.fits import read_headers
    hdus = read_headers(path, max_hdus=2)
    return [{c.keyword: c.value for c in h.cards} for h, _, _ in hdus]


def fitsio_corr(path):
    import fitsio
    with fitsio.FITS(path) as f:
        return [{k: h[k] for k in h.keys()} for h in (f[0].read_header(), f[1].read_header())]


def astropy_corr(path):
    from astropy.io import fits
    with fits.open(path, memmap=False) as f:
        return [{k: f[i].header[k] for k in f[i].header if k not in ("COMMENT", "HISTORY", "")}
                for i in (0, 1)]


def ours_src(path):
    from mosaicfit.io.fits import read_bintable
    header, names, formats, cols, nrows = read_bintable(path)
    return {c.keyword: c.value for c in header.cards}, dict(zip(names, cols))


def fitsio_src(path):
    import fitsio
    with fitsio.FITS(path) as f:
        ext = next(i for i in range(len(f)) if f[i].get_exttype() == "BINARY_TBL")
        data = f[ext].read()
        h = f[ext].read_header()
    cols = {n: data[n].astype(data[n].dtype.newbyteorder("="), copy=False) for n in data.dtype.names}
    return {k: h[k] for k in h.keys()}, cols


def astropy_src(path):
    from astropy.io import fits
    with fits.open(path, memmap=False) as f:
        hdu = next(h for h in f if isinstance(h, fits.BinTableHDU))
        cols = {n: np.array(hdu.data[n]) for n in hdu.columns.names}
        return dict(hdu.header), cols


def best(fn, files, repeat):
    t = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for p in files:
            fn(p)
        t.append(time.perf_counter() - t0)
    return min(t) / len(files)


def agree_headers(a, b):
    """Keys both readers give with the same value (numbers to 1e-12 relative) / keys of a."""
    same = 0
    for k, v in a.items():
        w = b.get(k)
        if isinstance(v, float) and isinstance(w, (int, float)):
            same += abs(v - w) <= 1e-12 * max(abs(v), 1e-300)
        else:
            same += (v == w) or (isinstance(v, str) and isinstance(w, str) and v.strip() == w.strip())
    return same, len(a)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", help="a simulated repository (made in a temporary folder if absent)")
    p.add_argument("--ccds", type=int, default=200, help="files of each kind to read")
    p.add_argument("--repeat", type=int, default=3)
    a = p.parse_args()
    try:
        import fitsio
    except ImportError:
        sys.exit("fitsio is not installed (pip install fitsio)")
    root = a.root
    if root is None:
        root = os.path.join(tempfile.mkdtemp(prefix="mf-read-"), "ROOT")
        subprocess.run([sys.executable, "-m", "mosaicfit.cli", "simulate", root, "--visits", "2"],
                       check=True, capture_output=True,
                       env=dict(os.environ, PYTHONPATH=os.path.join(HERE, "..", "python")))
    corr = sorted(glob.glob(os.path.join(root, "rerun", "*", "*", "*", "corr", "CORR-*.fits")))[:a.ccds]
    src = sorted(glob.glob(os.path.join(root, "rerun", "*", "*", "*", "output", "SRC-*.fits")))[:a.ccds]
    if not corr or not src:
        sys.exit(f"{root}: no CORR or SRC files")
    print(f"{len(corr)} CORR and {len(src)} SRC files of {root} (fitsio {fitsio.__version__}); "
          f"best of {a.repeat} passes; load {os.getloadavg()[0]:.2f}")
    for kind, files, readers in (("CORR headers", corr, (ours_corr, fitsio_corr, astropy_corr)),
                                 ("SRC tables", src, (ours_src, fitsio_src, astropy_src))):
        for fn in readers:                      # every file into the page cache
            fn(files[0])
        t = [best(fn, files, a.repeat) for fn in readers]
        print(f"{kind}: mosaicfit {1e3 * t[0]:.3f} ms, fitsio {1e3 * t[1]:.3f} ms "
              f"({t[1] / t[0]:.2f}x), astropy {1e3 * t[2]:.3f} ms ({t[2] / t[0]:.2f}x) per file")
        # the same answers
        s = n = 0
        for f in files[:20]:
            r0, r1 = readers[0](f), readers[1](f)
            if kind.startswith("CORR"):
                for h0, h1 in zip(r0, r1):
                    ds, dn = agree_headers(h0, h1)
                    s, n = s + ds, n + dn
            else:
                ds, dn = agree_headers(r0[0], r1[0])
                s, n = s + ds, n + dn
                for name, col in r0[1].items():
                    c1 = r1[1].get(name)
                    ok = c1 is not None and np.shape(c1)[0] == np.shape(col)[0] and (
                        col.dtype == bool or np.array_equal(np.asarray(col, float).reshape(len(col), -1),
                                                            np.asarray(c1, float).reshape(len(c1), -1),
                                                            equal_nan=True))
                    s, n = s + ok, n + 1
        print(f"  mosaicfit and fitsio agree on {s} of {n} header values / columns (20 files)")


if __name__ == "__main__":
    main()
