"""Fixtures shared by the ops tests."""
import pytest

try:
    from fedmm import _C  # noqa: F401
    HAVE_CPP = True
except ImportError:
    HAVE_CPP = False


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


ISAS = ["base", "avx2", "avx512"]


def _supported_isas() -> list[str]:
    if not HAVE_CPP:
        pytest.skip("fedmm._C (C++ core) is not built")
    from fedmm import _C

    return ISAS[: ISAS.index(_C.cpu_isa()) + 1]


@pytest.fixture(params=ISAS)
def isa(request):
    """Run a test with the C++ kernels capped to one instruction set (skip if unsupported)."""
    if request.param not in _supported_isas():
        pytest.skip(f"CPU lacks {request.param}")
    from fedmm import _C

    assert _C.set_isa(request.param) == request.param
    yield request.param
    _C.set_isa("avx512")


@pytest.fixture
def use_isa():
    """(supported instruction sets, cap(name)): cap the C++ kernels within one test; reset after."""
    from fedmm import _C

    def cap(name: str) -> None:
        assert _C.set_isa(name) == name

    yield _supported_isas(), cap
    _C.set_isa("avx512")
