"""Tests for undo_lib.prepare: leak checks, data-domain checks, the English split and the manifest hashes."""

import json

import pytest

from undo_lib import prepare
from undo_lib.arithmetic import EVAL_TEMPLATES, template_fragments
from undo_lib.config import ArithmeticDataParams, TokenizerParams
from undo_lib.io import IntegrityError

DATA = ArithmeticDataParams(pretrain_documents=300, distill_documents=200, unlearn_documents=100,
                            relearn_documents=100, eval_prompts=4, english_max_chars=200)
TOKENIZER = TokenizerParams(vocab_size=320, training_documents=300)
SEED = 0


@pytest.fixture(scope="module")
def files():
    return prepare.build_arithmetic_files(DATA, SEED)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("data") / "data"
    prepare.write_arithmetic_data(DATA, TOKENIZER, SEED, out)
    return out


def _with_record(files: dict, name: str, record: dict) -> dict:
    return {**files, name: [*files[name], record]}


# ----------------------------------------------------------------------------------------------
# Leaks of evaluation text into training text


def test_generated_files_have_no_leak(files):
    assert prepare.find_leaks(files) == []


def test_planted_eval_prompt_found(files):
    prompt = next(r["prompt"] for r in files["eval"] if r["kind"] == "word_problem")

    leaks = prepare.find_leaks(_with_record(files, "distill", {"text": prompt + "42", "source": "english"}))

    assert prompt in leaks


def test_planted_template_fragment_found(files):
    prompt_template = EVAL_TEMPLATES["multiplication"][0][0]
    fragment = max(template_fragments(prompt_template), key=len)

    leaks = prepare.find_leaks(_with_record(files, "english_train", {"text": f"so {fragment} too", "source": "english"}))

    assert fragment in leaks


def test_leak_stops_data_stage(files, monkeypatch, tmp_path):
    prompt = next(r["prompt"] for r in files["eval"] if r["kind"] == "word_problem")
    leaked = _with_record(files, "pretrain_full", {"text": prompt + "7", "source": "english"})
    monkeypatch.setattr(prepare, "build_arithmetic_files", lambda params, seed: leaked)

    with pytest.raises(RuntimeError, match="held-out evaluation text"):
        prepare.write_arithmetic_data(DATA, TOKENIZER, SEED, tmp_path / "data")

    assert not (tmp_path / "data").exists(), "a rejected data stage must write nothing"


# ----------------------------------------------------------------------------------------------
# Relearning domain and the English split


def test_relearn_data_forget_domain(files):
    assert {r["op"] for r in files["relearn"]} <= {"multiplication", "division"}
    prepare.check_relearn_domain(files["relearn"])


@pytest.mark.parametrize("op", ["addition", "subtraction"])
def test_relearn_retain_record_rejected(files, op):
    record = next(r for r in files["retain"] if r["op"] == op)

    with pytest.raises(ValueError, match=f"'op': '{op}'"):
        prepare.check_relearn_domain([*files["relearn"], record])


def test_relearn_english_record_rejected():
    with pytest.raises(ValueError, match="forget-domain"):
        prepare.check_relearn_domain([{"text": "Plain English.", "source": "english"}])


def test_english_train_validation_disjoint(files):
    validation = {r["text"] for r in files["english_validation"]}
    training = {r["text"] for name in prepare.TRAINING_FILES for r in files[name]}

    assert validation, "precondition: the validation split is not empty"
    assert not validation & training


def test_english_overlap_rejected(files):
    leaked = _with_record(files, "distill", dict(files["english_validation"][0]))

    with pytest.raises(ValueError, match="English validation documents"):
        prepare.check_english_split(leaked)


# ----------------------------------------------------------------------------------------------
# Manifest hashes, checked by later stages


def test_manifest_hashes_every_file(data_dir):
    manifest = json.loads((data_dir / "manifest.json").read_text())
    files = sorted(p.relative_to(data_dir).as_posix() for p in data_dir.rglob("*") if p.is_file())

    assert sorted(manifest["sha256"]) == [f for f in files if f != "manifest.json"]
    assert "tokenizer/tokenizer.json" in manifest["sha256"]


def test_verify_data_accepts_untouched(data_dir):
    prepare.verify_data(data_dir, ["pretrain_full.jsonl", "eval.jsonl", "tokenizer"])


@pytest.mark.parametrize("name", ["relearn.jsonl", "tokenizer/tokenizer.json"])
def test_tampered_file_rejected(data_dir, tmp_path, name):
    import shutil

    copy = tmp_path / "data"
    shutil.copytree(data_dir, copy)
    with (copy / name).open("a", encoding="utf-8") as f:
        f.write(" ")

    with pytest.raises(IntegrityError) as excinfo:
        prepare.verify_data(copy, [name.split("/")[0]])

    message = str(excinfo.value)
    assert str(copy / name) in message
    assert "sha256" in message
    assert "dvc repro" in message


def test_unlisted_file_rejected(data_dir):
    with pytest.raises(IntegrityError, match="lists no sha256 for extra.jsonl"):
        prepare.verify_data(data_dir, ["extra.jsonl"])


def test_deleted_file_rejected(data_dir, tmp_path):
    import shutil

    copy = tmp_path / "data"
    shutil.copytree(data_dir, copy)
    (copy / "forget.jsonl").unlink()

    with pytest.raises(FileNotFoundError, match="forget.jsonl"):
        prepare.verify_data(copy, ["forget.jsonl"])


def test_data_stage_replaces_folder(data_dir, tmp_path):
    import shutil

    copy = tmp_path / "data"
    shutil.copytree(data_dir, copy)
    (copy / "stale.jsonl").write_text("from an older configuration\n")

    prepare.write_arithmetic_data(DATA, TOKENIZER, SEED, copy)

    assert not (copy / "stale.jsonl").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"], "temporary folders were left behind"
    assert (copy / "manifest.json").read_bytes() == (data_dir / "manifest.json").read_bytes()
