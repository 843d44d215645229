"""The two builds of the compiled core (CMakeLists.txt): _core for any CPU of the platform and
_core_avx2 for x86-64-v3, imported where the CPU runs it (mosaicfit._load_core). They are the
same code, so they must give the same numbers to rounding (FMA contracts a*b+c into one
rounding: ~1e-16 relative per operation)."""
import importlib
import os
import subprocess
import sys

import numpy as np
import pytest

import mosaicfit
import mosaicfit.fit.core as fit_core
from mosaicfit.fit.core import solve_least_squares
from test_fit_core import _problem, _run

generic = importlib.import_module("mosaicfit._core")
try:
    avx2 = importlib.import_module("mosaicfit._core_avx2")
except ImportError:
    avx2 = None
runs_avx2 = avx2 is not None and generic.cpu_runs_x86_64_v3()
needs_avx2 = pytest.mark.skipif(not runs_avx2, reason="no x86-64-v3 core or CPU")


def _env(**kw):
    env = dict(os.environ, **kw)
    env["PYTHONPATH"] = os.pathsep.join(
        [os.path.dirname(os.path.dirname(mosaicfit.__file__))] + sys.path)
    return env


def _chosen(value=None):
    """(exit status, the core's module name, last stderr line) of an interpreter importing the
    core with MOSAICFIT_CORE=`value` (unset: None)."""
    env = _env() if value is None else _env(MOSAICFIT_CORE=value)
    if value is None:
        env.pop("MOSAICFIT_CORE", None)
    out = subprocess.run([sys.executable, "-c", "from mosaicfit import _core; print(_core.__name__)"],
                         env=env, capture_output=True, text=True)
    return out.returncode, out.stdout.strip(), out.stderr.strip().splitlines()[-1:]


def test_the_core_in_use_is_the_fastest_this_cpu_runs():
    want = "mosaicfit._core_avx2" if runs_avx2 else "mosaicfit._core"
    assert _chosen()[:2] == (0, want)
    assert _chosen("auto")[:2] == (0, want)
    # in this process too, whatever MOSAICFIT_CORE says: the modules use the one chosen
    assert fit_core._core is mosaicfit._core


def test_generic_core_is_chosen_on_request_and_a_bad_choice_is_one_line():
    assert _chosen("generic")[:2] == (0, "mosaicfit._core")
    rc, out, err = _chosen("sse9")
    assert rc != 0 and "MOSAICFIT_CORE='sse9': use auto, generic or avx2" in err[0]


@needs_avx2
def test_avx2_on_request():
    assert _chosen("avx2")[:2] == (0, "mosaicfit._core_avx2")


@needs_avx2
@pytest.mark.parametrize("solver", ["dense", "sparse"])
def test_both_builds_solve_the_same_problem_alike(monkeypatch, solver):
    monkeypatch.setenv("MOSAICFIT_SOLVER", solver)
    p = _problem(2, 2, order=4, nvisit=6, nccd=5, nstar=300, seed=3, noise=0.01)
    out = {}
    for name, core in (("generic", generic), ("avx2", avx2)):
        monkeypatch.setattr(fit_core, "_core", core)
        out[name] = _run(p)
    a, b = out["generic"], out["avx2"]
    assert a.status == b.status == "ok"
    scale = np.max(np.abs(a.coef))
    assert np.max(np.abs(np.asarray(a.coef) - np.asarray(b.coef))) < 1e-10 * scale
    assert np.max(np.abs(np.asarray(a.dccd) - np.asarray(b.dccd))) < 1e-10
    assert np.max(np.abs(np.asarray(a.resid) - np.asarray(b.resid))) < 1e-10
    assert abs(a.chi2 - b.chi2) < 1e-9 * a.chi2


@needs_avx2
def test_both_builds_give_the_same_basis_and_matches():
    rng = np.random.default_rng(5)
    u, v = rng.uniform(-1, 1, 1000), rng.uniform(-1, 1, 1000)
    for kind in (0, 1):
        np.testing.assert_allclose(avx2.basis(u, v, 9, kind)[0], generic.basis(u, v, 9, kind)[0],
                                   rtol=1e-13, atol=1e-13)
    t, q = rng.uniform(0, 1, (2000, 2)), rng.uniform(0, 1, (500, 2))
    pa, pb = generic.pairs_within(t, q, 0.01), avx2.pairs_within(t, q, 0.01)
    assert all(np.array_equal(x, y) for x, y in zip(pa, pb))


def test_solve_least_squares_uses_the_chosen_core():
    # the wrapper calls the module mosaicfit chose, not a fixed one
    assert solve_least_squares.__globals__["_core"] is mosaicfit._core


def test_a_bad_choice_stops_the_command_line_in_one_line():
    out = subprocess.run([sys.executable, "-c", "from mosaicfit.cli import main; main(['--help'])"],
                         env=_env(MOSAICFIT_CORE="sse9"), capture_output=True, text=True)
    assert out.returncode == 1
    assert out.stderr.strip() == ("mosaicfit: error: MOSAICFIT_CORE='sse9': use auto, generic "
                                  "or avx2")
