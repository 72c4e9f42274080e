"""Tests for the English/Korean text sources of the language setting (undo_lib.language)."""

import hashlib
import json
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from undo_lib import language as lang
from undo_lib.io import file_sha256

FIXTURES = Path(__file__).parent / "fixtures" / "language"
PAGE = FIXTURES / "page.html"
KOREAN_PAGE_LINE = "글꼴을 바꾸려면 먼저 텍스트를 선택하고 서식 - 문자를 차례로 누르십시오."
ENGLISH_PAGE_LINE = "Select the text first, then choose Format & Character from the menu bar."


# --- hangul_share, strip_markup ---------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("", 0.0),
    ("   \n", 0.0),
    ("가", 1.0),
    ("한국어 text", 3 / 7),  # 3 syllables among 7 non-whitespace characters
    ("ㄱㄴ ab", 0.5),  # compatibility jamo count as Hangul
    ("\u1100\u1161", 1.0),  # conjoining jamo
    ("plain English.", 0.0),
])
def test_hangul_share_values(text, expected):
    assert lang.hangul_share(text) == pytest.approx(expected)


def test_strip_markup_tags_and_entities():
    assert lang.strip_markup("<p>a &amp; <b>b</b></p><p>c&nbsp;&nbsp;d &lt;e&gt;</p>") == "a & b\nc d <e>"


def test_strip_markup_drops_script_and_comments():
    text = lang.strip_markup("<script>var x = 1;</script><!-- note --><div>kept</div>")
    assert text == "kept"


def test_strip_markup_keeps_comparisons():
    assert lang.strip_markup("a < b and c > d") == "a < b and c > d"


def test_strip_markup_normalises_lines():
    assert lang.strip_markup("  one \t two  \n\n   \n three ") == "one two\nthree"


def test_html_text_page():
    lines = lang.html_text(PAGE.read_text(encoding="utf-8")).splitlines()
    assert KOREAN_PAGE_LINE in lines  # a paragraph wrapped in the source is one line
    assert ENGLISH_PAGE_LINE in lines
    assert "표에서 <셀> 하나를 고르고 Enter 키를 누르면 값이 바뀝니다." in lines
    assert "한글 문서 편집기는 여러 언어의 맞춤법 검사를 지원합니다." in lines  # numeric entities
    assert "dpkg -l" in lines  # <pre> keeps its line breaks
    assert not any("스크립트" in line or "주석" in line or "제목" in line for line in lines)


# --- chunk_documents ---------------------------------------------------------------------------

def test_chunk_length_bound():
    lines = [f"line {i} " + "word " * (i % 13) for i in range(200)] + ["long " * 100]
    documents = lang.chunk_documents(lines, 60)
    assert max(len(d) for d in documents) <= 60


def test_chunk_keeps_words():
    lines = [f"line {i} " + "word " * (i % 13) for i in range(200)] + ["long " * 100, "한국어 문장은 띄어쓰기로 나뉩니다 " * 10]
    documents = lang.chunk_documents(lines, 60)
    assert " ".join(documents).split() == " ".join(lines).split()


def test_chunk_joins_short_lines():
    assert lang.chunk_documents(["aaa", "bbb", "ccc"], 7) == ["aaa\nbbb", "ccc"]


def test_chunk_splits_korean_at_space():
    assert lang.chunk_documents(["가나다 라마바 사아자"], 8) == ["가나다 라마바", "사아자"]


def test_chunk_hard_cut_without_space():
    documents = lang.chunk_documents(["가" * 25], 10)
    assert documents == ["가" * 10, "가" * 10, "가" * 5]


def test_chunk_skips_empty_lines():
    assert lang.chunk_documents(["", "  ", "text"], 10) == ["text"]


def test_chunk_invalid_max_chars():
    with pytest.raises(ValueError, match="max_chars 0"):
        lang.chunk_documents(["text"], 0)


# --- split_train_validation --------------------------------------------------------------------

DOCS = [f"document {i}" for i in range(50)]


def test_split_disjoint():
    train, validation = lang.split_train_validation(DOCS, 0.2, seed=1)
    assert not set(train) & set(validation)


def test_split_covers_all():
    train, validation = lang.split_train_validation(DOCS, 0.2, seed=1)
    assert sorted(train + validation) == sorted(DOCS)


def test_split_size():
    _, validation = lang.split_train_validation(DOCS, 0.2, seed=1)
    assert len(validation) == 10


def test_split_deterministic():
    assert lang.split_train_validation(DOCS, 0.2, seed=3) == lang.split_train_validation(DOCS, 0.2, seed=3)


