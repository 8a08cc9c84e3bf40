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


@pytest.fixture(scope="session")
def smol():
    """The real default model (converted once into the cache by `./dev test`)."""
    import repedit

    return repedit.load("smollm2-135m")


@pytest.fixture(scope="session")
def untied():
    """A second handle on the default model with its input/output embeddings untied (structural;
    needed by folded projection edits). Logits are unchanged by untying."""
    import repedit
    from repedit.edits.fold import untie_embeddings

    h = repedit.load("smollm2-135m")
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
