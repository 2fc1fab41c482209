"""Each example runs to the end (each starts and stops a cluster of its own)."""

import os
import subprocess
import sys

import pytest

HERE = os.path.join(os.path.dirname(__file__), "..", "examples")


@pytest.mark.parametrize("name,args,expect", [
    ("primes.py", [], "1000th: 7919"),
    ("sum_speedup.py", ["6"], "ceiling"),
    ("executor_walkthrough.py", [], "cancel a queued task: True"),
    ("parallel_decorator.py", [], "engine namespace: [5, 5]"),
    ("shared_queue.py", [], "1000th: 7919"),
])
def test_example(name, args, expect):
    done = subprocess.run([sys.executable, os.path.join(HERE, name), *args],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert expect in done.stdout, done.stdout
