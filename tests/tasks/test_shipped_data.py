"""CLINC150 and Banking77 ship with the package: unchanged content (SHA-256 of the README's table), the licences
beside them, and a non-editable install that holds them."""

import gzip
import hashlib
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hope.tasks.continual import SHIPPED_DATA_DIR

REPO = Path(__file__).resolve().parents[2]
SHIPPED = ["README.md", "clinc150/LICENSE", "clinc150/data_full.json.gz", "clinc150/domains.json.gz",
           "banking77/LICENSE", "banking77/train.csv.gz", "banking77/test.csv.gz", "banking77/categories.json.gz"]


def test_content_is_unchanged_and_licences_ship_beside_it():
    table = dict(re.findall(r"^\| `([\w/.]+)` \| `([0-9a-f]{64})` \|$", (SHIPPED_DATA_DIR / "README.md").read_text(),
                            flags=re.M))
    assert sorted(table) == sorted(name[:-3] for name in SHIPPED if name.endswith(".gz"))
    for name, digest in table.items():
        assert hashlib.sha256(gzip.decompress((SHIPPED_DATA_DIR / f"{name}.gz").read_bytes())).hexdigest() == digest
    assert (SHIPPED_DATA_DIR / "clinc150/LICENSE").read_text().splitlines()[2] == "Attribution 3.0 Unported"
    assert (SHIPPED_DATA_DIR / "banking77/LICENSE").read_text().splitlines()[0] == "Attribution 4.0 International"
    assert sorted(str(p.relative_to(SHIPPED_DATA_DIR)) for p in SHIPPED_DATA_DIR.rglob("*") if p.is_file()) == \
        sorted(SHIPPED)


@pytest.mark.slow
def test_a_non_editable_install_holds_the_data(tmp_path):
    """``pip install . --target``, from a copy of the sources (the build writes beside them)."""
    source = tmp_path / "source"
    shutil.copytree(REPO / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(source)], check=True, capture_output=True)
    data = target / "hope" / "tasks" / "data"
    assert sorted(str(p.relative_to(data)) for p in data.rglob("*") if p.is_file()) == sorted(SHIPPED)
    for name in SHIPPED:
        assert (data / name).read_bytes() == (SHIPPED_DATA_DIR / name).read_bytes()
