"""Ways to damage a FITS binary table in place, shared by the reliability test modules."""
from astropy.io import fits


def edit_table(fn):
    """A damage that applies fn(rows) to the first table HDU's data and rewrites the file."""
    def damage(path):
        with fits.open(path) as hl:
            hl = fits.HDUList([h.copy() for h in hl])
        fn(hl[1].data)
        hl.writeto(path, overwrite=True)
    return damage


def set_column(col, value, rows=slice(None)):
    """For edit_table: column `col` set to `value` in `rows`."""
    def f(d):
        d[col][rows] = value
    return f


def empty_table(path):
    """The first table keeps its columns and loses every row."""
    with fits.open(path) as hl:
        hl = fits.HDUList([h.copy() for h in hl])
    hl[1] = fits.BinTableHDU(data=hl[1].data[:0], header=hl[1].header)
    hl.writeto(path, overwrite=True)
