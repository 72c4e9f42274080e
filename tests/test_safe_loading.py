"""Static checks that undo_lib and the notebooks never unpickle files or run remote code.

Models and checkpoints are safetensors; the torch.load of the optimizer state must pass
weights_only=True. One pickle is allowed, and listed in REVIEWED: the arguments that
``run_training`` hands its training processes, written and read within one call in a private
temporary folder. The scan reads the source with ``ast``, so comments and messages that mention
pickles do not count, and it is itself tested on snippets that break each rule.
"""

import ast
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
UNSAFE_MODULES = {"pickle", "_pickle", "cPickle", "dill", "cloudpickle", "joblib", "shelve", "marshal"}
MODEL_LOADERS = ("ForCausalLM", "AutoModel")

# File -> the findings it may have, without line numbers. Anything else found there still fails.
REVIEWED = {
    # pickles run_training's arguments (writes only; pickle for its PicklingError)
    "undo_lib/distributed.py": ["import pickle", "import cloudpickle"],
    "undo_lib/distributed_worker.py": ["torch.load() without weights_only=True"],  # reads them back
}


def _keyword(call: ast.Call, name: str):
    for keyword in call.keywords:
        if keyword.arg == name:
            return keyword.value.value if isinstance(keyword.value, ast.Constant) else keyword.value
    return None


def _call_name(call: ast.Call) -> str:
    return ast.unparse(call.func)


def unsafe_loading(source: str) -> list[str]:
    """Return one line per unsafe deserialisation or remote-code use found in ``source``."""
    problems = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            problems += [f"line {node.lineno}: import {a.name}" for a in node.names
                         if a.name.split(".")[0] in UNSAFE_MODULES]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in UNSAFE_MODULES:
            problems.append(f"line {node.lineno}: from {node.module} import ...")
        elif isinstance(node, ast.Attribute) and node.attr in ("read_pickle", "to_pickle"):
            problems.append(f"line {node.lineno}: {node.attr}")
        elif isinstance(node, ast.Call):
            name = _call_name(node)
            if name in ("torch.load", "load") and _keyword(node, "weights_only") is not True:
                problems.append(f"line {node.lineno}: {name}() without weights_only=True")
            if _keyword(node, "trust_remote_code") is True:
                problems.append(f"line {node.lineno}: trust_remote_code=True")
            if _keyword(node, "allow_pickle") is True:
                problems.append(f"line {node.lineno}: allow_pickle=True")
            if name.endswith(".from_pretrained") and any(loader in name for loader in MODEL_LOADERS) \
                    and _keyword(node, "use_safetensors") is not True:
                problems.append(f"line {node.lineno}: {name}() without use_safetensors=True")
    return problems


def _sources():
    for path in sorted((ROOT / "undo_lib").rglob("*.py")):
        yield path.relative_to(ROOT).as_posix(), path.read_text(encoding="utf-8")
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        cells = nbformat.read(path, as_version=4).cells
        yield path.relative_to(ROOT).as_posix(), "\n".join(c.source for c in cells if c.cell_type == "code")


@pytest.mark.parametrize("name,source", list(_sources()), ids=[name for name, _ in _sources()])
def test_no_unsafe_loading(name, source):
    findings = [problem.split(": ", 1)[1] for problem in unsafe_loading(source)]

    assert findings == REVIEWED.get(name, [])


def test_torch_load_present_and_safe():
    source = (ROOT / "undo_lib" / "checkpoint.py").read_text(encoding="utf-8")

    assert "torch.load(" in source, "precondition: the checkpoint loader uses torch.load"
    assert unsafe_loading(source) == []


@pytest.mark.parametrize("snippet", [
    "import pickle",
    "import dill as d",
    "from joblib import load",
    "torch.load(path)",
    "torch.load(path, weights_only=False)",
    "from torch import load\nload(path)",
    "AutoModelForCausalLM.from_pretrained(p, trust_remote_code=True, use_safetensors=True)",
    "Gemma2ForCausalLM.from_pretrained(p)",
    "np.load(p, allow_pickle=True)",
    "pd.read_pickle(p)",
])
def test_scan_catches_violation(snippet):
    assert unsafe_loading(snippet), f"the scan missed: {snippet}"


def test_scan_accepts_safe_calls():
    safe = ("torch.load(p, map_location='cpu', weights_only=True)\n"
            "Gemma2ForCausalLM.from_pretrained(p, use_safetensors=True, trust_remote_code=False)\n"
            "message = 'pickled checkpoints are not loaded'\n")

    assert unsafe_loading(safe) == []
