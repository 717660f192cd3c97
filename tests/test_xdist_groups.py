"""`make test` runs pytest-xdist with `--dist loadgroup`: the tests that start heavy processes (faults, load, bench
smoke) share the group "processes", so one worker runs them one after another and a module's shared fixture runs
once. xdist groups by a suffix it adds to each node id; a pytest that ignores the suffix spreads the group over
every worker without a word, and the bench smoke's run then starts twice at once on the same scratch databases."""

from __future__ import annotations

import os

import pytest

pytestmark = pytest.mark.xdist_group("processes")


@pytest.mark.parametrize("index", range(4))
def test_a_group_member_is_scheduled_as_its_group(request, index):
    if os.environ.get("PYTEST_XDIST_WORKER") is None:
        assert request.config.getoption("numprocesses") in (None, 0)  # one process: nothing to group
        return
    assert request.config.getoption("loadgroup")  # a worker's own record of --dist loadgroup
    assert request.node.nodeid.endswith("@processes")
