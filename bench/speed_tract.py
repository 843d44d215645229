"""Speed of the 10-visit tract (issue 15): `mosaicfit simulate`, mosaic.py per phase, the floor.

    python bench/speed_tract.py [--visits 10] [--work DIR] [--baseline REV] [--repeat 1]

Measures, in one run, on a tract simulated here (`mosaicfit simulate ROOT --visits N`):

1. `mosaicfit simulate`: wall and CPU time (its own split: simulate / write);
2. `mosaic.py` on all CCDs of the tract: wall and CPU time, the phases its log prints (read,
   match, astrometry, photometry, write) and the Python start-up + imports;
3. the floor: reading the same input bytes (every SRC, CORR, reference shard and the
   registry mosaic.py opens) and writing the same number of files of the same sizes, each
   through a temporary name and a rename as mosaic.py's writer does, with no computation;
   then mosaic.py / floor;
4. with ``--baseline REV`` (a git revision of this repository, e.g. the commit before the
   speed work): the same commands with that revision's Python package and its own compiled
   core (built from it where its C++ differs from this tree's), in the same run, on the same simulated inputs: the same-run ratios
   baseline / now, and the products of both compared CCD by CCD with
   bench/compare_products.py (criterion: 0.01 mas, 0.01 mmag).

The machine may be shared: the 1-minute load average before and after each timed command is
printed next to it, and CPU time (user + sys of the command's processes) beside wall time:
on 2 cores under a load of 4, wall time is ~2x the CPU time, the CPU time barely changes.
"""
import argparse
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
PY = sys.executable
PHASES = ("read", "match", "astrometry", "photometry", "write")


def load():
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


def timed(cmd, env=None):
    """(wall s, CPU s of the children, stdout+stderr, load before, load after)."""
    l0 = load()
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.time()
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.time() - t
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    if p.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(cmd[:4])}... failed ({p.returncode}):\n{p.stderr[-3000:]}")
    return wall, cpu, p.stdout + p.stderr, l0, load()


def env_for(pythonpath):
    env = dict(os.environ)
    env["PYTHONPATH"] = pythonpath
    return env


def simulate(pythonpath, root, visits):
    shutil.rmtree(root, ignore_errors=True)
    cmd = [PY, "-c", "import sys; from mosaicfit.cli import main; sys.exit(main())",
           "simulate", root, "--visits", str(visits)]
    wall, cpu, out, l0, l1 = timed(cmd, env_for(pythonpath))
    m = re.search(r"in ([0-9.]+) s, wrote in ([0-9.]+) s", out)
    split = (float(m.group(1)), float(m.group(2))) if m else (float("nan"),) * 2
    return dict(wall=wall, cpu=cpu, simulate=split[0], write=split[1], load=(l0, l1))


def visits_of(root):
    import sqlite3
    con = sqlite3.connect(os.path.join(root, "registry.sqlite3"))
    vs = sorted({r[0] for r in con.execute("select visit from raw")})
    con.close()
    return vs


def mosaic(pythonpath, root, rerun):
    vs = visits_of(root)
    step = vs[1] - vs[0] if len(vs) > 1 else 2
    cmd = [PY, "-c", "import sys; from mosaicfit.cli import main; sys.exit(main())", "-v",
           "mosaic", root, f"--rerun=sim:{rerun}", "--clobber-config",
           "--id", f"visit={vs[0]}..{vs[-1]}:{step}", "ccd=0..103", "tract=0"]
    wall, cpu, out, l0, l1 = timed(cmd, env_for(pythonpath))
    phases = {k: float(v) for k, v in
              re.findall(r"(read|match|astrometry|photometry|write) ([0-9.]+) s", out)}
    m = re.search(r"mosaic done in ([0-9.]+) s", out)
    inside = float(m.group(1)) if m else float("nan")
    return dict(wall=wall, cpu=cpu, phases=phases, inside=inside, load=(l0, l1))


def startup(pythonpath):
    cmd = [PY, "-c", "import mosaicfit.pipeline.mosaic, mosaicfit.fit.solve"]
    wall, cpu, _, l0, l1 = timed(cmd, env_for(pythonpath))
    return dict(wall=wall, cpu=cpu, load=(l0, l1))


