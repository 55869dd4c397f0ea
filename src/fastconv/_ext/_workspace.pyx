"""A pool of workspaces kept between calls, for the convolution kernels (NCHW and channels-last).

A fresh large allocation page-faults on first touch, which costs more than the arithmetic on
small layers, so workspaces are kept and grown on demand. Several Python threads may call at
once (the kernels release the GIL): a call checks a workspace out and gives it back, so two
calls never share one.
"""

import numpy as np

from libc.stdint cimport uintptr_t

_free_workspaces = []      # byte arrays not in use; list.pop/append are atomic under the GIL
cdef Py_ssize_t MAX_KEPT_WORKSPACES = 4


cdef object checkout_workspace(Py_ssize_t nbytes):
    """A byte array of at least nbytes + WORKSPACE_ALIGN, owned by the caller until given back."""
    try:
        ws = _free_workspaces.pop()
    except IndexError:
        ws = None
    if ws is None or ws.shape[0] < nbytes + WORKSPACE_ALIGN:
        # Grow by replacing: the old buffer is released, never kept beside the new one.
        ws = None
        ws = np.empty(nbytes + WORKSPACE_ALIGN, dtype=np.uint8)
    return ws


cdef void return_workspace(object ws):
    if len(_free_workspaces) < MAX_KEPT_WORKSPACES:
        _free_workspaces.append(ws)


cdef char* aligned(object ws):
    """The first WORKSPACE_ALIGN-aligned byte of a checked-out workspace."""
    cdef unsigned char[::1] view = ws
    cdef uintptr_t p = <uintptr_t>&view[0]
    return <char*>((p + WORKSPACE_ALIGN - 1) & ~(<uintptr_t>(WORKSPACE_ALIGN - 1)))


def release_workspaces():
    """Free every cached workspace (they are otherwise kept for the next call)."""
    del _free_workspaces[:]


def workspace_bytes():
    """Bytes held by cached workspaces (not counting those checked out right now)."""
    return sum(ws.nbytes for ws in list(_free_workspaces))
