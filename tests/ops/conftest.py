"""Fixtures shared by the ops tests."""
import pytest


def _main_thread_share(fn) -> float:
    """Loop rate of the calling thread while ``fn`` runs in another thread, relative to its
    rate while another thread merely sleeps: about 1 when ``fn`` releases the GIL, near 0
    when it holds it."""
    import threading
    import time

    def rate(work) -> float:
        done = []
        worker = threading.Thread(target=lambda: (work(), done.append(1)))
        ticks, start = 0, time.perf_counter()
        worker.start()
        while not done:
            ticks += 1
        elapsed = time.perf_counter() - start
        worker.join()
        return ticks / elapsed

    return rate(fn) / rate(lambda: time.sleep(0.05))


@pytest.fixture
def main_thread_share():
    """Measure how much a call lets the calling thread run (GIL released: about 1)."""
    return _main_thread_share
