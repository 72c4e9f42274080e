"""Tests for the English/Korean text sources of the language setting (undo_lib.language)."""

import hashlib
import json
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from undo_lib import language as lang
from undo_lib.config import HubDatasetParams, HubSourceParams, LanguageDataParams
from undo_lib.io import file_sha256
from undo_lib.prepare_language import load_corpus

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
    path.write_text(json.dumps({"text": "<p>서식 메뉴에서 &quot;문자&quot;를 고르면 글꼴 대화 상자가 열립니다.</p>"}) + "\n"
                    + json.dumps({"text": "두 번째 문서는 분할에 필요한 다른 한국어 문장입니다."}) + "\n")
    corpus = lang.local_corpus([FIXTURES / "english.jsonl"], [path], 200, 0.3)
    assert corpus.korean[0] == '서식 메뉴에서 "문자"를 고르면 글꼴 대화 상자가 열립니다.'


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


def test_local_single_korean_document(tmp_path):
    path = tmp_path / "one.txt"
    path.write_text("한 문서만 있는 파일이라서 검증 세트를 나눌 수 없습니다.\n", encoding="utf-8")

    with pytest.raises(ValueError) as caught:
        lang.local_corpus([FIXTURES / "english.txt"], [path], 200, 0.3)

    message = str(caught.value)
    assert "only 1 korean document is left" in message
    assert f"{path} (file)" in message
    assert "needs at least 2" in message
    assert "max_document_chars (now 200)" in message
    assert "min_hangul_share (now 0.3)" in message


def test_local_single_english_document(tmp_path):
    path = tmp_path / "one.jsonl"
    path.write_text(json.dumps({"text": "A single English document cannot be split in two."}) + "\n")

    with pytest.raises(ValueError) as caught:
        lang.local_corpus([path], [FIXTURES / "korean.txt"], 200, 0.3)

    message = str(caught.value)
    assert "only 1 english document is left" in message
    assert "min_hangul_share" not in message


def test_local_duplicate_documents_count_once(tmp_path):
    english = tmp_path / "twice.txt"
    english.write_text("The same paragraph appears twice in this file.\n\n"
                       "The same paragraph appears twice in this file.\n")
    copy = tmp_path / "copy.txt"
    copy.write_text(english.read_text())

    with pytest.raises(ValueError, match="only 1 english document"):
        lang.local_corpus([english, copy], [FIXTURES / "korean.txt"], 200, 0.3)


def test_local_two_documents_accepted(tmp_path):
    path = tmp_path / "two.txt"
    path.write_text("첫 번째 문서는 한 문장으로 된 짧은 글입니다.\n\n두 번째 문서도 한 문장으로 된 짧은 글입니다.\n",
                    encoding="utf-8")

    corpus = lang.local_corpus([FIXTURES / "english.txt"], [path], 200, 0.3)

    assert len(corpus.korean) == 2


# --- offline: Debian packages ------------------------------------------------------------------

FAKE_PACKAGE = "debian-faq-ko"
FAKE_VERSION = "1:0.1"
FAKE_DEB_NAME = "debian-faq-ko_1%3a0.1_all.deb"  # the file name apt-get download gives this version
# A second page, so that every fake package gives the two Korean documents a train/validation split needs.
SECOND_PAGE = "<html><body><p>두 번째 페이지에는 다른 한국어 문서가 한 문단 들어 있습니다.</p></body></html>\n"


def _build_fake_deb(tmp_path: Path, package: str = FAKE_PACKAGE,
                    page_path: str = "usr/share/doc/debian/FAQ/ko/test.ko.html", page: str | None = None) -> Path:
    """Build a .deb of ``package`` at FAKE_VERSION with ``page`` (default: the fixture page) at ``page_path``.

    SECOND_PAGE lies next to it as ``second.html``.
    """
    if shutil.which("dpkg-deb") is None or shutil.which("dpkg") is None:
        pytest.skip("dpkg-deb and dpkg are needed to build and unpack a .deb; install the dpkg package")
    tree = tmp_path / "tree"
    (tree / "DEBIAN").mkdir(parents=True)
    (tree / "DEBIAN" / "control").write_text(
        f"Package: {package}\nVersion: {FAKE_VERSION}\nArchitecture: all\n"
        "Maintainer: Test <test@example.invalid>\nDescription: fixture for the offline reader\n")
    page_file = tree / page_path
    page_file.parent.mkdir(parents=True)
    page_file.write_text(PAGE.read_text(encoding="utf-8") if page is None else page, encoding="utf-8")
    (page_file.parent / "second.html").write_text(SECOND_PAGE, encoding="utf-8")
    cache_dir = tmp_path / "cache"
    cache_dir.mkdir()
    deb = cache_dir / f"{package}_1%3a0.1_all.deb"  # the file name apt-get download gives FAKE_VERSION
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


