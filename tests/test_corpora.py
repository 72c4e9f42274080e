"""Tests for the WMDP forget and retain corpora and their mixtures (undo_lib.corpora)."""

import hashlib
import json
import math
import socket

import pytest

from undo_lib import corpora
from undo_lib.corpora import CorpusSourceError, TextSource
from undo_lib.io import file_sha256

DOCUMENTS = [f"Document number {i} is about a topic that needs at least forty characters." for i in range(20)]


def write_jsonl(path, lines) -> None:
    """Write ``lines`` to ``path``: dicts as JSON, strings as they are, one per line."""
    rows = [json.dumps(line) if isinstance(line, dict) else line for line in lines]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")


@pytest.fixture
def corpus_file(tmp_path):
    path = tmp_path / "forget.jsonl"
    write_jsonl(path, [{"text": text, "id": i} for i, text in enumerate(DOCUMENTS)])
    return path


# --- TextSource ---------------------------------------------------------------------------------

@pytest.mark.parametrize("arguments, words", [
    ({"kind": "csv", "path": "a.csv"}, "invalid source kind 'csv'"),
    ({"kind": "jsonl", "path": ""}, "invalid path ''"),
    ({"kind": "jsonl", "path": "a.jsonl", "text_field": ""}, "invalid text_field ''"),
    ({"kind": "jsonl", "path": "a.jsonl", "config": "cyber-forget-corpus"}, "apply only to hub sources"),
    ({"kind": "jsonl", "path": "a.jsonl", "revision": "abc"}, "apply only to hub sources"),
    ({"kind": "jsonl", "path": "a.jsonl", "split": "test"}, "apply only to hub sources"),
])
def test_source_invalid(arguments, words):
    with pytest.raises(ValueError, match=words):
        TextSource(**arguments)


def test_source_describe_jsonl(tmp_path):
    assert TextSource("jsonl", tmp_path / "a.jsonl").describe() == f"jsonl file {tmp_path / 'a.jsonl'}"


def test_source_describe_hub():
    source = corpora.WMDP_HUB_SOURCES["cyber-forget"]
    assert source.describe() == "hub dataset cais/wmdp-corpora (config cyber-forget-corpus, split train, default branch)"


def test_paper_probabilities_valid():
    for probabilities in (corpora.RELEARN_PROBABILITIES, corpora.UNLEARN_RETAIN_PROBABILITIES,
                          corpora.DISTILL_PROBABILITIES):
        corpora.check_probabilities(probabilities)


# --- jsonl files --------------------------------------------------------------------------------

def test_jsonl_texts_in_order(corpus_file):
    assert list(corpora.read_jsonl_texts(corpus_file)) == DOCUMENTS


def test_jsonl_skips_blank_lines(tmp_path):
    path = tmp_path / "a.jsonl"
    write_jsonl(path, [{"text": "first"}, "", "   ", {"text": "second"}])
    assert list(corpora.read_jsonl_texts(path)) == ["first", "second"]


def test_jsonl_custom_field(tmp_path):
    path = tmp_path / "a.jsonl"
    write_jsonl(path, [{"abstract": "one", "text": "x"}, {"abstract": "two"}])
    assert list(corpora.read_jsonl_texts(path, text_field="abstract")) == ["one", "two"]


def test_jsonl_missing_file(tmp_path):
    path = tmp_path / "absent.jsonl"
    with pytest.raises(FileNotFoundError) as caught:
        corpora.read_jsonl_texts(path)  # raised at the call, before iteration
    assert f"corpus file {path} not found" in str(caught.value)


@pytest.mark.parametrize("content", ["", "\n\n  \n"])
def test_jsonl_empty_file(tmp_path, content):
    path = tmp_path / "empty.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match=f"corpus file {path} is empty"):
        list(corpora.read_jsonl_texts(path))


