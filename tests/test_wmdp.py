"""The WMDP branch: params, stand-in data, packing, evaluation, unlearning setup, base model and report."""

from __future__ import annotations

import copy
import dataclasses
import filecmp

import pandas as pd
import pytest
import torch

from tests.conftest import ROOT, set_key
from undo_lib.config import ModelParams, ParamsError, load_params, params_from_dict
from undo_lib.io import read_jsonl, write_json
from undo_lib.pretrained import PretrainedSource, PretrainedSourceError
from undo_lib.tokenizer import BOS_ID, EOS_ID, train_tokenizer
from undo_lib.wmdp import (DATA_FILES, PRETRAIN_FILE, SOURCE_RECORD, MultipleChoiceEvaluator, build_wmdp_files,
                           final_metrics, load_wmdp_model, model_source, pack_texts, unlearn_setup, validation_data,
                           write_base)
from undo_lib.wmdp_report import markdown_table, summarize_wmdp
from undo_lib.wmdp_stages import check_alpha, check_local_files, check_run, start_wmdp_stage
from undo_lib.wmdp_stand_in import write_stand_in

STAND_IN = ROOT / "data" / "wmdp-stand-in"


@pytest.fixture
def wmdp_dict(smoke_params_dict) -> dict:
    return smoke_params_dict


@pytest.fixture(scope="module")
def w():
    return load_params(ROOT / "tests" / "smoke_params.yaml").wmdp


@pytest.fixture(scope="module")
def small_model_params() -> ModelParams:
    return ModelParams(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1, head_dim=16,
                       intermediate_size=64, query_pre_attn_scalar=16, sliding_window=64, max_position_embeddings=512)


# ----------------------------------------------------------------------------------------------
# Params


@pytest.mark.parametrize("key, value, words", [
    ("wmdp.undo.alphas", [1.5], "wmdp.undo.alphas[0]"),
    ("wmdp.undo.teachers", ["GradDiff"], "wmdp.undo.teachers[0]"),
    ("wmdp.unlearn.runs", ["MaxEnt", "MaxEnt"], "without duplicates"),
    ("wmdp.unlearn.runs", ["GradDiff"], "wmdp.unlearn.runs[0]"),
    ("wmdp.unlearn.MaxEnt.alpha", 1.0, "strictly between 0 and 1"),
    ("wmdp.data.relearn_mixture", {"forget": 0.5, "retain": 0.6}, "sum to 1"),
    ("wmdp.data.relearn_mixture", {"forget": 0.5, "retian": 0.5}, "wmdp.data.relearn_mixture.retian"),
    ("wmdp.relearn.train.eval_steps", [1, 9], "wmdp.relearn.train.eval_steps"),
    ("wmdp.relearn.train.eval_steps", [3, 1], "increasing"),
    ("wmdp.evaluate.forget.questions", None, "wmdp.evaluate.forget.questions"),
    ("wmdp.evaluate.retain.fewshot_questions", None, "num_fewshot=2"),
    ("wmdp.data.forget.config", "cyber-forget-corpus", "apply to kind: hub"),
    ("wmdp.model.dtype", "fp16", "wmdp.model.dtype"),
    ("wmdp.unlearn.RMU.layers", [3], "below hidden_layer"),
    ("wmdp.undo.beta", 1.5, "wmdp.undo.beta"),
    ("wmdp.model.source", "outputs/wmdp/models/base", "outside outputs/"),
    ("wmdp.data.forget.path", "/tmp/forget.jsonl", "under data/"),
    ("wmdp.data.forget.path", "corpora/forget.jsonl", "under data/"),
    ("wmdp.evaluate.forget.questions", "../wmdp_bio.jsonl", "under data/"),
    ("wmdp.evaluate.harness_include_path", "tasks", "under data/"),
    ("wmdp.data.validation_documents", 0, "wmdp.data.validation_documents"),
    ("wmdp.model.stand_in_pretrain.lr", None, "wmdp.model.stand_in_pretrain.lr"),
])
def test_invalid_wmdp_params(wmdp_dict, key, value, words):
    set_key(wmdp_dict, key, value)
    with pytest.raises(ParamsError, match=words.replace("[", r"\[").replace("]", r"\]")):
        params_from_dict(wmdp_dict)