def test_offline_garbage_cached_deb(tmp_path, recorded_commands):
    if shutil.which("dpkg-deb") is None:
        pytest.skip("dpkg-deb is needed to read a .deb; install the dpkg package")
    deb = tmp_path / FAKE_DEB_NAME
    deb.write_bytes(b"<html>an error page saved in place of the package</html>\n")

    with pytest.raises(lang.LanguageSourceError) as caught:
        lang.offline_corpus(tmp_path, {FAKE_PACKAGE: FAKE_VERSION}, 200, 0.3)

    message = str(caught.value)
    assert "dpkg-deb --field" in message
    assert f"If {deb} is truncated or corrupt" in message
    assert "delete it so that the next run downloads it again" in message
    assert "data.language.source: local" not in message


def test_offline_truncated_cached_deb(tmp_path, recorded_commands):
    deb = _build_fake_deb(tmp_path)
    data = deb.read_bytes()
    deb.write_bytes(data[:len(data) - 200])  # the control member stays whole, the data member is cut

    with pytest.raises(lang.LanguageSourceError) as caught:
        lang.offline_corpus(deb.parent, {FAKE_PACKAGE: FAKE_VERSION}, 200, 0.3)

    message = str(caught.value)
    assert "dpkg -x" in message
    assert f"If {deb} is truncated or corrupt" in message
    assert "delete it so that the next run downloads it again" in message


LIBREOFFICE_TITLE_LINE = "Title is: 문자 서식 대화 상자에 대한 도움말"
LIBREOFFICE_CONTENT_LINE = "글꼴과 글꼴 크기를 바꾸려면 서식 메뉴에서 문자를 고르십시오."
LIBREOFFICE_PAGE = f"""<!DOCTYPE html>
<html lang="ko">
<head><title>문자 서식 대화 상자에 대한 도움말</title></head>
<body>
<div id="DisplayArea"><h1>문자</h1><p>{LIBREOFFICE_CONTENT_LINE}</p></div>
<footer>
<div id="DEBUG" class="debug">
<h3 class="bug">Help content debug info:</h3>
<p>This page is: <a href="https://example.invalid/text/shared/01/05020000.xhp">/text/shared/01/05020000.xhp</a></p>
<p>{LIBREOFFICE_TITLE_LINE}</p>
</div>
</footer>
</body>
</html>
"""


def test_libreoffice_debug_lines_dropped(tmp_path, recorded_commands):
    assert lang.hangul_share(LIBREOFFICE_TITLE_LINE) >= 0.3, "precondition: the Korean filter alone keeps it"
    assert len(LIBREOFFICE_TITLE_LINE) >= lang.MIN_LINE_CHARS, "precondition: the length filter alone keeps it"
    deb = _build_fake_deb(tmp_path, "libreoffice-help-ko", "usr/share/libreoffice/help/ko/text/shared/01/05020000.html",
                          LIBREOFFICE_PAGE)

    corpus = lang.offline_corpus(deb.parent, {"libreoffice-help-ko": FAKE_VERSION}, 200, 0.3)

    korean = "\n".join(corpus.korean)
    assert LIBREOFFICE_CONTENT_LINE in korean
    assert "Title is:" not in korean
    assert "debug info" not in korean


def test_other_packages_keep_title_lines(tmp_path, recorded_commands):
    page = PAGE.read_text(encoding="utf-8").replace("</body>", f"<p>{LIBREOFFICE_TITLE_LINE}</p></body>")
    deb = _build_fake_deb(tmp_path, page=page)

    corpus = lang.offline_corpus(deb.parent, {FAKE_PACKAGE: FAKE_VERSION}, 200, 0.3)

    assert LIBREOFFICE_TITLE_LINE in "\n".join(corpus.korean)


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


# The first two English records have 58 and 62 characters, so a budget of 70 stops after the second.
ENGLISH_BUDGET_TWO_RECORDS = 70


def test_hub_max_chars(hub_offline):
    corpus = lang.hub_corpus(HUB_SPECS["english"], HUB_SPECS["korean"],
                             {"english": ENGLISH_BUDGET_TWO_RECORDS, "korean": 10_000}, 200, 0.3)
    assert corpus.english == ["The museum opens at nine and closes at five every weekday.",
                              "Trains to the coast leave every hour from the central station."]


def test_hub_inputs_sha256(hub_offline):
    corpus = lang.hub_corpus(HUB_SPECS["english"], HUB_SPECS["korean"],
                             {"english": ENGLISH_BUDGET_TWO_RECORDS, "korean": 10_000}, 200, 0.3)
    expected = hashlib.sha256("The museum opens at nine and closes at five every weekday.\0"
                              "Trains to the coast leave every hour from the central station.\0".encode()).hexdigest()
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
    assert "HF_HUB_OFFLINE=1 is set" in message
    assert "Unset it to download the dataset" in message


