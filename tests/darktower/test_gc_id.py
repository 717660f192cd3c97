"""darktower.process.gc_id: this process's id for assigned_by_gc_id, distinct per forked worker."""

from __future__ import annotations

import os

from darktower.process import MAX_GC_ID_LENGTH, gc_id


def test_it_names_the_host_and_the_process(settings):
    settings.GC_ID = "gc-web-1"
    assert gc_id() == f"gc-web-1-{os.getpid()}"


def test_forked_workers_get_their_own(settings):
    # As gunicorn does: the application is imported in the parent, the workers are forked from it.
    settings.GC_ID = "gc-web-1"
    read, write = os.pipe()
    child = os.fork()
    if child == 0:
        os.write(write, gc_id().encode())
        os._exit(0)
    os.close(write)
    os.waitpid(child, 0)
    with os.fdopen(read) as pipe:
        assert pipe.read() == f"gc-web-1-{child}" != gc_id()


def test_a_long_gc_id_keeps_the_pid_and_fits_the_column(settings):
    settings.GC_ID = "g" * 300
    value = gc_id()
    assert len(value) == MAX_GC_ID_LENGTH and value.endswith(f"-{os.getpid()}")
