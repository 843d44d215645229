"""Where independent work runs: in this process, in local processes (-j N) or on a Dask
cluster (--scheduler ADDRESS). No cluster code of our own: dask.distributed is the engine.

Local processes are spawned, not forked: the C++ core uses OpenMP, after which a forked child
can hang (build notes).
"""
import concurrent.futures
import multiprocessing

from .. import MosaicError

__all__ = ["dask_client", "process_pool"]


def dask_client(address):
    """A dask.distributed Client of the scheduler at `address`, or None without one."""
    if not address:
        return None
    try:
        from dask.distributed import Client       # optional: pip install 'mosaicfit[dask]'
    except ImportError:
        raise MosaicError("--scheduler needs dask.distributed: pip install 'dask[distributed]'") \
            from None
    try:
        return Client(address, timeout=30)
    except (OSError, TimeoutError) as e:
        raise MosaicError(f"cannot reach the Dask scheduler {address}: {e}") from None


def process_pool(jobs):
    """A pool of `jobs` spawned local processes (a concurrent.futures executor)."""
    return concurrent.futures.ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"))
