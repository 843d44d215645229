"""The hscPipe (Gen2 "butler") data repository: file layout, reruns and the registry.

A repository is a folder ``ROOT`` holding ``registry.sqlite3`` (which maps each (visit, ccd) to
its field, filter, pointing and date), the reference catalogues under ``ROOT/ref_cats/NAME/``
and the processing outputs of each rerun under ``ROOT/rerun/RERUN/``.  A rerun may have a
parent (a ``_parent`` link inside its folder, pointing at the parent repository folder: another
rerun or ROOT); inputs are looked up in the rerun, then its parents, then ROOT; outputs always
go to the named rerun.

Paths are plain strings.
"""
import os
import sqlite3
from pathlib import Path

from .. import MosaicError
from .atomic import atomic_path

# dataset name -> path template, relative to ROOT/rerun/RERUN/ (hscPipe 3.x/4.x layout).
TEMPLATES = {
    # single-frame processing outputs (inputs to the mosaic)
    "calexp": "%(pointing)05d/%(filter)s/corr/CORR-%(visit)07d-%(ccd)03d.fits",
    "src": "%(pointing)05d/%(filter)s/output/SRC-%(visit)07d-%(ccd)03d.fits",
    "icSrc": "%(pointing)05d/%(filter)s/output/ICSRC-%(visit)07d-%(ccd)03d.fits",
    "icMatch": "%(pointing)05d/%(filter)s/output/MATCH-%(visit)07d-%(ccd)03d.fits",
    "srcMatch": "%(pointing)05d/%(filter)s/output/SRCMATCH-%(visit)07d-%(ccd)03d.fits",
    "srcMatchFull": "%(pointing)05d/%(filter)s/output/SRCMATCHFULL-%(visit)07d-%(ccd)03d.fits",
    # mosaic outputs
    "wcs": "%(pointing)05d/%(filter)s/corr/%(tract)04d/wcs-%(visit)07d-%(ccd)03d.fits",
    "fcr": "%(pointing)05d/%(filter)s/corr/%(tract)04d/fcr-%(visit)07d-%(ccd)03d.fits",
    # calibrateExposure / calibrateCatalog outputs
    "calexp_calibrated": "%(pointing)05d/%(filter)s/corr/%(tract)04d/CALEXP-%(visit)07d-%(ccd)03d.fits",
    "src_calibrated": "%(pointing)05d/%(filter)s/output/%(tract)04d/CALSRC-%(visit)07d-%(ccd)03d.fits",
    # the sky map (hscPipe's deepCoadd_skyMap; coaddName is MosaicConfig.coaddName)
    "skymap": "%(coaddName)sCoadd/skyMap.json",
}

# data id values a template may take when the data id does not give them
DEFAULT_DATA_ID = {"coaddName": "deep"}

# reference catalogue folder, relative to ROOT (not to the rerun)
REFCAT_TEMPLATE = "ref_cats/%(name)s"

REGISTRY_NAME = "registry.sqlite3"
PARENT_LINK = "_parent"
_MAX_CHAIN = 64  # longest parent chain followed before suspecting a loop


