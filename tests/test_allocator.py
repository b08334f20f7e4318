"""Tests of transforms.plumbing.allocator: freed blocks of tens of MB stay in the heap."""

from __future__ import annotations

import subprocess
import sys

import pytest

from transforms.plumbing.allocator import keep_freed_memory

# Four 24 MB blocks alive at once, then freed, 20 times: by default glibc gives the top of the
# heap back above its trim threshold, and each round faults the pages in again.
_ROUNDS = """
import resource, sys
import numpy as np
from transforms.plumbing.allocator import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
def rounds(n):
    for _ in range(n):
        blocks = [np.ones(3_000_000) for _ in range(4)]
        del blocks
rounds(2)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
rounds(20)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> int:
    done = subprocess.run([sys.executable, "-c", _ROUNDS, mode], capture_output=True, text=True, check=True)
    return int(done.stdout.split()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_freed_blocks_are_reused_instead_of_faulted_in_again() -> None:
    default, kept = _faults("default"), _faults("keep")
    # 20 rounds of 96 MB: tens of thousands of pages faulted in again by default (glibc trims
    # part of them), next to none once freed blocks are kept
    assert default > 10_000
    assert kept < default / 10


def test_it_can_be_called_again() -> None:
    assert keep_freed_memory() == keep_freed_memory()
