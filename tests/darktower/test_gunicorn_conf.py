"""The gunicorn configuration every deployment uses: what it does in a worker after start-up."""

from __future__ import annotations

import gc

from darktower.gunicorn_conf import post_worker_init


def test_a_worker_freezes_what_start_up_left_alive_out_of_the_collectors_sight():
    gc.unfreeze()
    try:
        post_worker_init(worker=None)

        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