def test_unknown_wmdp_key_suggests(wmdp_dict):
    wmdp_dict["wmdp"]["undo"]["alpha"] = [0.25]
    with pytest.raises(ParamsError, match="wmdp.undo.alpha: unknown key. Did you mean 'alphas'"):
        params_from_dict(wmdp_dict)


def test_stage_needs_wmdp_section(tmp_path, smoke_params_dict):
    import yaml

    del smoke_params_dict["wmdp"]
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(smoke_params_dict))
    with pytest.raises(ParamsError, match="no 'wmdp' section"):
        start_wmdp_stage(str(path), "data")


def test_missing_local_file_names_key(w, monkeypatch):
    monkeypatch.chdir(ROOT)
    check_local_files(w)  # the committed stand-in is complete
    moved = dataclasses.replace(w.evaluate, retain=dataclasses.replace(w.evaluate.retain,
                                                                      fewshot_questions="data/no_dev.jsonl"))
    with pytest.raises(FileNotFoundError, match="wmdp.evaluate.retain.fewshot_questions: data/no_dev.jsonl"):
        check_local_files(dataclasses.replace(w, evaluate=moved))


def test_notebook_argument_checks(w):
    with pytest.raises(ValueError, match="wmdp.unlearn.runs lists"):
        check_run(w, "GradDiff")
    with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\], got 1.5"):
        check_alpha(w, "MaxEnt", 1.5)
    with pytest.raises(ValueError, match="wmdp.undo.teachers lists"):
        check_alpha(w, "SAM", 0.25)


# ----------------------------------------------------------------------------------------------
# Stand-in data and the data stage


def test_stand_in_files_come_from_the_generator(tmp_path, monkeypatch):
    """The committed stand-in is exactly what `python -m undo_lib.wmdp_stand_in` writes."""
    monkeypatch.chdir(tmp_path)  # the harness task files name the folder as it was given
    write_stand_in("data/wmdp-stand-in")
    committed = sorted(p.relative_to(STAND_IN) for p in STAND_IN.rglob("*") if p.is_file())
    written = sorted(p.relative_to(tmp_path / "data" / "wmdp-stand-in")
                     for p in (tmp_path / "data" / "wmdp-stand-in").rglob("*") if p.is_file())
    assert committed == written
    assert all(filecmp.cmp(STAND_IN / p, tmp_path / "data" / "wmdp-stand-in" / p, shallow=False) for p in committed)


def test_stand_in_questions_have_one_true_answer():
    for name in ("wmdp_bio.jsonl", "mmlu.jsonl", "mmlu_dev.jsonl"):
        for q in read_jsonl(STAND_IN / name):
            assert len(q["choices"]) == 4
            assert len(set(q["choices"])) == 4
            assert 0 <= q["answer"] < 4


