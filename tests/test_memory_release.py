"""Freed heap memory goes back to the operating system (long LLM audits stay flat)."""

import psutil

from miaudit.utils import memory


def _touched_block() -> bytearray:
    block = bytearray(64 * 1024)  # below glibc's mmap threshold: carved from the heap
    block[::4096] = b"x" * len(block[::4096])  # touch every page so it is resident
    return block


def test_release_free_memory_returns_freed_heap_pages():
    if memory._malloc_trim() is None:  # not glibc: nothing to call, and it says so
        assert memory.release_free_memory() is False
        return
    process = psutil.Process()
    blocks = [_touched_block() for _ in range(2000)]  # about 125 MiB
    pin = _touched_block()  # allocated last: keeps the heap's top in use, so free() alone cannot shrink it
    del blocks
    before = process.memory_info().rss
    assert memory.release_free_memory() is True
    released = before - process.memory_info().rss
    assert released > 60 * 2**20, f"only {released / 2**20:.0f} MiB returned"
    del pin
