"""Shared fixtures: a small trained tokenizer, a tiny Gemma2, the smoke params as a dict, and
copies of the project for the end-to-end DVC tests."""

import copy
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from undo_lib.config import ModelParams
from undo_lib.model import build_model
from undo_lib.tokenizer import train_tokenizer

TESTS_DIR = Path(__file__).parent
ROOT = TESTS_DIR.parent
SMOKE_PARAMS_FILE = TESTS_DIR / "smoke_params.yaml"
VENV_BIN = Path(sys.executable).parent

ENGLISH_SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Aisha has 12 apples and gives 3 of them to Mateo.",
    "A shop had 40 pencils and sold 9 of them. The shop has 31 pencils left.",
    "Python is a programming language that lets you work quickly.",
    "The owl sat on the branch and watched the river flow by.",
]


def _arithmetic_lines() -> list[str]:
    lines = []
    for a in range(1, 30):
        for b in (1, 2, 3, 7, 11):
            lines.append(f"{a} + {b} = {a + b}")
            lines.append(f"{a + b} - {b} = {a}")
            lines.append(f"{a} * {b} = {a * b}")
            lines.append(f"{a * b} / {b} = {float(a)}")
    return lines


@pytest.fixture(scope="session", autouse=True)
def _limit_torch_threads():
    """Run every test on one intra-op thread, because tiny models gain nothing from more threads."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def tokenizer():
    corpus = _arithmetic_lines() + ENGLISH_SENTENCES * 4
    return train_tokenizer(corpus, vocab_size=320)


@pytest.fixture(scope="session")
def tiny_model_params() -> ModelParams:
    return ModelParams(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        intermediate_size=64,
        query_pre_attn_scalar=16,
        sliding_window=64,
        max_position_embeddings=64,
    )


@pytest.fixture
def tiny_model(tiny_model_params, tokenizer):
    return build_model(tiny_model_params, len(tokenizer), seed=0)


@pytest.fixture(scope="session")
def _smoke_params_parsed() -> dict:
    with SMOKE_PARAMS_FILE.open(encoding="utf-8") as f:
        return yaml.safe_load(f)


@pytest.fixture
def smoke_params_dict(_smoke_params_parsed) -> dict:
    """The parsed tests/smoke_params.yaml, deep-copied so a test may mutate it freely."""
    return copy.deepcopy(_smoke_params_parsed)


def set_key(params: dict, dotted: str, value) -> None:
    """Set the nested key ``dotted`` (such as "pretrain.arithmetic.checkpoint_every") in ``params``."""
    *parents, last = dotted.split(".")
    node = params
    for key in parents:
        node = node[key]
    node[last] = value


class ProjectCopy:
    """A copy of the repository's tracked and untracked files (outputs/ excluded) in ``root``.

    params.yaml is the smoke params with ``overrides`` applied. Subprocesses get PYTHONPATH set to
    the copy, so DVC and every Papermill kernel import the copy's undo_lib, not an installed one.
    """

    def __init__(self, root: Path, params: dict):
        self.root = root
        files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                               capture_output=True, text=True, check=True).stdout.split()
        for rel in files:
            if rel.startswith("outputs/") or not (ROOT / rel).is_file():
                continue
            target = root / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, target)
        (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
        subprocess.run(["git", "init", "-q"], cwd=root, check=True)
        self.env = {**os.environ, "PATH": f"{VENV_BIN}:{os.environ['PATH']}", "HF_HUB_OFFLINE": "1",
                    "PYTHONPATH": str(root)}

    def dvc(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
        """Run ``dvc *args`` in the copy and return the finished process (output captured)."""
        return subprocess.run(["dvc", *args], cwd=self.root, env=self.env, capture_output=True, text=True,
                              timeout=timeout)

    def outputs(self, *parts: str) -> Path:
        return self.root.joinpath("outputs", "arithmetic", *parts)


@pytest.fixture(scope="session")
def project_copy(tmp_path_factory, _smoke_params_parsed):
    """Factory of ProjectCopy objects: ``project_copy(name, {"dotted.key": value, ...})``."""

    def make(name: str, overrides: dict | None = None) -> ProjectCopy:
        params = copy.deepcopy(_smoke_params_parsed)
        for key, value in (overrides or {}).items():
            set_key(params, key, value)
        return ProjectCopy(tmp_path_factory.mktemp(name), params)

    return make