def test_stand_in_answer_letters_balanced():
    """A model that always picks one letter scores chance, 0.25, on the forget questions."""
    answers = [q["answer"] for q in read_jsonl(STAND_IN / "wmdp_bio.jsonl")]
    assert [answers.count(letter) for letter in range(4)] == [len(answers) // 4] * 4


def test_data_files_mix_the_named_corpora(w):
    files, corpora = build_wmdp_files(w, seed=0)
    assert sorted(files) == sorted([*DATA_FILES, PRETRAIN_FILE])
    assert {r["source"] for r in files["relearn.jsonl"]} == {"forget", "retain"}
    assert {r["source"] for r in files["unlearn_retain.jsonl"]} == {"retain", "wikitext"}
    assert {r["source"] for r in files["distill.jsonl"]} == {"web", "wikitext"}
    assert all(r["source"] == "forget" for r in files["forget.jsonl"])
    assert [c["name"] for c in corpora] == ["forget", "retain", "wikitext", "web"]
    # all_exhausted: every document of each mixed corpus appears at least once
    forget_texts = {r["text"] for r in files["forget.jsonl"]}
    assert forget_texts <= {r["text"] for r in files["relearn.jsonl"] if r["source"] == "forget"}


def test_validation_documents_held_out(w):
    """The CE documents are in no training file."""
    files, _ = build_wmdp_files(w, seed=0)
    held_out = {r["text"] for name in ("forget_validation.jsonl", "retain_validation.jsonl") for r in files[name]}
    assert len(files["forget_validation.jsonl"]) == w.data.validation_documents
    assert len(files["retain_validation.jsonl"]) == w.data.validation_documents
    for name, records in files.items():
        if "validation" not in name:
            assert not held_out & {r["text"] for r in records}, f"{name} contains held-out documents"


def test_pretrained_source_writes_no_pretrain_file(w):
    local = dataclasses.replace(w, model=dataclasses.replace(w.model, source="/models/gemma"))
    files, _ = build_wmdp_files(local, seed=0)
    assert PRETRAIN_FILE not in files


def test_missing_corpus_file_is_named(w, tmp_path):
    missing = dataclasses.replace(w.data, forget=dataclasses.replace(w.data.forget, path=str(tmp_path / "no.jsonl")))
    with pytest.raises(FileNotFoundError, match="no.jsonl"):
        build_wmdp_files(dataclasses.replace(w, data=missing), seed=0)


# ----------------------------------------------------------------------------------------------
# Packing


def test_pack_texts_hand_computed(tokenizer):
    records = [{"text": "1+1=2"}, {"text": "22+22=44 and more"}, {"text": "3"}]
    ids = [tokenizer.backend_tokenizer.encode(r["text"], add_special_tokens=False).ids for r in records]
    seq_len = len(ids[0]) + 2  # bos, the first document, its eos
    data = pack_texts(tokenizer, records, seq_len)
    # A document cut at the end of a sequence loses its rest, and the unfinished last sequence is dropped
    assert data.input_ids.tolist() == [[BOS_ID] + ids[0] + [EOS_ID], [BOS_ID] + ids[1][: seq_len - 1]]
    assert data.loss_mask.tolist() == [[False] + [True] * (seq_len - 1)] * 2


# ----------------------------------------------------------------------------------------------
# Base model


@pytest.fixture(scope="module")
def stand_in_data(tmp_path_factory, w):
    """The data stage's files for the smoke params."""
    from undo_lib.io import write_jsonl

    data_dir = tmp_path_factory.mktemp("wmdp_data")
    files, _ = build_wmdp_files(w, seed=0)
    for name, records in files.items():
        write_jsonl(data_dir / name, records)
    return data_dir


@pytest.fixture(scope="module")
def stand_in_dir(tmp_path_factory, w, stand_in_data):
    """The base stage's stand-in (random, before its pretraining), written from the smoke data files."""
    base = tmp_path_factory.mktemp("wmdp_base") / "base"
    record = write_base(w, stand_in_data, base, seed=0)
    assert record["source"] == "config"
    assert record["vocab_size"] == w.model.stand_in_vocab_size
    return base


def test_stand_in_loads_like_a_pretrained_folder(w, stand_in_dir):
    model, tokenizer = load_wmdp_model(w, stand_in_dir, torch.device("cpu"))
    assert model.config.num_hidden_layers == w.model.stand_in.num_hidden_layers
    assert len(tokenizer) == w.model.stand_in_vocab_size
    assert model_source(w, stand_in_dir) == PretrainedSource(str(stand_in_dir), None, "float32", "eager")


def test_pretrained_source_is_recorded_not_copied(w, stand_in_dir, tmp_path):
    """A non-config source writes only source.json; later stages load from the source itself."""
    local = dataclasses.replace(w, model=dataclasses.replace(w.model, source=str(stand_in_dir)))
    base = tmp_path / "base"
    record = write_base(local, "unused", base, seed=0)
    assert sorted(p.name for p in base.iterdir()) == [SOURCE_RECORD]
    assert record["source"] == str(stand_in_dir)
    model, _ = load_wmdp_model(local, base, torch.device("cpu"))
    reference, _ = load_wmdp_model(w, stand_in_dir, torch.device("cpu"))
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), reference.state_dict().values()))


def test_replaced_local_weights_detected(w, stand_in_dir, tmp_path):
    """Later stages reject a local source whose weights changed after the base stage recorded them."""
    import shutil

    from undo_lib.io import IntegrityError

    source = tmp_path / "model"
    shutil.copytree(stand_in_dir, source)
    local = dataclasses.replace(w, model=dataclasses.replace(w.model, source=str(source)))
    write_base(local, "unused", tmp_path / "base", seed=0)
    model_source(local, tmp_path / "base")  # unchanged: accepted
    with (source / "model.safetensors").open("ab") as f:
        f.write(b"\0")
    with pytest.raises(IntegrityError, match="dvc repro -f wmdp-base"):
        model_source(local, tmp_path / "base")