class FakeLoadDataset:
    """Stands in for datasets.load_dataset: records each call's arguments and returns fixed records."""

    def __init__(self, error: OSError | None = None):
        self.calls = []
        self.error = error

    def __call__(self, path, **kwargs):
        self.calls.append({"path": path, **kwargs})
        if self.error is not None:
            raise self.error
        if "korean" in path:
            return [{"text": "첫 번째 기록은 한국어로 된 한 문장입니다."}, {"text": "두 번째 기록도 한국어로 된 한 문장입니다."}]
        return [{"text": "The first record is one English sentence."}, {"text": "The second record is another one."}]


@pytest.fixture
def fake_load_dataset(monkeypatch):
    datasets = pytest.importorskip("datasets", reason="the hub source needs the datasets package")
    fake = FakeLoadDataset()
    monkeypatch.setattr(datasets, "load_dataset", fake)
    return fake


def test_hub_error_without_offline_mode(monkeypatch):
    datasets = pytest.importorskip("datasets", reason="the hub source needs the datasets package")
    monkeypatch.setattr(datasets, "load_dataset", FakeLoadDataset(ConnectionError("connection refused")))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)

    with pytest.raises(lang.LanguageSourceError) as caught:
        lang.hub_corpus({"path": "en"}, {"path": "korean"}, {"english": 100, "korean": 100}, 200, 0.3)

    message = str(caught.value)
    assert "ConnectionError: connection refused" in message
    assert "OFFLINE" not in message


def test_hub_error_names_datasets_offline(monkeypatch):
    datasets = pytest.importorskip("datasets", reason="the hub source needs the datasets package")
    monkeypatch.setattr(datasets, "load_dataset", FakeLoadDataset(ConnectionError("offline mode is enabled")))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "true")

    with pytest.raises(lang.LanguageSourceError, match="HF_DATASETS_OFFLINE=true is set"):
        lang.hub_corpus({"path": "en"}, {"path": "korean"}, {"english": 100, "korean": 100}, 200, 0.3)


def test_hub_error_names_both_offline_variables(monkeypatch):
    datasets = pytest.importorskip("datasets", reason="the hub source needs the datasets package")
    monkeypatch.setattr(datasets, "load_dataset", FakeLoadDataset(ConnectionError("offline mode is enabled")))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "yes")

    with pytest.raises(lang.LanguageSourceError) as caught:
        lang.hub_corpus({"path": "en"}, {"path": "korean"}, {"english": 100, "korean": 100}, 200, 0.3)

    message = str(caught.value)
    assert "HF_HUB_OFFLINE=1 and HF_DATASETS_OFFLINE=yes are set" in message
    assert "Unset them" in message


def test_hub_revision_passed(fake_load_dataset):
    lang.hub_corpus({"path": "en", "revision": "abc123"}, {"path": "korean", "revision": "def456"},
                    {"english": 1000, "korean": 1000}, 200, 0.3)

    assert [call["revision"] for call in fake_load_dataset.calls] == ["abc123", "def456"]


def test_hub_revision_recorded(fake_load_dataset):
    corpus = lang.hub_corpus({"path": "en", "revision": "abc123"}, {"path": "korean"},
                             {"english": 1000, "korean": 1000}, 200, 0.3)

    assert [i["version"] for i in corpus.inputs] == ["abc123", None]


def test_hub_unpinned_revision_warning(fake_load_dataset, caplog):
    with caplog.at_level("WARNING", logger=lang.logger.name):
        lang.hub_corpus({"path": "en", "revision": "abc123"}, {"path": "korean"},
                        {"english": 1000, "korean": 1000}, 200, 0.3)

    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1
    assert "data.language.hub.korean.revision" in warnings[0]


def test_load_corpus_passes_params_revision(fake_load_dataset):
    hub = HubSourceParams(english=HubDatasetParams(path="en", revision="abc123"),
                          korean=HubDatasetParams(path="korean", revision="def456"))
    params = LanguageDataParams(source="hub", hub=hub)

    corpus = load_corpus(params)

    assert [call["revision"] for call in fake_load_dataset.calls] == ["abc123", "def456"]
    assert [i["version"] for i in corpus.inputs] == ["abc123", "def456"]


def test_hub_missing_budget():
    with pytest.raises(ValueError, match="no 'korean' entry"):
        lang.hub_corpus(HUB_SPECS["english"], HUB_SPECS["korean"], {"english": 10}, 200, 0.3)
