"""bench.common.process_tree_cpu_seconds: what a process tree spent, readings that never go down while it runs."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from bench.common import process_tree_cpu_seconds

# A child that burns CPU, says so, and exits once it reads a line.
CHILD = textwrap.dedent("""
    import sys, time
    end = time.process_time() + 0.5
    while time.process_time() < end:
        pass
    print("burnt", flush=True)
    sys.stdin.readline()
""")
# Its parent, which waits for it (once told to end it) and then says so.
PARENT = textwrap.dedent(f"""
    import subprocess, sys
    child = subprocess.Popen([sys.executable, "-c", {CHILD!r}], stdin=subprocess.PIPE, stdout=sys.stdout)
    sys.stdin.readline()
    child.stdin.write(b"go\\n")
    child.stdin.flush()
    child.wait()
    print("reaped", flush=True)
    sys.stdin.readline()
""")


def test_the_cpu_of_a_child_that_ended_stays_counted():
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout.readline().strip() == "burnt"
        while_running = process_tree_cpu_seconds(parent.pid)
        parent.stdin.write("end the child\n")
        parent.stdin.flush()
        assert parent.stdout.readline().strip() == "reaped"
        after_it_ended = process_tree_cpu_seconds(parent.pid)
    finally:
        parent.stdin.close()
        parent.wait(timeout=30)

    assert while_running >= 0.5
    assert after_it_ended >= while_running