def _check_relative_name(name, what):
    """Validate a rerun (or ref_cat) name: a non-empty relative path without '..' components."""
    if not isinstance(name, str):
        raise MosaicError(f"{what} must be a string, not {name!r}")
    if not name.strip():
        raise MosaicError(f"{what} is empty")
    if os.path.isabs(name) or name.startswith("~"):
        raise MosaicError(f"{what} {name!r} must be a name relative to ROOT/rerun/, not an absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise MosaicError(f"{what} {name!r} must not contain a '..' component")
    if not parts:
        raise MosaicError(f"{what} {name!r} is empty")
    return "/".join(parts)


# ---------------------------------------------------------------------------------------------
# the registry

# The hscPipe registry schema, as pipe_tasks' RegisterTask.createTable made it from obs_subaru's
# ingest config: lower-case sqlite types "int"/"text"/"double", an autoincrement id and
# unique(visit, ccd) on ``raw``; ``raw_visit`` holds one row per visit (unique(visit)), filled
# with "INSERT OR IGNORE ... SELECT DISTINCT ... FROM raw".  (obs_subaru's raw_visit has no
# pointing column; ours has one, and nothing here reads raw_visit.)
RAW_COLUMNS = {
    "field": "text",
    "visit": "int",
    "filter": "text",
    "dateObs": "text",
    "pointing": "int",
    "ccd": "int",
    "config": "text",
    "taiObs": "text",
    "expTime": "double",
}
RAW_VISIT_COLUMNS = ["visit", "field", "filter", "dateObs", "taiObs", "pointing"]
_REQUIRED_ROW_KEYS = ("visit", "ccd", "filter", "pointing")
_REQUIRED_COLUMNS = ("visit", "ccd", "filter")
_INT_COLUMNS = ("visit", "ccd", "pointing")

_CREATE_RAW = (
    "create table raw (id integer primary key autoincrement, "
    + ", ".join(f"{col} {typ}" for col, typ in RAW_COLUMNS.items())
    + ", unique(visit, ccd))"
)
_CREATE_RAW_VISIT = (
    "create table raw_visit ("
    + ", ".join(f"{col} {RAW_COLUMNS[col]}" for col in RAW_VISIT_COLUMNS)
    + ", unique(visit))"
)
_FILL_RAW_VISIT = (
    "insert or ignore into raw_visit select distinct " + ", ".join(RAW_VISIT_COLUMNS) + " from raw"
)


class Registry:
    """The hscPipe ``registry.sqlite3``, read once into memory (table ``raw``).

    Rows are dicts with (at least) the keys of `RAW_COLUMNS`; columns a foreign registry lacks
    are None.  Consistency (one filter and one pointing per visit, one row per (visit, ccd)) is
    checked for the visits one asks about, so that a flaw in an unrelated visit does not stop a
    run.
    """

    def __init__(self, path):
        self.path = os.fspath(path)
        self._rows = self._read()
        self._by_visit = {}
        self._by_key = {}
        for row in self._rows:
            self._by_visit.setdefault(row["visit"], []).append(row)
            self._by_key.setdefault((row["visit"], row["ccd"]), []).append(row)
        self._checked = set()

    def __repr__(self):
        return f"Registry({self.path!r}: {len(self._rows)} rows, {len(self._by_visit)} visits)"

    def __len__(self):
        return len(self._rows)

    def _read(self):
        path = self.path
        if not os.path.exists(path):
            raise MosaicError(f"registry {path} does not exist")
        if not os.path.isfile(path):
            raise MosaicError(f"registry {path} is not a file")
        try:
            conn = sqlite3.connect(Path(path).absolute().as_uri() + "?mode=ro", uri=True)
        except sqlite3.Error as e:
            raise MosaicError(f"cannot open registry {path}: {e}") from None
        try:
            conn.row_factory = sqlite3.Row
            tables = {r[0] for r in conn.execute("select name from sqlite_master where type='table'")}
            if "raw" not in tables:
                raise MosaicError(f"registry {path} has no table 'raw': not an hscPipe registry")
            cursor = conn.execute("select * from raw")
            columns = [d[0] for d in cursor.description]
            lacking = [c for c in _REQUIRED_COLUMNS if c not in columns]
            if lacking:
                raise MosaicError(f"registry {path}: table 'raw' has no column {', '.join(lacking)}")
            fetched = cursor.fetchall()
        except sqlite3.Error as e:
            raise MosaicError(f"registry {path} is not a readable sqlite database ({e})") from None
        finally:
            conn.close()
        rows = []
        for r in fetched:
            row = {col: None for col in RAW_COLUMNS}
            row.update(dict(zip(columns, r)))
            row.pop("id", None)
            for col in _INT_COLUMNS:
                value = row[col]
                if value is None:
                    if col != "pointing":
                        raise MosaicError(f"registry {path}: a row of table 'raw' has no {col}")
                    continue
                try:
                    row[col] = int(value)
                except (TypeError, ValueError):
                    raise MosaicError(f"registry {path}: {col} {value!r} is not an integer") from None
            rows.append(row)
        rows.sort(key=lambda row: (row["visit"], row["ccd"]))
        return rows

    @classmethod
    def create(cls, path, rows):
        """Write a new registry at `path` (replacing any) from dicts with the `RAW_COLUMNS` keys.

        visit, ccd, filter and pointing are required; the other columns default to NULL.  The
        file is built under a temporary name and renamed, so readers never see a partial one.
        Duplicate (visit, ccd) rows and visits with two filters or pointings are refused.
        """
        path = os.fspath(path)
        records = []
        seen = {}
        per_visit = {}
        for n, row in enumerate(rows):
            unknown = sorted(set(row) - set(RAW_COLUMNS))
            if unknown:
                raise MosaicError(f"registry row {n}: unknown column(s) {', '.join(unknown)} "
                                  f"(columns: {', '.join(RAW_COLUMNS)})")
            lacking = [k for k in _REQUIRED_ROW_KEYS if row.get(k) is None]
            if lacking:
                raise MosaicError(f"registry row {n}: no {', '.join(lacking)}")
            row = dict(row)
            for col in _INT_COLUMNS:
                try:
                    row[col] = int(row[col])
                except (TypeError, ValueError):
                    raise MosaicError(f"registry row {n}: {col} {row[col]!r} is not an integer") from None
            visit, ccd = row["visit"], row["ccd"]
            if (visit, ccd) in seen:
                raise MosaicError(f"registry rows {seen[visit, ccd]} and {n}: visit {visit} ccd {ccd} twice")
            seen[visit, ccd] = n
            key = (row["filter"], row["pointing"])
            first = per_visit.setdefault(visit, key)
            if first != key:
                raise MosaicError(f"registry: visit {visit} has two filter/pointing values "
                                  f"({first[0]}/{first[1]} and {key[0]}/{key[1]})")
            records.append(tuple(row.get(col) for col in RAW_COLUMNS))
        with atomic_path(path) as tmp:
            conn = sqlite3.connect(tmp)
            try:
                conn.execute(_CREATE_RAW)
                conn.execute(_CREATE_RAW_VISIT)
                conn.executemany(
                    f"insert into raw values (NULL{', ?' * len(RAW_COLUMNS)})", records)
                conn.execute(_FILL_RAW_VISIT)
                conn.commit()
            finally:
                conn.close()
        return cls(path)

    # -- queries ---------------------------------------------------------------------------

    def rows(self, **filters):
        """Rows of table ``raw`` (copies, sorted by visit then ccd) matching all `filters`.

        A filter value is compared for equality, or, if it is a list, tuple, set or range, for
        membership.
        """
        unknown = sorted(set(filters) - set(RAW_COLUMNS))
        if unknown:
            raise MosaicError(f"registry has no column {', '.join(unknown)} "
                              f"(columns: {', '.join(RAW_COLUMNS)})")
        tests = []
        for key, value in filters.items():
            if isinstance(value, (list, tuple, set, frozenset, range)):
                tests.append((key, True, set(value)))
            else:
                tests.append((key, False, value))
        source = self._rows
        scalar = [k for k, many, _ in tests if not many]
        if "visit" in scalar and "ccd" in scalar:
            source = self._by_key.get((filters["visit"], filters["ccd"]), [])
        elif "visit" in scalar:
            source = self._by_visit.get(filters["visit"], [])
        out = []
        for row in source:
            if all((row[k] in v) if many else (row[k] == v) for k, many, v in tests):
                out.append(dict(row))
        return out

    def visits(self):
        """Sorted list of the visits in the registry."""
        return sorted(self._by_visit)

    def has_visit(self, visit):
        """Whether the registry has rows of `visit`."""
        return visit in self._by_visit

    def check_visit(self, visit):
        """Raise MosaicError if `visit` is unknown, has two filters or pointings, or a CCD twice."""
        rows = self._by_visit.get(visit)
        if rows is None:
            raise MosaicError(f"visit {visit} is not in the registry {self.path}")
        if visit in self._checked:
            return
        filters = sorted({str(r["filter"]) for r in rows})
        if len(filters) > 1:
            raise MosaicError(f"visit {visit} has {len(filters)} filters in the registry "
                              f"{self.path}: {', '.join(filters)}")
        pointings = sorted({r["pointing"] for r in rows}, key=str)
        if len(pointings) > 1:
            raise MosaicError(f"visit {visit} has {len(pointings)} pointings in the registry "
                              f"{self.path}: {', '.join(map(str, pointings))}")
        ccds = [r["ccd"] for r in rows]
        if len(set(ccds)) != len(ccds):
            dups = sorted({c for c in ccds if ccds.count(c) > 1})
            raise MosaicError(f"visit {visit} has duplicate rows for ccd {', '.join(map(str, dups))} "
                              f"in the registry {self.path}")
        self._checked.add(visit)

    def visit_info(self, visit):
        """dict(field, filter, dateObs, taiObs, pointing) of `visit`; MosaicError if unknown."""
        self.check_visit(visit)
        row = self._by_visit[visit][0]
        return {k: row[k] for k in ("field", "filter", "dateObs", "taiObs", "pointing")}

    def ccds(self, visit):
        """Sorted list of the CCDs of `visit`; MosaicError if the visit is unknown."""
        self.check_visit(visit)
        return [r["ccd"] for r in self._by_visit[visit]]


# ---------------------------------------------------------------------------------------------
# the repository


class Repository:
    """A Gen2 data repository ``root`` seen through the rerun ``rerun``.

    ``rerun`` is a name relative to ``ROOT/rerun/`` (it may contain '/'); hscPipe's
    ``INPUT:OUTPUT`` form is accepted too: outputs go to OUTPUT, and inputs are read from
    OUTPUT, then INPUT and its parents (`make_rerun_dir` records INPUT as OUTPUT's ``_parent``).
    """

    def __init__(self, root, rerun, calib=None):
        root = os.fspath(root)
        if not os.path.isdir(root):
            raise MosaicError(f"data repository {root} is not a directory")
        self.root = os.path.abspath(root)
        self.calib = os.path.abspath(os.fspath(calib)) if calib is not None else None
        if isinstance(rerun, str) and ":" in rerun:
            parts = rerun.split(":")
            if len(parts) != 2:
                raise MosaicError(f"rerun {rerun!r} must be OUTPUT or INPUT:OUTPUT")
            self.input_rerun = _check_relative_name(parts[0], "input rerun")
            self.rerun = _check_relative_name(parts[1], "rerun")
            if self.input_rerun == self.rerun:
                raise MosaicError(f"rerun {rerun!r}: input and output reruns are the same")
        else:
            self.input_rerun = None
            self.rerun = _check_relative_name(rerun, "rerun")
        self.rerun_dir = os.path.join(self.root, "rerun", *self.rerun.split("/"))
        self._registry = None
        self._search = None               # search_path, held by hold_search_path()

    def __repr__(self):
        rerun = f"{self.input_rerun}:{self.rerun}" if self.input_rerun else self.rerun
        return f"Repository({self.root!r}, rerun={rerun!r})"

    # -- parent chain ------------------------------------------------------------------------

    @staticmethod
    def _read_parent(folder):
        """The folder that `folder`/_parent designates (absolute, normalised), or None."""
        link = os.path.join(folder, PARENT_LINK)
        if os.path.islink(link):
            target = os.readlink(link)
        elif os.path.isfile(link):
            try:
                with open(link) as f:
                    target = f.read().strip()
            except (OSError, UnicodeDecodeError) as e:
                raise MosaicError(f"cannot read the parent link {link}: {e}") from None
            if not target or "\n" in target:
                raise MosaicError(f"parent link {link} must hold one path")
        elif os.path.isdir(link):  # a copied repository: _parent is the parent itself
            return os.path.abspath(link)
        else:
            return None
        target = os.path.normpath(os.path.join(folder, os.path.expanduser(target)))
        if not os.path.isdir(target):
            raise MosaicError(f"parent link {link} points to {target}, which is not a directory")
        return target

    def _chain_from(self, start):
        chain = []
        seen = set()
        folder = start
        root_real = os.path.realpath(self.root)
        while folder is not None:
            real = os.path.realpath(folder)
            if real == root_real:
                break
            if real in seen or len(chain) > _MAX_CHAIN:
                raise MosaicError(f"the _parent links of rerun {self.rerun} form a loop at {folder}")
            seen.add(real)
            chain.append(folder)
            folder = self._read_parent(folder) if os.path.isdir(folder) else None
        return chain

    @property
    def search_path(self):
        """Folders searched for inputs, in order: the rerun, its parents, ROOT (last)."""
        if self._search is not None:
            return list(self._search)
        if self.input_rerun is None:
            return self._chain_from(self.rerun_dir) + [self.root]
        # INPUT:OUTPUT: OUTPUT's parent is INPUT (OUTPUT may not have its _parent link yet)
        input_dir = self.input_rerun_dir
        if not os.path.isdir(input_dir):
            raise MosaicError(f"input rerun {self.input_rerun}: {input_dir} is not a directory")
        parent = self._read_parent(self.rerun_dir) if os.path.isdir(self.rerun_dir) else None
        if parent is not None and os.path.realpath(parent) != os.path.realpath(input_dir):
            raise MosaicError(f"rerun {self.rerun} already has the parent {parent}, "
                              f"not the input rerun {input_dir}")
        return [self.rerun_dir] + self._chain_from(input_dir) + [self.root]

    @property
    def input_rerun_dir(self):
        """The folder of the INPUT rerun of ``--rerun=INPUT:OUTPUT``, or None."""
        if self.input_rerun is None:
            return None
        return os.path.join(self.root, "rerun", *self.input_rerun.split("/"))

    @property
    def parents(self):
        """The parent repositories of the rerun, nearest first; ROOT is the last."""
        return self.search_path[1:]

    def hold_search_path(self):
        """Resolve the search path (the rerun's ``_parent`` links) once and keep it: for
        reading many inputs in one go, where :meth:`find` would resolve it at every call
        (~10 stat calls each). Returns the repository."""
        self._search = tuple(self.search_path)
        return self

    def make_rerun_dir(self):
        """Create the rerun folder (and, for INPUT:OUTPUT, its ``_parent`` link); return it."""
        self._search = None               # a new _parent link changes the search path
        os.makedirs(self.rerun_dir, exist_ok=True)
        link = os.path.join(self.rerun_dir, PARENT_LINK)
        if self.input_rerun is not None and not os.path.lexists(link):
            target = self.input_rerun_dir
            try:
                os.symlink(os.path.relpath(target, self.rerun_dir), link)
            except OSError:  # no symlinks here: a plain file holding the path
                with atomic_path(link) as tmp:
                    with open(tmp, "w") as f:
                        f.write(target + "\n")
        return self.rerun_dir

    # -- datasets ----------------------------------------------------------------------------

    @staticmethod
    def relative_path(dataset, **data_id):
        """The path of `dataset` relative to a repository folder."""
        try:
            template = TEMPLATES[dataset]
        except KeyError:
            raise MosaicError(f"unknown dataset {dataset!r} (known: {', '.join(TEMPLATES)})") from None
        given = dict(DEFAULT_DATA_ID)
        given.update((k, v) for k, v in data_id.items() if v is not None)  # tract=None: no tract
        try:
            return template % given
        except KeyError as e:
            raise MosaicError(f"dataset {dataset} needs {e.args[0]} in its data id "
                              f"(got {_format_id(data_id)})") from None
        except TypeError:
            raise MosaicError(f"dataset {dataset}: bad data id {_format_id(data_id)} "
                              f"for {template}") from None

    def path(self, dataset, **data_id):
        """Where `dataset` is (to be) written: always in the named rerun."""
        return os.path.join(self.rerun_dir, self.relative_path(dataset, **data_id))

    def find(self, dataset, **data_id):
        """The first existing `dataset` file in the rerun, its parents, then ROOT; or None."""
        rel = self.relative_path(dataset, **data_id)
        for folder in self.search_path:
            candidate = os.path.join(folder, rel)
            if os.path.exists(candidate):
                return candidate
        return None

    def refcat_dir(self, name):
        """``ROOT/ref_cats/NAME`` (relative to ROOT, not to the rerun)."""
        name = _check_relative_name(name, "reference catalogue name")
        return os.path.join(self.root, *(REFCAT_TEMPLATE % {"name": name}).split("/"))

    @property
    def registry_path(self):
        """Path of the registry, ``ROOT/registry.sqlite3``."""
        return os.path.join(self.root, REGISTRY_NAME)

    @property
    def registry(self):
        """The Registry of ``ROOT/registry.sqlite3``, opened on first use."""
        if self._registry is None:
            path = self.registry_path
            if not os.path.exists(path):
                raise MosaicError(f"no registry {path}: is {self.root} an hscPipe data repository?")
            self._registry = Registry(path)
        return self._registry


def _format_id(data_id):
    return " ".join(f"{k}={v}" for k, v in data_id.items()) or "(empty)"