def test_split_seed_changes_split():
    assert lang.split_train_validation(DOCS, 0.2, seed=3) != lang.split_train_validation(DOCS, 0.2, seed=4)


def test_split_removes_duplicates():
    train, validation = lang.split_train_validation(DOCS + DOCS[:10], 0.2, seed=1)
    assert len(train) + len(validation) == len(DOCS)


def test_split_two_documents():
    train, validation = lang.split_train_validation(["a", "b", "a"], 0.01, seed=0)
    assert len(validation) == 1
    assert len(train) == 1


def test_split_invalid_fraction():
    with pytest.raises(ValueError, match="validation_fraction 1.0"):
        lang.split_train_validation(DOCS, 1.0, seed=0)


# --- local files -------------------------------------------------------------------------------

def _local(english=("english.jsonl", "english.txt"), korean=("korean.jsonl", "korean.txt"), **kwargs):
    options = {"max_document_chars": 200, "min_hangul_share": 0.3, **kwargs}
    return lang.local_corpus([FIXTURES / n for n in english], [FIXTURES / n for n in korean], **options)


def test_local_jsonl_lines():
    corpus = _local()
    assert ("Libraries lend books to anyone who lives in the town.\n"
            "A second line of the same document mentions the opening hours.") in corpus.english


def test_local_txt_blocks():
    corpus = _local()
    assert ("The first document of this file is a short paragraph "
            "that was wrapped over two lines in the source.") in corpus.english


def test_local_korean_documents():
    corpus = _local()
    assert "첫 번째 문서는 두 줄에 걸쳐 쓴 짧은 한국어 문단입니다." in corpus.korean


def test_local_hangul_filter_drops_english():
    corpus = _local()
    assert not any("English line" in doc for doc in corpus.korean)


def test_local_document_length():
    corpus = _local(max_document_chars=40)
    assert max(len(doc) for doc in corpus.english + corpus.korean) <= 40


def test_local_inputs_sha256():
    corpus = _local()
    assert [i["sha256"] for i in corpus.inputs] == [file_sha256(FIXTURES / n) for n in
                                                     ("english.jsonl", "english.txt", "korean.jsonl", "korean.txt")]


def test_local_deduplicates_lines(tmp_path):
    copy = tmp_path / "copy.jsonl"
    shutil.copy(FIXTURES / "korean.jsonl", copy)
    corpus = lang.local_corpus([FIXTURES / "english.jsonl"], [FIXTURES / "korean.jsonl", copy], 200, 0.3)
    assert corpus.inputs[-1]["characters"] == 0


def test_local_html_markup(tmp_path):
    path = tmp_path / "page.jsonl"
    path.write_text(json.dumps({"text": "<p>서식 메뉴에서 &quot;문자&quot;를 고르면 글꼴 대화 상자가 열립니다.</p>"}) + "\n")
    corpus = lang.local_corpus([FIXTURES / "english.jsonl"], [path], 200, 0.3)
    assert corpus.korean == ['서식 메뉴에서 "문자"를 고르면 글꼴 대화 상자가 열립니다.']