def input_files(root):
    """Every file mosaic.py reads: the rerun's SRC and CORR, the reference shards, registry."""
    out = [os.path.join(root, "registry.sqlite3")]
    for sub in ("rerun/sim", "ref_cats"):
        for dp, _, fn in os.walk(os.path.join(root, sub)):
            if "/corr/0" in dp + "/":          # the products of an earlier run
                continue
            out += [os.path.join(dp, f) for f in fn
                    if f.startswith(("SRC-", "CORR-")) or sub == "ref_cats"]
    return out


def product_sizes(root, rerun):
    sizes = []
    for dp, _, fn in os.walk(os.path.join(root, "rerun", rerun)):
        sizes += [os.path.getsize(os.path.join(dp, f)) for f in fn
                  if f.startswith(("wcs-", "fcr-"))]
    return sizes


def floor(root, sizes, scratch):
    """Read the inputs' bytes and write len(sizes) files of those sizes (temporary name +
    rename, one folder), no computation; in a fresh process like mosaic.py's."""
    code = r"""
import os, sys, time
files = open(sys.argv[1]).read().split("\n")
sizes = [int(s) for s in open(sys.argv[2]).read().split()]
out = sys.argv[3]
t = time.time()
n = 0
for f in files:
    with open(f, "rb") as fh:
        n += len(fh.read())
t_read = time.time() - t
os.makedirs(out, exist_ok=True)
t = time.time()
for k, s in enumerate(sizes):
    tmp = os.path.join(out, f".p{k}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(b"\0" * s)
    os.replace(tmp, os.path.join(out, f"p{k}.fits"))
print(n, t_read, time.time() - t)
"""
    files = input_files(root)
    os.makedirs(scratch, exist_ok=True)
    lists = os.path.join(os.path.dirname(scratch), "floor-files.txt")
    with open(lists, "w") as f:
        f.write("\n".join(files))
    with open(lists + ".sizes", "w") as f:
        f.write(" ".join(map(str, sizes)))
    wall, cpu, out, l0, l1 = timed([PY, "-c", code, lists, lists + ".sizes", scratch])
    nbytes, t_read, t_write = out.split()
    return dict(wall=wall, cpu=cpu, read=float(t_read), write=float(t_write),
                nfiles=len(files), nbytes=int(nbytes), nout=len(sizes), outbytes=sum(sizes),
                load=(l0, l1))


def baseline_tree(rev, work):
    """REV's python/ package under WORK/baseline with its own compiled core: this tree's
    where REV's C++ and build files are the same as the working tree's, else built from REV
    (pip install --target, ~1-2 min): the Python of one revision calls the core of another
    with other signatures."""
    dest = os.path.join(work, "baseline")
    shutil.rmtree(dest, ignore_errors=True)
    tree = os.path.join(dest, "tree")                # the whole of REV (its build needs it)
    os.makedirs(tree)
    arch = subprocess.run(["git", "-C", REPO, "archive", rev], check=True,
                          capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", tree], input=arch, check=True)
    shutil.copytree(os.path.join(tree, "python"), os.path.join(dest, "python"))
    build = ["cpp", "CMakeLists.txt", "pyproject.toml"]
    same = subprocess.run(["git", "-C", REPO, "diff", "--quiet", rev, "--", *build]).returncode == 0
    if same:
        src = os.path.join(REPO, "python", "mosaicfit")
    else:
        print(f"building the compiled core of {rev} ...", flush=True)
        target = os.path.join(dest, "built")
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target",
                        target, tree], check=True)
        src = os.path.join(target, "mosaicfit")
    for f in os.listdir(src):
        if f.startswith("_core") and f.endswith(".so"):
            shutil.copy(os.path.join(src, f), os.path.join(dest, "python", "mosaicfit", f))
    return os.path.join(dest, "python")


