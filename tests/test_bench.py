"""bench/run.py --quick produces its table (the figures are not checked: timings depend on
the machine and its load)."""
import os
import shutil
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
BENCH = os.path.join(HERE, os.pardir, "bench")


def test_quick_benchmark_prints_and_writes_the_table(tmp_path):
    out = tmp_path / "bench"
    p = subprocess.run([sys.executable, os.path.join(BENCH, "run.py"), "--quick", "--out", str(out)],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    text = p.stdout
    for heading in ("## 1. mosaic.py vs SCAMP", "## 2. mosaicfit's scaling",
                    "## 3. Matching", "## 4. Per-pixel calibration"):
        assert heading in text
    # the tables: mosaic.py's run, its phases, the density scan, the matching comparison
    assert "| visits x CCDs | detections" in text
    assert "| visits | CCDs | detections | stars | read | match |" in text
    assert "| stars / deg^2 | detections |" in text
    assert "| operation | mosaicfit | scipy cKDTree | astropy |" in text
    assert "solve time growing no faster than linearly" in text
    if shutil.which("scamp"):
        assert "| 4 | SCAMP |" in text
    else:
        assert "apt-get install scamp" in text
    if os.path.exists(os.path.join(BENCH, "bench_apply.py")):
        assert "bench_apply.py" in text
    else:
        assert "not yet available" in text.lower()
    written = (out / "RESULTS-quick.md").read_text()
    assert written.strip() in text


def test_ldac_headers_are_blank_padded_and_tpv_is_exact(tmp_path):
    """The LDAC writer pads header cards with blanks (SCAMP 2.10 segfaults on NULs) and the
    TPV conversion reproduces a TAN-SIP header."""
    sys.path.insert(0, BENCH)
    try:
        import scamp
    finally:
        sys.path.remove(BENCH)
    from astropy.io import fits
    from mosaicfit.model.sip import fit_tan_sip, sip_pixel_to_sky
    gx, gy = np.meshgrid(np.linspace(0, 2047, 9), np.linspace(0, 4175, 17))
    gx, gy = gx.ravel(), gy.ravel()
    ra = 150.0 + 4.7e-5 * (gx - 1024) + 1e-10 * (gx - 1024) ** 2
    dec = 2.0 + 4.7e-5 * (gy - 2088) + 2e-11 * (gx - 1024) * (gy - 2088)
    sip = fit_tan_sip(gx, gy, ra, dec, (1024.5, 2088.5), (150.0, 2.0), 4)
    tpv, err = scamp.sip_to_tpv(sip, 2048, 4176)
    assert err < 0.01
    w = scamp.header_wcs(tpv)
    r1, d1 = w.all_pix2world(gx + 1.0, gy + 1.0, 1)
    r2, d2 = sip_pixel_to_sky(sip, gx, gy)
    assert np.max(np.hypot((r1 - r2) * np.cos(np.radians(d2)), d1 - d2)) * 3.6e6 < 0.01
    cols = scamp._star_cols(np.array([10.0, 20.0]), np.array([30.0, 40.0]), np.array([0.1, 0.2]),
                            np.array([1e4, 2e4]), np.array([10.0, 20.0]))
    path = str(tmp_path / "v1.cat")
    head = scamp._image_header(2048, 4176, tpv, {"EXPTIME": 1.0})
    scamp._write_ldac(path, [(head, cols), (head, scamp._empty_cols())])
    with fits.open(path) as hl:
        assert [h.name for h in hl[1:]] == ["LDAC_IMHEAD", "LDAC_OBJECTS"] * 2
        assert list(hl[2].data["XWIN_IMAGE"]) == [11.0, 21.0]
        assert len(hl[4].data) == 0
    raw = open(path, "rb").read()
    start = raw.index(b"SIMPLE  =                    T", 2880)
    text = raw[start:start + 80 * len(head.cards) + 80]
    assert b"\0" not in text and text.rstrip().endswith(b"END")
