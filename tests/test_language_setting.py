"""The language setting: CE metric, stop rule, data stage files, tokenizer and params checks."""

import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from transformers import AutoTokenizer

from undo_lib.config import LanguageDataParams, LocalSourceParams, ParamsError, TokenizerParams, params_from_dict
from undo_lib.distill import RelativeLossStopRule
from undo_lib.evaluate import LanguageEvaluator, document_batch, text_ce
from undo_lib.io import read_json, read_jsonl
from undo_lib.language import Corpus
from undo_lib.prepare_language import build_language_files, check_validation_split, write_language_data
from undo_lib.settings import check_relearn_domain, evaluation_files, make_stop_rule, metric_spec
from undo_lib.tokenizer import BOS_ID, PAD_ID

SMOKE_FIXTURES = Path(__file__).parent / "fixtures" / "language" / "smoke"


class DigitTokenizer:
    """Each character is its own token id ("34" -> [3, 4]); enough for document_batch."""

    def __call__(self, texts, add_special_tokens=False):
        assert not add_special_tokens
        return {"input_ids": [[int(c) for c in t] for t in texts]}


class BigramModel(torch.nn.Module):
    """Next-token probabilities that depend on the current token only, given as a table."""

    def __init__(self, probs: torch.Tensor):
        super().__init__()
        self.log_probs = torch.nn.Parameter(probs.log())

    def forward(self, input_ids):
        return SimpleNamespace(logits=self.log_probs[input_ids])


def _bigram_probs() -> torch.Tensor:
    probs = torch.full((5, 5), 0.25)
    probs[:, 0] = 1e-12  # pad is (almost) never predicted
    probs[BOS_ID] = torch.tensor([1e-12, 0.1, 0.1, 0.5, 0.3])  # p(3 | bos) = 0.5
    probs[3] = torch.tensor([1e-12, 0.25, 0.25, 0.25, 0.25])  # p(4 | 3) = 0.25
    probs[4] = torch.tensor([1e-12, 0.05, 0.05, 0.8, 0.1])  # p(3 | 4) = 0.8
    return probs / probs.sum(dim=1, keepdim=True)


def test_document_batch_pads_right():
    batch = document_batch(DigitTokenizer(), ["34", "343"], seq_len=8)

    assert batch.input_ids.tolist() == [[BOS_ID, 3, 4, PAD_ID], [BOS_ID, 3, 4, 3]]
    assert batch.loss_mask.tolist() == [[True, True, True, False], [True, True, True, True]]


def test_document_batch_cuts_to_seq_len():
    batch = document_batch(DigitTokenizer(), ["34343"], seq_len=3)

    assert batch.input_ids.tolist() == [[BOS_ID, 3, 4]]


def test_text_ce_token_weighted_by_hand():
    model = BigramModel(_bigram_probs())
    batch = document_batch(DigitTokenizer(), ["34", "343"], seq_len=8)
    # Targets: document 1 predicts 3 after bos and 4 after 3; document 2 adds 3 after 4.
    by_hand = (2 * -math.log(0.5) + 2 * -math.log(0.25) + -math.log(0.8)) / 5
    per_document_mean = (-(math.log(0.5) + math.log(0.25)) / 2
                         - (math.log(0.5) + math.log(0.25) + math.log(0.8)) / 3) / 2

    value = text_ce(model, batch, batch_size=1)

    assert value == pytest.approx(by_hand, rel=1e-5)
    assert value != pytest.approx(per_document_mean, rel=1e-3)  # not a mean of per-document means


def test_language_evaluator_metric_names():
    model = BigramModel(_bigram_probs())
    evaluator = LanguageEvaluator(DigitTokenizer(), ["34"], ["343"], seq_len=8, batch_size=4)

    metrics = evaluator(model)

    assert metrics["retain"] == metrics["english_ce"]
    assert metrics["forget"] == metrics["korean_ce"]
    assert metrics["english_ce"] == pytest.approx(-(math.log(0.5) + math.log(0.25)) / 2, rel=1e-5)


def test_relative_stop_rule_threshold():
    rule = RelativeLossStopRule(teacher_retain=4.0, margin=0.05)

    assert rule.threshold == pytest.approx(4.2)
    assert not rule({"retain": 4.25})
    assert rule({"retain": 4.19})


def test_relative_stop_rule_consecutive():
    rule = RelativeLossStopRule(teacher_retain=4.0, margin=0.05, consecutive=2)

    assert not rule({"retain": 4.1})
    assert not rule({"retain": 4.3})
    assert not rule({"retain": 4.1})
    assert rule({"retain": 4.0})


def test_make_stop_rule_per_setting():
    section = SimpleNamespace(stop_margin=0.05, stop_consecutive=1)

    language = make_stop_rule("language", {"retain": 4.0}, section)
    arithmetic = make_stop_rule("arithmetic", {"retain": 0.9}, section)

    assert isinstance(language, RelativeLossStopRule)
    assert language.holds({"retain": 4.1})
    assert arithmetic.holds({"retain": 0.86})
    assert not arithmetic.holds({"retain": 0.84})


