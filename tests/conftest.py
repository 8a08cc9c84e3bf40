import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).parent))

import pytest  # noqa: E402
import torch  # noqa: E402

from model_guard import ModelGuard  # noqa: E402

torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS") or 0) or max(1, os.cpu_count() or 1))

# REPEDIT_TEST_DEVICE=cuda (bench/gpu_check.sh) puts the real-model fixtures on that device; default CPU
TEST_DEVICE = os.environ.get("REPEDIT_TEST_DEVICE", "cpu")


GUARDS: list[tuple[frozenset[str], ModelGuard]] = []
GUARD_COST = {"checks": 0, "seconds": 0.0}


def guarded(handle, *fixtures: str):
    """Register a session-shared handle with the guard: checked after every test that used one of `fixtures`
    (directly or through another fixture: pytest's fixture closure)."""
    GUARDS.append((frozenset(fixtures), ModelGuard(handle)))
    return handle


def load_default(dtype=torch.float32):
    import repedit

    placement = {} if TEST_DEVICE == "cpu" else {"device_map": {"": TEST_DEVICE}}
    return repedit.load("smollm2-135m", dtype=dtype, **placement)


def refuse_packaged(name, *a, **k):
    """Stands in for `ensure_converted` where no packaged model may be loaded or converted (the fast tier)."""
    raise AssertionError(f"the fast tier loads no packaged model (asked for {name!r}): mark the test "
                         "`real` or use a tiny model (tests/tiny_models.py)")


def pytest_configure(config):
    config.addinivalue_line("markers", "fast: the fast tier (`./dev test -m fast`): no packaged real model is "
                            "loaded or converted; a packaged model asked for there fails the test")
    config.addinivalue_line("markers", "real: loads a packaged real model outside the shared fixtures")
    if config.getoption("markexpr", "") == "fast" or os.environ.get("REPEDIT_NO_REAL_MODELS") == "1":
        from repedit.models import loader, registry

        loader.ensure_converted = registry.ensure_converted = refuse_packaged


def pytest_terminal_summary(terminalreporter):
    if GUARD_COST["checks"]:
        terminalreporter.write_line(f"shared-model guard: {GUARD_COST['checks']} checks, "
                                    f"{GUARD_COST['seconds']:.1f} s in all")


def pytest_collection_modifyitems(config, items):
    """In the fast tier a test marked `real` or `slow` stays out even when its module is marked `fast`."""
    if config.getoption("markexpr", "") != "fast":
        return
    out = [i for i in items if i.get_closest_marker("real") or i.get_closest_marker("slow")]
    if out:
        config.hook.pytest_deselected(items=out)
        items[:] = [i for i in items if i not in out]


@pytest.fixture(autouse=True)
def shared_models_unchanged(request):
    """After every test the shared handles hold what they held at load, or the test fails (and they are
    put back, so that the next test starts clean)."""
    yield
    used = set(request.fixturenames)
    start = time.perf_counter()
    problems = [f"{g.handle.id} ({g.handle.dtype}): {p}" for via, g in GUARDS if via & used for p in g.check()]
    GUARD_COST["checks"] += sum(1 for via, _ in GUARDS if via & used)
    GUARD_COST["seconds"] += time.perf_counter() - start
    if problems:
        pytest.fail("the test changed a shared model (restored for the next test):\n" + "\n".join(problems[:20]),
                    pytrace=False)


@pytest.fixture(scope="session")
def smol():
    """The real default model (converted once into the cache by `./dev test`)."""
    return guarded(load_default(), "smol", "model_in")       # model_in(float32) hands out this one


@pytest.fixture(scope="session")
def untied():
    """A second handle on the default model with its input/output embeddings untied (structural;
    needed by folded projection edits). Logits are unchanged by untying."""
    from repedit.edits.fold import untie_embeddings

    h = load_default()
    assert untie_embeddings(h) is True
    return guarded(h, "untied", "model_in")


@pytest.fixture(scope="session")
def toy():
    import repedit

    return guarded(repedit.load("toy:memorise"), "toy")


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory):
    """Tiny random models of every supported architecture, with the small tokenizer of tests/fixtures."""
    from tiny_models import ARCHS, save_tiny

    root = tmp_path_factory.mktemp("tiny")
    return {arch: save_tiny(arch, root / arch) for arch in ARCHS}


@pytest.fixture(scope="session", autouse=True)
def device_rule():
    """Every test runs under the device trap: a tensor factory called from repedit code without
    `device=` fails the test at that line (a CPU-only machine would otherwise hide it; see
    repedit.devicecheck). REPEDIT_DEVICE_TRAP=record collects them into device-trap.txt instead."""
    from repedit.devicecheck import factory_trap

    record = os.environ.get("REPEDIT_DEVICE_TRAP") == "record"
    with factory_trap(strict=not record) as trap:
        yield trap
    if record:
        Path("device-trap.txt").write_text("".join(f"{k} {v}\n" for k, v in sorted(trap.found.items())))


@pytest.fixture(scope="session")
def model_in(request):
    """model_in(dtype, untied=False): the default model loaded in `dtype` (one handle per combination;
    float32 reuses the `smol` / `untied` handles)."""
    from repedit.edits.fold import untie_embeddings

    handles = {}

    def get(dtype: torch.dtype, untied: bool = False):
        if dtype == torch.float32:
            return request.getfixturevalue("untied" if untied else "smol")
        if (dtype, untied) not in handles:
            h = load_default(dtype)
            if untied:
                assert untie_embeddings(h) is True
            handles[(dtype, untied)] = guarded(h, "model_in")
        return handles[(dtype, untied)]

    return get