def test_local_invalid_json_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "a valid first line of text"}\n\n{"text": broken\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl:3: invalid JSON"):
        lang.local_corpus([path], [FIXTURES / "korean.jsonl"], 200, 0.3)


def test_local_missing_text_field(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "a valid first line of text"}\n{"body": "no text field"}\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl:2: expected a JSON object with a string field 'text'"):
        lang.local_corpus([path], [FIXTURES / "korean.jsonl"], 200, 0.3)


def test_local_missing_file(tmp_path):
    missing = tmp_path / "missing.txt"
    with pytest.raises(FileNotFoundError, match=r"missing\.txt not found.*data\.language\.local\.korean"):
        lang.local_corpus([FIXTURES / "english.txt"], [missing], 200, 0.3)


def test_local_unsupported_suffix():
    with pytest.raises(ValueError, match=r"page\.html: expected a \.jsonl or \.txt file"):
        lang.local_corpus([FIXTURES / "english.txt"], [PAGE], 200, 0.3)


def test_local_no_korean_left():
    with pytest.raises(ValueError, match="no korean documents"):
        lang.local_corpus([FIXTURES / "english.txt"], [FIXTURES / "english.jsonl"], 200, 0.3)


# --- offline: Debian packages ------------------------------------------------------------------

FAKE_PACKAGE = "debian-faq-ko"
FAKE_VERSION = "1:0.1"
FAKE_DEB_NAME = "debian-faq-ko_1%3a0.1_all.deb"  # the file name apt-get download gives this version


def _build_fake_deb(tmp_path: Path) -> Path:
    """Build a .deb of debian-faq-ko that contains the fixture page where the reader looks."""
    if shutil.which("dpkg-deb") is None or shutil.which("dpkg") is None:
        pytest.skip("dpkg-deb and dpkg are needed to build and unpack a .deb; install the dpkg package")
    tree = tmp_path / "tree"
    (tree / "DEBIAN").mkdir(parents=True)
    (tree / "DEBIAN" / "control").write_text(
        f"Package: {FAKE_PACKAGE}\nVersion: {FAKE_VERSION}\nArchitecture: all\n"
        "Maintainer: Test <test@example.invalid>\nDescription: fixture for the offline reader\n")
    page_dir = tree / "usr/share/doc/debian/FAQ/ko"
    page_dir.mkdir(parents=True)
    shutil.copy(PAGE, page_dir / "test.ko.html")
    cache_dir = tmp_path / "cache"
    cache_dir.mkdir()
    deb = cache_dir / FAKE_DEB_NAME
    subprocess.run(["dpkg-deb", "--root-owner-group", "--build", str(tree), str(deb)],
                   check=True, capture_output=True)
    return deb


@pytest.fixture
def recorded_commands(monkeypatch):
    """Record every subprocess.run command and reject apt-get, so no test touches the network."""
    commands = []
    real_run = subprocess.run

    def run(command, *args, **kwargs):
        commands.append(list(command))
        if command[0] == "apt-get":
            raise AssertionError(f"unexpected apt-get call: {command}")
        return real_run(command, *args, **kwargs)

    monkeypatch.setattr(lang.subprocess, "run", run)
    return commands


def test_offline_fake_deb(tmp_path, recorded_commands):
    deb = _build_fake_deb(tmp_path)
    corpus = lang.offline_corpus(deb.parent, {FAKE_PACKAGE: FAKE_VERSION}, 200, 0.3)
    assert KOREAN_PAGE_LINE in "\n".join(corpus.korean)


def test_offline_drops_english_page_line(tmp_path, recorded_commands):
    deb = _build_fake_deb(tmp_path)
    corpus = lang.offline_corpus(deb.parent, {FAKE_PACKAGE: FAKE_VERSION}, 200, 0.3)
    assert ENGLISH_PAGE_LINE not in "\n".join(corpus.korean)


def test_offline_no_apt_get(tmp_path, recorded_commands):
    deb = _build_fake_deb(tmp_path)
    built = len(recorded_commands)
    lang.offline_corpus(deb.parent, {FAKE_PACKAGE: FAKE_VERSION}, 200, 0.3)
    assert [c[0] for c in recorded_commands[built:]] == ["dpkg-deb", "dpkg"]  # check fields, unpack


def test_offline_inputs(tmp_path, recorded_commands):
    deb = _build_fake_deb(tmp_path)
    corpus = lang.offline_corpus(deb.parent, {FAKE_PACKAGE: FAKE_VERSION}, 200, 0.3)
    package = corpus.inputs[0]
    assert package["name"] == FAKE_PACKAGE
    assert package["version"] == FAKE_VERSION
    assert package["sha256"] == file_sha256(deb)
    assert package["language"] == "korean"


def test_offline_python_docs(tmp_path, recorded_commands):
    deb = _build_fake_deb(tmp_path)
    corpus = lang.offline_corpus(deb.parent, {FAKE_PACKAGE: FAKE_VERSION}, 200, 0.3)
    assert corpus.inputs[-1]["name"] == "pydoc_data.topics"
    assert corpus.inputs[-1]["documents"] == len(corpus.english)


def test_offline_wrong_cached_version(tmp_path, recorded_commands):
    deb = _build_fake_deb(tmp_path)
    deb.rename(deb.with_name("debian-faq-ko_2.0_all.deb"))
    with pytest.raises(lang.LanguageSourceError, match="contains package debian-faq-ko version 1:0.1, expected"):
        lang.offline_corpus(deb.parent, {FAKE_PACKAGE: "2.0"}, 200, 0.3)


def test_offline_unknown_package(tmp_path, recorded_commands):
    with pytest.raises(ValueError, match="unknown language package 'cowsay'"):
        lang.offline_corpus(tmp_path, {"cowsay": "3.03"}, 200, 0.3)


def _fake_failed_download(monkeypatch) -> list:
    """Make apt-get download fail as it does for a version the mirror does not have."""
    commands = []

    def run(command, *args, **kwargs):
        commands.append(list(command))
        return subprocess.CompletedProcess(command, 100, stdout="",
                                           stderr="E: Version '0.0-missing' for 'debian-faq' was not found")

    monkeypatch.setattr(lang.subprocess, "run", run)
    return commands


def test_apt_failure_command(tmp_path, monkeypatch):
    commands = _fake_failed_download(monkeypatch)
    with pytest.raises(lang.LanguageSourceError):
        lang.offline_corpus(tmp_path, {"debian-faq": "0.0-missing"}, 200, 0.3)
    assert commands == [["apt-get", "download", "debian-faq=0.0-missing"]]


def test_apt_failure_message(tmp_path, monkeypatch):
    _fake_failed_download(monkeypatch)
    with pytest.raises(lang.LanguageSourceError) as caught:
        lang.offline_corpus(tmp_path, {"debian-faq": "0.0-missing"}, 200, 0.3)
    message = str(caught.value)
    assert "apt-get download debian-faq=0.0-missing failed with exit status 100" in message
    assert "for package debian-faq=0.0-missing" in message
    assert "E: Version '0.0-missing' for 'debian-faq' was not found" in message
    assert "data.language.source: local" in message
    assert "data.language.local.korean" in message
    assert f"debian-faq_0.0-missing_*.deb) in {tmp_path}" in message


def test_apt_missing(tmp_path, monkeypatch):
    def run(command, *args, **kwargs):
        raise FileNotFoundError(2, "No such file or directory", command[0])

    monkeypatch.setattr(lang.subprocess, "run", run)
    with pytest.raises(lang.LanguageSourceError, match="apt-get is not installed.*data.language.source: local"):
        lang.offline_corpus(tmp_path, {"debian-faq": "11.1"}, 200, 0.3)


# --- hub ---------------------------------------------------------------------------------------

@pytest.fixture
def hub_offline(monkeypatch, tmp_path):
    """Put datasets and huggingface_hub into offline mode and block sockets as a second guard.

    The datasets cache, where even streaming writes lock files, moves to ``tmp_path``.
    """
    datasets = pytest.importorskip("datasets", reason="the hub source needs the datasets package")
    import huggingface_hub

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "datasets-cache")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # Both libraries read HF_HUB_OFFLINE at import time, which may have happened before this test.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)

    def block_network(*args, **kwargs):
        raise OSError("network access is blocked in this test")

    monkeypatch.setattr(socket.socket, "connect", block_network)
    monkeypatch.setattr(socket, "getaddrinfo", block_network)