def test_metric_directions():
    assert metric_spec("arithmetic").higher_is_better
    assert not metric_spec("language").higher_is_better
    assert evaluation_files("language") == ["english_validation.jsonl", "korean_validation.jsonl"]


def test_relearn_domain_korean_only():
    check_relearn_domain("language", [{"text": "가", "source": "korean"}])

    with pytest.raises(ValueError, match="Korean text only"):
        check_relearn_domain("language", [{"text": "a", "source": "english"}])


# ----------------------------------------------------------------------------------------------
# Data stage

def _corpus() -> Corpus:
    english = [f"English document number {i} about rivers and libraries." for i in range(40)]
    korean = [f"한국어 문서 {i}번은 강과 도서관에 관한 글입니다." for i in range(40)]
    return Corpus(english=english, korean=korean, inputs=[])


def _data_params(**overrides) -> LanguageDataParams:
    fields = dict(source="local", validation_fraction=0.1, seq_len=64, pretrain_documents=2000,
                  distill_documents=500, unlearn_documents=100, relearn_documents=100,
                  local=LocalSourceParams(english=(str(SMOKE_FIXTURES / "english.txt"),),
                                          korean=(str(SMOKE_FIXTURES / "korean.txt"),)))
    fields.update(overrides)
    return LanguageDataParams(**fields)


def test_language_files_split_disjoint():
    files = build_language_files(_data_params(), _corpus(), seed=0)

    validation = {r["text"] for name in ("english_validation", "korean_validation") for r in files[name]}
    training = {r["text"] for name in ("pretrain_full", "pretrain_oracle", "distill", "forget", "retain",
                                       "relearn", "english_train", "korean_train") for r in files[name]}
    assert validation
    assert not validation & training
    check_validation_split(files)


def test_language_files_mixture_shares():
    files = build_language_files(_data_params(korean_fraction=0.5), _corpus(), seed=0)

    full_share = sum(r["source"] == "korean" for r in files["pretrain_full"]) / len(files["pretrain_full"])
    assert 0.45 < full_share < 0.55
    assert all(r["source"] == "english" for r in files["pretrain_oracle"])
    assert all(r["source"] == "english" for r in files["retain"])
    assert all(r["source"] == "korean" for r in files["forget"])
    assert all(r["source"] == "korean" for r in files["relearn"])
    assert any(r["source"] == "korean" for r in files["distill"])


def test_validation_overlap_rejected():
    files = build_language_files(_data_params(), _corpus(), seed=0)
    files["retain"].append(files["english_validation"][0])

    with pytest.raises(ValueError, match="validation documents also occur"):
        check_validation_split(files)


def test_write_language_data_local(tmp_path):
    out = tmp_path / "data"
    manifest = write_language_data(_data_params(), TokenizerParams(vocab_size=320, training_documents=500),
                                   seed=0, out_dir=out)

    assert manifest["source"] == "local"
    assert {i["language"] for i in manifest["inputs"]} == {"english", "korean"}
    assert all(len(i["sha256"]) == 64 for i in manifest["inputs"])
    assert read_json(out / "manifest.json") == manifest
    assert len(read_jsonl(out / "korean_validation.jsonl")) == manifest["documents"]["korean_validation"]
    assert manifest["tokens"]["korean_train"] > 0


def test_tokenizer_round_trip_both_languages(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "data"
    write_language_data(_data_params(), TokenizerParams(vocab_size=320, training_documents=500), seed=0, out_dir=out)
    tokenizer = AutoTokenizer.from_pretrained(str(out / "tokenizer"), local_files_only=True)

    for text in ("The river starts high in the mountains.", "강은 높은 산에서 시작하여 바다에 닿습니다."):
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert tokenizer.decode(ids) == text


# ----------------------------------------------------------------------------------------------
# Params

def _with_language(smoke_params_dict, **data):
    params = dict(smoke_params_dict)
    params["data"] = {**params["data"], "language": {**params["data"]["language"], **data}}
    return params


def test_unknown_source_rejected(smoke_params_dict):
    with pytest.raises(ParamsError, match="data.language.source"):
        params_from_dict(_with_language(smoke_params_dict, source="offlne"))


def test_unquoted_version_rejected(smoke_params_dict):
    offline = {"packages": {"debian-faq": 11.1}}

    with pytest.raises(ParamsError, match="Quote it"):
        params_from_dict(_with_language(smoke_params_dict, source="offline", offline=offline))


def test_local_source_needs_files(smoke_params_dict):
    with pytest.raises(ParamsError, match="data.language.local.korean"):
        params_from_dict(_with_language(smoke_params_dict, local={"english": ["a.txt"], "korean": []}))


def test_local_source_file_suffix(smoke_params_dict):
    with pytest.raises(ParamsError, match="a .jsonl or .txt file"):
        params_from_dict(_with_language(smoke_params_dict, local={"english": ["a.csv"], "korean": ["b.txt"]}))


def test_korean_fraction_range(smoke_params_dict):
    with pytest.raises(ParamsError, match="data.language.korean_fraction"):
        params_from_dict(_with_language(smoke_params_dict, korean_fraction=1.0))