@pytest.mark.parametrize("bad_line, words", [
    ('{"text": "unterminated', "invalid JSON"),
    ('["a", "list"]', "expected a JSON object, got list"),
    ('{"body": "no text field"}', "missing field 'text' (fields: ['body'])"),
    ('{"text": 42}', "field 'text' is int, expected a string"),
])
def test_jsonl_bad_line(tmp_path, bad_line, words):
    path = tmp_path / "bad.jsonl"
    write_jsonl(path, [{"text": "fine"}, "", bad_line])
    with pytest.raises(ValueError) as caught:
        list(corpora.read_jsonl_texts(path))
    assert f"{path}, line 3:" in str(caught.value)
    assert words in str(caught.value)


def test_jsonl_invalid_utf8(tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(b'{"text": "fine"}\n{"text": "caf\xe9"}\n')
    with pytest.raises(ValueError, match=r"line 2: not valid UTF-8"):
        list(corpora.read_jsonl_texts(path))


# --- select_documents ---------------------------------------------------------------------------

def test_select_budget_cuts_crossing_document():
    texts = ["a" * 10, "b" * 20, "c" * 30]
    assert corpora.select_documents(texts, max_chars=35, min_chars=1) == ["a" * 10, "b" * 20, "c" * 5]


def test_select_drops_short_cut():
    texts = ["a" * 10, "b" * 20, "c" * 30]
    # 33 - 30 leaves 3 characters for the third document, fewer than min_chars.
    assert corpora.select_documents(texts, max_chars=33, min_chars=5) == ["a" * 10, "b" * 20]


def test_select_min_chars():
    assert corpora.select_documents(["hi", "hello world", "hey"], max_chars=None, min_chars=5) == ["hello world"]


def test_select_strips_whitespace():
    assert corpora.select_documents(["  = Title =  \n", " \n "], max_chars=None, min_chars=1) == ["= Title ="]


def test_select_stops_reading_at_budget():
    consumed = []

    def texts():
        for i in range(100):
            consumed.append(i)
            yield "x" * 10

    corpora.select_documents(texts(), max_chars=30, min_chars=1)
    assert consumed == [0, 1, 2]


@pytest.mark.parametrize("max_chars, min_chars, words", [
    (100, 0, "invalid min_chars 0"),
    (10, 20, "invalid max_chars 10"),
    (100, 2.5, "invalid min_chars 2.5"),
])
def test_select_invalid_budget(max_chars, min_chars, words):
    with pytest.raises(ValueError, match=words):
        corpora.select_documents(["text"], max_chars=max_chars, min_chars=min_chars)


# --- load_corpus (jsonl) ------------------------------------------------------------------------

def test_load_corpus_shuffles_selection(corpus_file):
    corpus = corpora.load_corpus("forget", TextSource("jsonl", corpus_file), max_chars=None, min_chars=1, seed=0)
    assert sorted(corpus.documents) == sorted(DOCUMENTS)
    assert corpus.documents != DOCUMENTS


def test_load_corpus_deterministic(corpus_file):
    source = TextSource("jsonl", corpus_file)
    first = corpora.load_corpus("forget", source, max_chars=None, min_chars=1, seed=3)
    second = corpora.load_corpus("forget", source, max_chars=None, min_chars=1, seed=3)
    assert first.documents == second.documents


def test_load_corpus_seed_changes_order(corpus_file):
    source = TextSource("jsonl", corpus_file)
    first = corpora.load_corpus("forget", source, max_chars=None, min_chars=1, seed=3)
    second = corpora.load_corpus("forget", source, max_chars=None, min_chars=1, seed=4)
    assert first.documents != second.documents


def test_load_corpus_without_seed_keeps_order(corpus_file):
    corpus = corpora.load_corpus("forget", TextSource("jsonl", corpus_file), max_chars=None, min_chars=1, seed=None)
    assert corpus.documents == DOCUMENTS


def test_load_corpus_budget_takes_first_documents(corpus_file):
    budget = len(DOCUMENTS[0]) * 3  # every document has the same length
    corpus = corpora.load_corpus("forget", TextSource("jsonl", corpus_file), max_chars=budget, min_chars=1, seed=0)
    assert sorted(corpus.documents) == sorted(DOCUMENTS[:3])


def test_load_corpus_file_sha256(corpus_file):
    corpus = corpora.load_corpus("forget", TextSource("jsonl", corpus_file), max_chars=None, min_chars=1, seed=0)
    assert corpus.sha256 == file_sha256(corpus_file)


def test_load_corpus_record(corpus_file):
    corpus = corpora.load_corpus("forget", TextSource("jsonl", corpus_file), max_chars=None, min_chars=1, seed=0)
    record = corpus.record()
    assert record["documents"] == len(DOCUMENTS)
    assert record["characters"] == sum(map(len, DOCUMENTS))
    assert record["path"] == str(corpus_file)


def test_load_corpus_nothing_long_enough(corpus_file):
    with pytest.raises(ValueError) as caught:
        corpora.load_corpus("forget", TextSource("jsonl", corpus_file), max_chars=None, min_chars=1000, seed=0)
    assert "corpus 'forget'" in str(caught.value)
    assert "no document of at least 1000 characters" in str(caught.value)


# --- hub datasets (datasets.load_dataset replaced) ----------------------------------------------

class FakeLoadDataset:
    """Stands in for datasets.load_dataset: records calls and streams ``records`` or raises ``error``.

    With ``fail_after``, the stream raises ``error`` after that many records instead of at the call.
    """

    def __init__(self, records=(), error=None, fail_after=None):
        self.records = list(records)
        self.error = error
        self.fail_after = fail_after
        self.calls = []
        self.streamed = 0

    def __call__(self, path, **kwargs):
        self.calls.append({"path": path, **kwargs})
        if self.error is not None and self.fail_after is None:
            raise self.error
        return self._stream()

    def _stream(self):
        for record in self.records:
            if self.fail_after is not None and self.streamed == self.fail_after:
                raise self.error
            self.streamed += 1
            yield record


HUB_RECORDS = [{"text": text} for text in DOCUMENTS]
CYBER_FORGET = corpora.WMDP_HUB_SOURCES["cyber-forget"]


@pytest.fixture
def datasets_module():
    return pytest.importorskip("datasets", reason="hub sources need the datasets package")


@pytest.fixture
def clear_offline(monkeypatch):
    for variable in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(variable, raising=False)


def _fake(monkeypatch, datasets_module, **kwargs) -> FakeLoadDataset:
    fake = FakeLoadDataset(**kwargs)
    monkeypatch.setattr(datasets_module, "load_dataset", fake)
    return fake


def test_hub_call_arguments(monkeypatch, datasets_module):
    fake = _fake(monkeypatch, datasets_module, records=HUB_RECORDS)
    source = TextSource("hub", "cais/wmdp-corpora", config="cyber-forget-corpus", revision="abc123")
    corpora.load_corpus("forget", source, max_chars=None, min_chars=1, seed=0)
    assert fake.calls == [{"path": "cais/wmdp-corpora", "name": "cyber-forget-corpus", "split": "train",
                           "revision": "abc123", "streaming": True}]


def test_hub_documents(monkeypatch, datasets_module):
    _fake(monkeypatch, datasets_module, records=HUB_RECORDS)
    corpus = corpora.load_corpus("forget", CYBER_FORGET, max_chars=None, min_chars=1, seed=None)
    assert corpus.documents == DOCUMENTS


def test_hub_budget_stops_stream(monkeypatch, datasets_module):
    fake = _fake(monkeypatch, datasets_module, records=HUB_RECORDS)
    corpora.load_corpus("forget", CYBER_FORGET, max_chars=len(DOCUMENTS[0]) * 2, min_chars=1, seed=0)
    assert fake.streamed == 2


def test_hub_sha256_of_texts_read(monkeypatch, datasets_module):
    _fake(monkeypatch, datasets_module, records=HUB_RECORDS)
    corpus = corpora.load_corpus("forget", CYBER_FORGET, max_chars=len(DOCUMENTS[0]) * 2, min_chars=1, seed=0)
    expected = hashlib.sha256(f"{DOCUMENTS[0]}\0{DOCUMENTS[1]}\0".encode("utf-8")).hexdigest()
    assert corpus.sha256 == expected


def test_hub_custom_field(monkeypatch, datasets_module):
    _fake(monkeypatch, datasets_module, records=[{"response": text} for text in DOCUMENTS[:2]])
    source = TextSource("hub", "magpie/example", text_field="response")
    corpus = corpora.load_corpus("distill", source, max_chars=None, min_chars=1, seed=None)
    assert corpus.documents == DOCUMENTS[:2]


def test_hub_missing_field(monkeypatch, datasets_module):
    _fake(monkeypatch, datasets_module, records=[{"text": "fine text"}, {"content": "other"}])
    with pytest.raises(ValueError) as caught:
        corpora.load_corpus("forget", CYBER_FORGET, max_chars=None, min_chars=1, seed=0)
    assert "record 1 of the hub dataset cais/wmdp-corpora" in str(caught.value)
    assert "no string field 'text' (fields: ['content'])" in str(caught.value)


def test_hub_connection_error(monkeypatch, datasets_module, clear_offline):
    _fake(monkeypatch, datasets_module, error=ConnectionError("connection refused"))
    with pytest.raises(CorpusSourceError) as caught:
        corpora.load_corpus("forget", CYBER_FORGET, max_chars=None, min_chars=1, seed=0)
    message = str(caught.value)
    assert "cannot read the hub dataset cais/wmdp-corpora (config cyber-forget-corpus" in message
    assert "ConnectionError: connection refused" in message
    assert "Check the dataset id" in message
    assert "use a jsonl source" in message
    assert "OFFLINE" not in message


def test_hub_offline_variables_named(monkeypatch, datasets_module, clear_offline):
    _fake(monkeypatch, datasets_module, error=ConnectionError("offline mode is enabled"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "true")
    with pytest.raises(CorpusSourceError) as caught:
        corpora.load_corpus("retain", corpora.GENERAL_HUB_SOURCES["wikitext"], max_chars=100, min_chars=1, seed=0)
    message = str(caught.value)
    assert "HF_HUB_OFFLINE=1 and HF_DATASETS_OFFLINE=true are set" in message
    assert "Unset them to download" in message


def test_hub_gated_dataset(monkeypatch, datasets_module, clear_offline):
    from datasets.exceptions import DatasetNotFoundError

    _fake(monkeypatch, datasets_module, error=DatasetNotFoundError("Dataset 'cais/wmdp-bio-forget-corpus' is a gated dataset"))
    source = TextSource("hub", "cais/wmdp-bio-forget-corpus")
    with pytest.raises(CorpusSourceError) as caught:
        corpora.load_corpus("forget", source, max_chars=100, min_chars=1, seed=0)
    message = str(caught.value)
    assert "cais/wmdp-bio-forget-corpus" in message
    assert "request access" in message
    assert "HF_TOKEN" in message


def test_hub_error_while_streaming(monkeypatch, datasets_module, clear_offline):
    _fake(monkeypatch, datasets_module, records=HUB_RECORDS, error=ConnectionError("connection reset"), fail_after=3)
    with pytest.raises(CorpusSourceError, match="ConnectionError: connection reset"):
        corpora.load_corpus("forget", CYBER_FORGET, max_chars=None, min_chars=1, seed=0)


def test_hub_unpinned_revision_warning(monkeypatch, datasets_module, caplog):
    _fake(monkeypatch, datasets_module, records=HUB_RECORDS)
    with caplog.at_level("WARNING", logger=corpora.logger.name):
        corpora.load_corpus("forget", CYBER_FORGET, max_chars=None, min_chars=1, seed=0)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1
    assert "Set its revision to a commit" in warnings[0]


def test_hub_offline_real_datasets(monkeypatch, datasets_module, tmp_path):
    """Runs the real datasets.load_dataset in offline mode, with sockets blocked as a second guard."""
    import huggingface_hub

    def block_network(*args, **kwargs):
        raise OSError("network access is blocked in this test")

    monkeypatch.setattr(socket.socket, "connect", block_network)
    monkeypatch.setattr(socket, "getaddrinfo", block_network)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets_module.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets_module.config, "HF_DATASETS_CACHE", tmp_path / "datasets-cache")

    source = TextSource("hub", "undo-test/no-such-dataset", config="cyber-forget-corpus")
    with pytest.raises(CorpusSourceError) as caught:
        corpora.load_corpus("forget", source, max_chars=100, min_chars=1, seed=0)
    assert "undo-test/no-such-dataset" in str(caught.value)
    assert "HF_HUB_OFFLINE=1 is set" in str(caught.value)


# --- check_probabilities ------------------------------------------------------------------------

@pytest.mark.parametrize("probabilities, words", [
    ({}, "the mixture has no sources"),
    ({"forget": 0.5, "retain": 0.4}, "sum to 0.9, expected 1"),
    ({"forget": 0.7, "retain": 0.7}, "sum to 1.4, expected 1"),
    ({"forget": 1.5, "retain": -0.5}, "invalid probability 1.5 for source 'forget'"),
    ({"forget": 1.0, "retain": 0.0}, "Remove a source that should not be drawn"),
    ({"forget": math.nan, "retain": 0.5}, "invalid probability nan"),
    ({"forget": "0.5", "retain": 0.5}, "invalid probability '0.5'"),
    ({"forget": True}, "invalid probability True"),
])
def test_probabilities_invalid(probabilities, words):
    with pytest.raises(ValueError, match=words.replace("(", r"\(").replace(")", r"\)")):
        corpora.check_probabilities(probabilities)


def test_probabilities_missing_corpus():
    with pytest.raises(ValueError, match=r"no probability for the corpora \['retain'\]"):
        corpora.check_probabilities({"forget": 1.0}, ["forget", "retain"])


def test_probabilities_unknown_corpus():
    with pytest.raises(ValueError, match=r"unknown corpora \['retian'\]"):
        corpora.check_probabilities({"forget": 0.5, "retian": 0.5}, ["forget"])


def test_probabilities_rounding_accepted():
    corpora.check_probabilities({"a": 0.1, "b": 0.2, "c": 0.7000000001})


# --- mix_corpora --------------------------------------------------------------------------------

def _numbered(prefix: str, count: int, length: int = 0) -> list[str]:
    """Distinct documents "<prefix><i>", padded with "." to ``length`` characters where given."""
    return [f"{prefix}{i}".ljust(length, ".") for i in range(count)]


def _counts(mixed) -> dict[str, int]:
    return {name: entry["documents"] for name, entry in corpora.summarize_mixture(mixed).items()}


# Three corpora drawn 10,000 times with probabilities 0.5, 0.3 and 0.2. The expected counts are
# 10,000 * p = 5000, 3000 and 2000, with binomial standard deviations sqrt(10,000 * p * (1 - p)) =
# 50, 45.8 and 40. The tolerance is 4 standard deviations.
THREE_PROBABILITIES = {"a": 0.5, "b": 0.3, "c": 0.2}
THREE_EXPECTED = {"a": (5000, 200), "b": (3000, 183), "c": (2000, 160)}


def test_mix_proportions():
    three = {name: _numbered(name, 20_000) for name in THREE_PROBABILITIES}
    mixed = corpora.mix_corpora(three, THREE_PROBABILITIES, seed=0, max_documents=10_000)
    counts = _counts(mixed)
    for name, (expected, tolerance) in THREE_EXPECTED.items():
        assert abs(counts[name] - expected) <= tolerance, (name, counts[name])


def test_mix_relearn_half_and_half():
    forget_retain = {"forget": _numbered("f", 10_000), "retain": _numbered("r", 10_000)}
    mixed = corpora.mix_corpora(forget_retain, corpora.RELEARN_PROBABILITIES, seed=42, max_documents=4000)
    # Expected 2000 each; standard deviation sqrt(4000 * 0.25) = 31.6, so 4 of them are 126.
    assert abs(_counts(mixed)["forget"] - 2000) <= 126


def test_document_probabilities_by_characters():
    lengths = {"short": _numbered("s", 4, length=10), "long": _numbered("l", 4, length=30)}
    probabilities = corpora.document_probabilities(lengths, {"short": 0.5, "long": 0.5}, unit="characters")
    # (0.5 / 10) / (0.5 / 10 + 0.5 / 30) = 0.75
    assert probabilities["short"] == pytest.approx(0.75)
    assert probabilities["long"] == pytest.approx(0.25)


def test_mix_characters_unit():
    lengths = {"short": _numbered("s", 20_000, length=10), "long": _numbered("l", 20_000, length=30)}
    mixed = corpora.mix_corpora(lengths, {"short": 0.5, "long": 0.5}, seed=0, unit="characters", max_documents=8000)
    summary = corpora.summarize_mixture(mixed)
    # Documents: 8000 * 0.75 = 6000 short ones, standard deviation sqrt(8000 * 0.75 * 0.25) = 38.7.
    assert abs(summary["short"]["documents"] - 6000) <= 155
    assert summary["short"]["character_share"] == pytest.approx(0.5, abs=0.03)


def test_mix_first_exhausted_stops():
    small_large = {"small": _numbered("s", 3), "large": _numbered("l", 1000)}
    mixed = corpora.mix_corpora(small_large, {"small": 0.5, "large": 0.5}, seed=0)
    assert mixed[-1]["source"] == "small"
    assert _counts(mixed)["small"] == 3


def test_mix_first_exhausted_no_repeats():
    small_large = {"small": _numbered("s", 3), "large": _numbered("l", 1000)}
    mixed = corpora.mix_corpora(small_large, {"small": 0.5, "large": 0.5}, seed=0)
    large = [record["text"] for record in mixed if record["source"] == "large"]
    assert large == small_large["large"][:len(large)]


def test_mix_all_exhausted_covers_every_document():
    two = {"a": _numbered("a", 3), "b": _numbered("b", 5)}
    mixed = corpora.mix_corpora(two, {"a": 0.5, "b": 0.5}, seed=0, stopping_strategy="all_exhausted")
    assert {record["text"] for record in mixed} == set(two["a"] + two["b"])


def test_mix_all_exhausted_stops_at_last_first_pass():
    two = {"a": _numbered("a", 3), "b": _numbered("b", 5)}
    mixed = corpora.mix_corpora(two, {"a": 0.5, "b": 0.5}, seed=0, stopping_strategy="all_exhausted")
    last = mixed[-1]["source"]
    assert _counts(mixed)[last] == len(two[last])


def test_mix_all_exhausted_cycles_in_order():
    two = {"a": _numbered("a", 3), "b": _numbered("b", 50)}
    mixed = corpora.mix_corpora(two, {"a": 0.5, "b": 0.5}, seed=0, stopping_strategy="all_exhausted")
    a_texts = [record["text"] for record in mixed if record["source"] == "a"]
    assert len(a_texts) > 3
    assert a_texts == [two["a"][i % 3] for i in range(len(a_texts))]


def _interleave_texts(datasets_module, corpora_by_name, probabilities, seed, stopping_strategy) -> list[str]:
    parts = [datasets_module.Dataset.from_dict({"text": list(corpora_by_name[name])}) for name in probabilities]
    mixed = datasets_module.interleave_datasets(parts, probabilities=list(probabilities.values()), seed=seed,
                                                stopping_strategy=stopping_strategy)
    return mixed["text"]


@pytest.mark.parametrize("stopping_strategy", corpora.STOPPING_STRATEGIES)
def test_mix_equals_interleave_datasets(datasets_module, stopping_strategy):
    two = {"forget": _numbered("f", 40), "retain": _numbered("r", 70)}
    mixed = corpora.mix_corpora(two, corpora.RELEARN_PROBABILITIES, seed=42, stopping_strategy=stopping_strategy)
    expected = _interleave_texts(datasets_module, two, corpora.RELEARN_PROBABILITIES, 42, stopping_strategy)
    assert [record["text"] for record in mixed] == expected


def test_mix_distill_equals_interleave_datasets(datasets_module):
    ten = {name: _numbered(name, 30 + 7 * i) for i, name in enumerate(corpora.DISTILL_PROBABILITIES)}
    mixed = corpora.mix_corpora(ten, corpora.DISTILL_PROBABILITIES, seed=7, stopping_strategy="first_exhausted")
    expected = _interleave_texts(datasets_module, ten, corpora.DISTILL_PROBABILITIES, 7, "first_exhausted")
    assert [record["text"] for record in mixed] == expected


def test_mix_max_documents():
    two = {"a": _numbered("a", 100), "b": _numbered("b", 100)}
    assert len(corpora.mix_corpora(two, {"a": 0.5, "b": 0.5}, seed=0, max_documents=7)) == 7


def test_mix_deterministic():
    two = {"a": _numbered("a", 100), "b": _numbered("b", 100)}
    first = corpora.mix_corpora(two, {"a": 0.5, "b": 0.5}, seed=5, max_documents=50)
    assert first == corpora.mix_corpora(two, {"a": 0.5, "b": 0.5}, seed=5, max_documents=50)


def test_mix_seed_changes_draws():
    two = {"a": _numbered("a", 100), "b": _numbered("b", 100)}
    first = corpora.mix_corpora(two, {"a": 0.5, "b": 0.5}, seed=5, max_documents=50)
    assert first != corpora.mix_corpora(two, {"a": 0.5, "b": 0.5}, seed=6, max_documents=50)


@pytest.mark.parametrize("options, words", [
    ({"stopping_strategy": "longest"}, "invalid stopping_strategy 'longest'"),
    ({"unit": "tokens"}, "invalid unit 'tokens'"),
    ({"max_documents": 0}, "invalid max_documents 0"),
])
def test_mix_invalid_option(options, words):
    two = {"a": ["x"], "b": ["y"]}
    with pytest.raises(ValueError, match=words):
        corpora.mix_corpora(two, {"a": 0.5, "b": 0.5}, seed=0, **options)


def test_mix_empty_corpus():
    with pytest.raises(ValueError, match="corpus 'b' of the mixture has no text"):
        corpora.mix_corpora({"a": ["x"], "b": []}, {"a": 0.5, "b": 0.5}, seed=0)


def test_mix_probability_for_missing_corpus():
    with pytest.raises(ValueError, match=r"no probability for the corpora \['b'\]"):
        corpora.mix_corpora({"a": ["x"], "b": ["y"]}, {"a": 1.0}, seed=0)


def test_summarize_mixture():
    mixed = [{"text": "abc", "source": "a"}, {"text": "d", "source": "b"}, {"text": "efgh", "source": "a"}]
    summary = corpora.summarize_mixture(mixed)
    assert summary["a"] == {"documents": 2, "characters": 7, "document_share": 2 / 3, "character_share": 7 / 8}
    assert summary["b"] == {"documents": 1, "characters": 1, "document_share": 1 / 3, "character_share": 1 / 8}