HUB_SPECS = {
    "english": {"path": str(FIXTURES / "hub" / "english"), "name": None, "split": "train", "text_field": "text"},
    "korean": {"path": str(FIXTURES / "hub" / "korean"), "name": None, "split": "train", "text_field": "text"},
}


def test_hub_local_folder(hub_offline):
    corpus = lang.hub_corpus(HUB_SPECS["english"], HUB_SPECS["korean"], {"english": 10_000, "korean": 10_000}, 200, 0.3)
    assert corpus.korean == ["박물관은 평일마다 아홉 시에 열고 다섯 시에 닫습니다.",
                             "바닷가로 가는 기차는 중앙역에서 한 시간마다 출발합니다."]


def test_hub_max_chars(hub_offline):
    corpus = lang.hub_corpus(HUB_SPECS["english"], HUB_SPECS["korean"], {"english": 10, "korean": 10_000}, 200, 0.3)
    assert corpus.english == ["The museum opens at nine and closes at five every weekday."]


def test_hub_inputs_sha256(hub_offline):
    corpus = lang.hub_corpus(HUB_SPECS["english"], HUB_SPECS["korean"], {"english": 10, "korean": 10_000}, 200, 0.3)
    expected = hashlib.sha256("The museum opens at nine and closes at five every weekday.\0".encode()).hexdigest()
    assert corpus.inputs[0]["sha256"] == expected


def test_hub_missing_text_field(hub_offline):
    spec = {**HUB_SPECS["korean"], "text_field": "content"}
    with pytest.raises(ValueError, match="no string field 'content'"):
        lang.hub_corpus(HUB_SPECS["english"], spec, {"english": 10_000, "korean": 10_000}, 200, 0.3)


def test_hub_unreachable(hub_offline):
    spec = {"path": "undo-test/no-such-dataset", "name": "kor_Hang", "split": "train"}
    with pytest.raises(lang.LanguageSourceError) as caught:
        lang.hub_corpus(HUB_SPECS["english"], spec, {"english": 10_000, "korean": 10_000}, 200, 0.3)
    message = str(caught.value)
    assert "korean dataset undo-test/no-such-dataset" in message
    assert "data.language.source: offline" in message
    assert "local" in message


def test_hub_missing_budget():
    with pytest.raises(ValueError, match="no 'korean' entry"):
        lang.hub_corpus(HUB_SPECS["english"], HUB_SPECS["korean"], {"english": 10}, 200, 0.3)