def test_hub_failure_is_a_clear_error(w, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    base = tmp_path / "base"
    write_json(base / SOURCE_RECORD, {"source": "undo-tests/no-such-model", "revision": None})
    with pytest.raises(PretrainedSourceError, match="undo-tests/no-such-model"):
        load_wmdp_model(w, base, torch.device("cpu"))


# ----------------------------------------------------------------------------------------------
# Evaluation


@pytest.fixture(scope="module")
def stand_in_model(w, stand_in_dir):
    return load_wmdp_model(w, stand_in_dir, torch.device("cpu"))


def test_evaluator_counts_and_keys(w, stand_in_model):
    model, tokenizer = stand_in_model
    metrics = MultipleChoiceEvaluator(w.evaluate, tokenizer)(model)
    assert metrics["forget_n"] == w.evaluate.forget.limit
    assert metrics["retain_n"] == w.evaluate.retain.limit
    assert 0 <= metrics["forget"] <= 1
    assert 0 <= metrics["retain"] <= 1
    assert set(MultipleChoiceEvaluator(w.evaluate, tokenizer, forget_only=True)(model)) == {"forget", "forget_n"}


def test_evaluator_ce_hand_computed(w, stand_in_model, stand_in_data):
    """forget_ce is the token-weighted next-token CE over the held-out forget documents."""
    model, tokenizer = stand_in_model
    validation = validation_data(tokenizer, stand_in_data, w.data.unlearn_seq_len)
    metrics = MultipleChoiceEvaluator(w.evaluate, tokenizer, forget_only=True, validation=validation)(model)
    data = validation["forget"]
    with torch.no_grad():
        logprobs = model(input_ids=data.input_ids).logits.log_softmax(-1)
    targets = logprobs[:, :-1].gather(-1, data.input_ids[:, 1:, None])[..., 0]
    mask = data.loss_mask[:, 1:]
    assert metrics["forget_ce"] == pytest.approx(float(-(targets * mask).sum() / mask.sum()), rel=1e-5)
    assert "retain_ce" not in metrics


def test_final_metrics_last_evaluated_row():
    history = [{"step": 0, "forget": 0.5, "forget_ce": 2.0, "retain": 0.4, "retain_ce": 1.0},
               {"step": 1, "loss": 3.0},
               {"step": 2, "forget": 0.25, "forget_ce": 3.0, "retain": 0.5, "retain_ce": 1.5, "forget_n": 8},
               {"step": 3, "loss": 2.0}]
    assert final_metrics(history) == {"forget": 0.25, "retain": 0.5, "forget_ce": 3.0, "retain_ce": 1.5}


def test_evaluator_matches_hand_scoring(w, stand_in_model):
    """Forget accuracy equals an argmax over the letters' log-probabilities computed here by hand."""
    from undo_lib.multiple_choice import build_prompt

    model, tokenizer = stand_in_model
    questions = read_jsonl(STAND_IN / "wmdp_bio.jsonl")[: w.evaluate.forget.limit]
    correct = 0
    for q in questions:
        context = tokenizer.backend_tokenizer.encode(build_prompt(q), add_special_tokens=False).ids
        scores = []
        for letter in "ABCD":
            target = tokenizer.backend_tokenizer.encode(f" {letter}", add_special_tokens=False).ids
            ids = torch.tensor([context + target])
            with torch.no_grad():
                logprobs = model(input_ids=ids).logits.log_softmax(-1)[0]
            scores.append(sum(logprobs[len(context) - 1 + i, t].item() for i, t in enumerate(target)))
        correct += scores.index(max(scores)) == q["answer"]
    metrics = MultipleChoiceEvaluator(w.evaluate, tokenizer, forget_only=True)(model)
    assert metrics["forget"] == pytest.approx(correct / len(questions))


def test_harness_backend_matches_builtin(w, stand_in_model, monkeypatch):
    """lm-evaluation-harness on the in-memory model gives the built-in scorer's accuracy on the stand-in."""
    try:
        import lm_eval  # noqa: F401
    except ImportError as err:
        pytest.skip(f"lm_eval[hf] is not installed ({err}); pip install 'lm_eval[hf]==0.4.13' to run this test")
    monkeypatch.chdir(ROOT)  # the local task YAMLs name their jsonl files relative to the repository root
    model, tokenizer = stand_in_model
    builtin = MultipleChoiceEvaluator(w.evaluate, tokenizer)(model)
    harness = MultipleChoiceEvaluator(dataclasses.replace(w.evaluate, backend="harness"), tokenizer)(model)
    assert harness["forget"] == pytest.approx(builtin["forget"])
    assert harness["retain"] == pytest.approx(builtin["retain"])
    assert harness["forget_n"] == builtin["forget_n"]
    assert harness["forget_version"] == 1.0


# ----------------------------------------------------------------------------------------------
# Unlearning runs


def test_unlearn_setup_maps_runs(w):
    method, loss, train = unlearn_setup(w, "SAM")
    assert (method, train.sam_rho, train.lr) == ("MaxEnt", w.unlearn.SAM.rho, w.unlearn.SAM.lr)
    assert loss.alpha == w.unlearn.MaxEnt.alpha
    assert loss.repnoise_alpha == 0
    method, loss, train = unlearn_setup(w, "RepNoise")
    assert (method, loss.repnoise_alpha, loss.repnoise_beta, train.sam_rho) == \
        ("MaxEnt", w.unlearn.RepNoise.alpha, w.unlearn.RepNoise.beta, 0.0)
    method, loss, train = unlearn_setup(w, "RMU")
    assert (method, loss.layers, loss.hidden_layer, train.lr) == \
        ("RMU", w.unlearn.RMU.layers, w.unlearn.RMU.hidden_layer, w.unlearn.RMU.lr)


# ----------------------------------------------------------------------------------------------
# Report


def _runs(histories: list[dict]) -> dict:
    models = pd.DataFrame([
        {"model": "base", "kind": "base", "seed": s, "retain": 0.5, "forget": 0.6} for s in (0, 1)
    ] + [{"model": "MaxEnt", "kind": "unlearned", "seed": s, "retain": 0.4 + 0.1 * s, "forget": 0.3} for s in (0, 1)])
    return {"models": models, "history": pd.DataFrame(histories)}


def test_worst_case_per_seed_then_mean():
    rows = []
    for seed, (low, high) in enumerate([(0.2, 0.4), (0.5, 0.3)]):
        rows += [{"model": "MaxEnt", "seed": seed, "lr": 1e-3, "step": 10, "forget": low},
                 {"model": "MaxEnt", "seed": seed, "lr": 1e-4, "step": 10, "forget": high},
                 {"model": "base", "seed": seed, "lr": 1e-3, "step": 10, "forget": 0.6},
                 {"model": "base", "seed": seed, "lr": 1e-4, "step": 10, "forget": 0.6}]
    summary = summarize_wmdp(_runs(rows))
    maxent = next(m for m in summary["models"] if m["model"] == "MaxEnt")
    assert maxent["relearned"] == {"forget": {10: pytest.approx((0.4 + 0.5) / 2)}}  # max over LRs per seed, then mean
    assert maxent["retain"] == pytest.approx(0.45)
    table = markdown_table(summary)
    assert "| MaxEnt | 0.450 | 0.300 | 0.450 |" in table


def test_worst_case_ce_is_the_minimum():
    """For the forget CE the attacker's best LR is the one with the lowest CE."""
    rows = [{"model": "MaxEnt", "seed": 0, "lr": lr, "step": 10, "forget": 0.3, "forget_ce": ce}
            for lr, ce in ((1e-3, 2.5), (1e-4, 1.5))]
    runs = _runs(rows)
    runs["models"] = runs["models"].assign(retain_ce=1.0, forget_ce=3.0)
    runs["models"] = runs["models"][runs["models"]["model"] == "MaxEnt"]
    summary = summarize_wmdp(runs)
    assert summary["models"][0]["relearned"]["forget_ce"] == {10: pytest.approx(1.5)}
    assert "| MaxEnt | 0.450 | 0.300 | 1.000 | 3.000 | 0.300 | 1.500 |" in markdown_table(summary)


def test_smoke_params_unchanged_by_tests(wmdp_dict, w):
    """Fixtures hand out copies: editing one params dict leaves the parsed smoke params as they were."""
    edited = copy.deepcopy(wmdp_dict)
    set_key(edited, "wmdp.undo.beta", 0.5)
    assert params_from_dict(wmdp_dict).wmdp == w