def fmt_load(lo):
    return f"{lo[0]:.1f}/{lo[1]:.1f}"


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--visits", type=int, default=10)
    p.add_argument("--work", default=None, help="scratch folder (default: a temporary one)")
    p.add_argument("--baseline", metavar="REV", help="git revision to compare with")
    p.add_argument("--repeat", type=int, default=1, help="mosaic.py runs (best is kept)")
    p.add_argument("--keep", action="store_true", help="keep the scratch folder")
    args = p.parse_args()
    work = args.work or tempfile.mkdtemp(prefix="mf-speed-")
    os.makedirs(work, exist_ok=True)
    now = os.path.join(REPO, "python")
    trees = [("now", now)]
    if args.baseline:
        trees.append((f"baseline {args.baseline}", baseline_tree(args.baseline, work)))
    root = os.path.join(work, "tract")
    res = {}
    for name, tree in trees:
        r = res[name] = {}
        r["simulate"] = simulate(tree, root if name == "now" else root + "-base", args.visits)
        print(f"[{name}] simulate {args.visits} visits: wall {r['simulate']['wall']:.1f} s, "
              f"CPU {r['simulate']['cpu']:.1f} s (simulate {r['simulate']['simulate']:.1f} s, "
              f"write {r['simulate']['write']:.1f} s), load {fmt_load(r['simulate']['load'])}",
              flush=True)
    shutil.rmtree(root + "-base", ignore_errors=True)
    for name, tree in trees:
        r = res[name]
        rerun = "speed_now" if name == "now" else "speed_base"
        runs = [mosaic(tree, root, rerun) for _ in range(args.repeat)]
        r["mosaic"] = min(runs, key=lambda x: x["wall"])
        r["startup"] = startup(tree)
        m = r["mosaic"]
        ph = ", ".join(f"{k} {m['phases'].get(k, float('nan')):.1f}" for k in PHASES)
        print(f"[{name}] mosaic.py: wall {m['wall']:.1f} s, CPU {m['cpu']:.1f} s ({ph}; start-up "
              f"+ imports {r['startup']['wall']:.1f} s), load {fmt_load(m['load'])}", flush=True)
    sizes = product_sizes(root, "speed_now")
    fl = floor(root, sizes, os.path.join(work, "floor"))
    print(f"floor: read {fl['nfiles']} files ({fl['nbytes'] / 1e6:.1f} MB) in {fl['read']:.2f} s, "
          f"write {fl['nout']} files ({fl['outbytes'] / 1e6:.1f} MB) in {fl['write']:.2f} s; "
          f"process wall {fl['wall']:.2f} s, load {fmt_load(fl['load'])}")
    for name, _ in trees:
        m = res[name]["mosaic"]
        print(f"[{name}] mosaic.py / floor: {m['wall'] / fl['wall']:.1f}x (wall), "
              f"read phase / floor read {m['phases'].get('read', float('nan')) / max(fl['read'], 1e-9):.1f}x, "
              f"write phase / floor write {m['phases'].get('write', float('nan')) / max(fl['write'], 1e-9):.1f}x")
    if args.baseline:
        b, n = res[trees[1][0]], res["now"]
        print("same-run ratios baseline / now: simulate "
              f"{b['simulate']['wall'] / n['simulate']['wall']:.1f}x wall, "
              f"{b['simulate']['cpu'] / n['simulate']['cpu']:.1f}x CPU; mosaic.py "
              f"{b['mosaic']['wall'] / n['mosaic']['wall']:.1f}x wall, "
              f"{b['mosaic']['cpu'] / n['mosaic']['cpu']:.1f}x CPU; phases " + ", ".join(
                  f"{k} {b['mosaic']['phases'].get(k, float('nan')) / max(n['mosaic']['phases'].get(k, float('nan')), 1e-9):.1f}x"
                  for k in PHASES))
        cmp = subprocess.run([PY, os.path.join(HERE, "compare_products.py"),
                              os.path.join(root, "rerun", "speed_base"),
                              os.path.join(root, "rerun", "speed_now"),
                              "--tol-mas", "0.01", "--tol-mmag", "0.01"],
                             capture_output=True, text=True, env=env_for(now))
        print("products baseline vs now (bench/compare_products.py, 0.01 mas / 0.01 mmag):")
        print(cmp.stdout.strip() or cmp.stderr.strip()[-2000:])
        print("products equal within the criterion" if cmp.returncode == 0
              else "PRODUCTS DIFFER beyond the criterion")
    if not args.keep and not args.work:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
