"""What ``mosaicfit demo`` does: simulate an HSC-SSP-like tract, make its sky map, run
mosaic.py on it and compare the single-frame inputs and the mosaic outputs with the truth."""
import os
import time

from .. import MosaicError
from ..io.layout import Repository
from ..sim import evaluate_inputs, evaluate_outputs, simulate_repository
from .inputs import resolve_refs
from .mosaic import MosaicRequest, run_mosaic
from .skymap import make_skymap

__all__ = ["run_demo"]


def run_demo(root, visits=10, seed=1):
    """Run the demo in folder `root` (which must not hold a repository yet); returns 0."""
    if os.path.exists(os.path.join(root, "registry.sqlite3")):
        raise MosaicError(f"{root}: holds a data repository already; remove it or use --dir")
    t0 = time.time()
    print(f"[1/4] mosaicfit simulate {root} --visits {visits} --seed {seed}")
    sim = simulate_repository(root, rerun="sim", jobs=2, visits=visits, seed=seed)
    print("\n".join(sim.summary_lines(root)))
    repo = Repository(root, "sim")
    vs = repo.registry.visits()
    vid = f"visit={vs[0]}..{vs[-1]}:2" if len(vs) > 1 else f"visit={vs[0]}"
    ids = [[vid, "ccd=0..103"]]
    print(f"[2/4] mosaicfit make-skymap {root} --rerun=sim --id {vid} ccd=0..103")
    print(make_skymap(root, "sim", ids))
    print(f"[3/4] mosaic.py {root} --rerun=sim --id {vid} ccd=0..103 tract=0 -j 2")
    rc = run_mosaic(MosaicRequest(root=root, rerun="sim", ids=[[vid, "ccd=0..103", "tract=0"]],
                                  jobs=2))
    if rc not in (0, None):
        raise MosaicError("mosaic.py failed on the simulated tract")
    print("[4/4] accuracy against the simulation truth (clean star detections, noise-free "
          "positions and fluxes)")
    refs = resolve_refs(repo, ids)
    q_in = evaluate_inputs(root, "sim", refs)
    q_out = evaluate_outputs(root, "sim", refs, 0)
    print(f"  single-frame inputs (CORR): WCS {q_in['wcs_rms_mas'][0]:.1f} / "
          f"{q_in['wcs_rms_mas'][1]:.1f} mas rms in RA / Dec, FLUXMAG0 {q_in['zp_rms_mmag']:.1f} mmag rms")
    print(f"  mosaic outputs (wcs-/fcr-): WCS {q_out['wcs_rms_mas'][0]:.2f} / "
          f"{q_out['wcs_rms_mas'][1]:.2f} mas rms, calibrated magnitudes "
          f"{q_out['zp_rms_mmag']:.2f} mmag rms, over {q_out['n_stars']} detections on "
          f"{q_out['n_ccds']} CCDs")
    print(f"done in {time.time() - t0:.0f} s")
    return 0
