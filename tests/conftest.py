import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).parent))

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(max(1, os.cpu_count() or 1))

# REPEDIT_TEST_DEVICE=cuda (bench/gpu_check.sh) puts the real-model fixtures on that device; default CPU
TEST_DEVICE = os.environ.get("REPEDIT_TEST_DEVICE", "cpu")


def load_default(dtype=torch.float32):
    import repedit

    placement = {} if TEST_DEVICE == "cpu" else {"device_map": {"": TEST_DEVICE}}
    return repedit.load("smollm2-135m", dtype=dtype, **placement)


@pytest.fixture(scope="session")
def smol():
    """The real default model (converted once into the cache by `./dev test`)."""
    return load_default()


@pytest.fixture(scope="session")
def untied():
    """A second handle on the default model with its input/output embeddings untied (structural;
    needed by folded projection edits). Logits are unchanged by untying."""
    from repedit.edits.fold import untie_embeddings

    h = load_default()
    assert untie_embeddings(h) is True
    return h


@pytest.fixture(scope="session")
def toy():
    import repedit

    return repedit.load("toy:memorise")


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory, smol):
    from tiny_models import ARCHS, save_tiny

    root = tmp_path_factory.mktemp("tiny")
    return {arch: save_tiny(arch, root / arch, smol.tokenizer) for arch in ARCHS}


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
            handles[(dtype, untied)] = h
        return handles[(dtype, untied)]

    return get
