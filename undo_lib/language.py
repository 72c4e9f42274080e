"""English (retain) and Korean (forget) documents for the language setting.

In the language setting of "Distillation Robustifies Unlearning" (arXiv 2506.06278) the model
keeps English and unlearns Korean. This module returns the two document lists and where their
text came from. Mixing them into training files is the data stage's job. There are three sources:

offline (the default)
    Debian documentation packages, fetched with ``apt-get download`` into a cache folder and
    unpacked with ``dpkg -x``. No dataset hub is needed, and the package versions pin the text.
    English also comes from Python's bundled ``pydoc_data.topics``.
local
    jsonl or txt files that the user lists.
hub
    Streaming Hugging Face datasets (the paper uses FineWeb-Edu for English and FineWeb-2 for
    Korean), read with the ``datasets`` library up to a character budget per language.

Every source goes through the same steps. Markup is removed, and each line is kept only if it is
long enough and in the expected language. Lines are deduplicated per language across all inputs,
because help pages repeat the same boilerplate. The remaining lines of each input document are
then packed into documents of at most ``max_document_chars`` characters.
"""

from __future__ import annotations

import glob
import html
import json
import logging
import platform
import random
import re
import string
import subprocess
import tempfile
from dataclasses import dataclass, field
from hashlib import sha256
from pathlib import Path
from typing import Iterable, Iterator

from pydoc_data import topics as pydoc_topics

from undo_lib.hub import DATASET_OFFLINE_VARIABLES, offline_sentence
from undo_lib.io import file_sha256

logger = logging.getLogger(__name__)

LANGUAGES = ("english", "korean")

# Package name -> Debian version. The Korean packages are the forget text, the others the retain text.
DEFAULT_PACKAGES = {
    "libreoffice-help-ko": "4:7.4.7-1+deb12u14",
    "debian-faq-ko": "11.1",
    "debian-handbook": "11.20220922",
    "debian-faq": "11.1",
}

# Hangul share of a line's non-whitespace characters from which a line counts as Korean. At 0.3 a
# line may contain product names, menu paths and code, while the English sentences of untranslated
# help pages (no Hangul at all) are dropped.
DEFAULT_MIN_HANGUL_SHARE = 0.3

# Shorter lines are mostly headings, menu labels, table cells and navigation links.
MIN_LINE_CHARS = 20

# An English line contains no Hangul at all and at least this share of ASCII letters among its
# non-whitespace characters. The letter share drops most config files, tables of numbers and
# symbol-heavy shell lines of the handbook's examples (about 2% of its characters), but short
# commands such as "$ dpkg --search /bin/mount" remain.
ENGLISH_MIN_LETTER_SHARE = 0.6

# Upper bound for one apt-get or dpkg call, far above what a download of tens of MB needs.
COMMAND_TIMEOUT_S = 600

# The train/validation split needs one document on each side.
MIN_DOCUMENTS_PER_LANGUAGE = 2

_HANGUL_RANGES = (
    (0xAC00, 0xD7A3),  # Hangul Syllables
    (0x1100, 0x11FF),  # Hangul Jamo
    (0x3130, 0x318F),  # Hangul Compatibility Jamo
    (0xA960, 0xA97F),  # Hangul Jamo Extended-A
    (0xD7B0, 0xD7FF),  # Hangul Jamo Extended-B
)
_ASCII_LETTERS = frozenset(string.ascii_letters)

_LOCAL_SOURCE_HINT = (
    "To use other text, set data.language.source: local and list jsonl or txt files under "
    "data.language.local.english and data.language.local.korean"
)


@dataclass(frozen=True)
class PackageLayout:
    """The language of a documentation package, the files in its tree that hold the text, and the
    lines of those files that are not content."""

    language: str
    patterns: tuple[str, ...]  # glob patterns relative to the root that ``dpkg -x`` unpacks into
    skipped_line_prefixes: tuple[str, ...] = ()  # a page line that starts with one of these is dropped


# Every LibreOffice help page ends with a debug footer, written by help3xsl/online_transform.xsl
# of the LibreOffice help sources: "Help content debug info:", "This page is: <file>" and
# "Title is: <page title>". The title line contains Hangul, so the Korean filter would keep it.
LIBREOFFICE_DEBUG_PREFIXES = ("Help content debug info:", "This page is:", "Title is:")

# The Korean FAQ and the English FAQ also ship the same text as .txt.gz and .pdf.gz. Only the HTML
# is read, so no text is counted twice. The handbook has 26 translations and only en-US is read.
PACKAGE_LAYOUTS = {
    "libreoffice-help-ko": PackageLayout("korean", ("usr/share/libreoffice/help/ko/text/**/*.html",),
                                         LIBREOFFICE_DEBUG_PREFIXES),
    "debian-faq-ko": PackageLayout("korean", ("usr/share/doc/debian/FAQ/ko/*.html",)),
    "debian-handbook": PackageLayout("english", ("usr/share/doc/debian-handbook/html/en-US/*.html",)),
    "debian-faq": PackageLayout("english", ("usr/share/doc/debian/FAQ/*.en.html",)),
}


class LanguageSourceError(RuntimeError):
    """A source of language text could not be fetched, unpacked or reached."""


@dataclass
class Corpus:
    """Cleaned, deduplicated documents per language and the inputs they came from.

    Each entry of ``inputs`` describes one input file, package or dataset with at least the keys
    ``name``, ``kind``, ``version`` (None where there is none), ``sha256``, ``language``,
    ``documents`` and ``characters`` (characters of the documents kept from that input).
    """

    english: list[str] = field(default_factory=list)
    korean: list[str] = field(default_factory=list)
    inputs: list[dict] = field(default_factory=list)


# --- text cleaning ---------------------------------------------------------------------------

_HIDDEN_ELEMENT = re.compile(r"<(script|style|head|noscript|template)\b[^>]*>.*?</\1\s*>", re.IGNORECASE | re.DOTALL)
_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
_DECLARATION = re.compile(r"<[!?][^<>]*>")  # <!DOCTYPE ...> and <?xml ...?>
_BLOCK_TAG = re.compile(
    r"</?(?:address|article|aside|blockquote|br|caption|dd|div|dl|dt|figcaption|figure|footer|"
    r"h[1-6]|header|hr|li|nav|ol|p|pre|section|table|td|th|tr|ul)\b[^<>]*>",
    re.IGNORECASE,
)
# A tag starts with a letter right after "<", so plain-text comparisons such as "a < b" stay.
_TAG = re.compile(r"</?[A-Za-z][^<>]*>")
_PRE_ELEMENT = re.compile(r"(<pre\b.*?</pre\s*>)", re.IGNORECASE | re.DOTALL)


def hangul_share(text: str) -> float:
    """Return the share of non-whitespace characters in ``text`` that are Hangul (0.0 for none)."""
    characters = [c for c in text if not c.isspace()]
    if not characters:
        return 0.0
    hangul = sum(1 for c in characters if any(low <= ord(c) <= high for low, high in _HANGUL_RANGES))
    return hangul / len(characters)


def _letter_share(text: str) -> float:
    characters = [c for c in text if not c.isspace()]
    if not characters:
        return 0.0
    return sum(1 for c in characters if c in _ASCII_LETTERS) / len(characters)


def strip_markup(text: str) -> str:
    """Remove HTML/XML tags, unescape entities and normalise whitespace on each line.

    Script, style and head elements are removed with their content. Block-level tags such as
    ``<p>``, ``<div>``, ``<br>`` and ``<td>`` end a line, and other tags are removed. Line breaks
    already in ``text`` are kept. On each line, runs of whitespace become one space, and the
    returned text has no leading or trailing whitespace on a line and no empty lines.
    """
    text = _HIDDEN_ELEMENT.sub("", text)
    text = _COMMENT.sub("", text)
    text = _DECLARATION.sub("", text)
    text = _BLOCK_TAG.sub("\n", text)
    text = _TAG.sub("", text)
    text = html.unescape(text)
    lines = (" ".join(line.split()) for line in text.splitlines())
    return "\n".join(line for line in lines if line)


def html_text(raw: str) -> str:
    """Return the text of an HTML page with one line per block element, as a browser shows it.

    Line breaks in the source are spaces in HTML except inside ``<pre>``, so they are replaced
    before ``strip_markup`` runs. Otherwise a paragraph wrapped in the source would become
    several short lines.
    """
    parts = _PRE_ELEMENT.split(raw)
    unwrapped = [part if i % 2 else part.replace("\r", " ").replace("\n", " ") for i, part in enumerate(parts)]
    return strip_markup("".join(unwrapped))


def _is_korean_line(line: str, min_hangul_share: float) -> bool:
    return hangul_share(line) >= min_hangul_share


def _is_english_line(line: str) -> bool:
    return hangul_share(line) == 0.0 and _letter_share(line) >= ENGLISH_MIN_LETTER_SHARE


# --- documents -------------------------------------------------------------------------------

def _split_long_line(line: str, max_chars: int) -> Iterator[str]:
    """Cut ``line`` into pieces of at most ``max_chars``, at the last space that fits.

    A piece without any space is cut hard at ``max_chars``. The space at a cut is dropped.
    """
    while len(line) > max_chars:
        cut = line.rfind(" ", 0, max_chars + 1)
        if cut <= 0:
            yield line[:max_chars]
            line = line[max_chars:].lstrip(" ")
        else:
            yield line[:cut].rstrip(" ")
            line = line[cut + 1:].lstrip(" ")
    if line:
        yield line


def chunk_documents(lines: Iterable[str], max_chars: int) -> list[str]:
    """Join consecutive lines with newlines into documents of at most ``max_chars`` characters.

    Lines are packed greedily in order, and a line is never split unless it alone is longer than
    ``max_chars``. Such a line is cut at word boundaries (spaces, which also separate Korean
    words), or hard at ``max_chars`` where a piece has no space. Empty lines are skipped.

    Raises:
        ValueError: If ``max_chars`` is smaller than 1.
    """
    if max_chars < 1:
        raise ValueError(f"invalid max_chars {max_chars}: expected a document length of at least 1 character")

    documents: list[str] = []
    current: list[str] = []
    size = 0
    for line in lines:
        for piece in _split_long_line(line.strip(), max_chars):
            added = len(piece) + (1 if current else 0)  # one newline joins it to the previous line
            if current and size + added > max_chars:
                documents.append("\n".join(current))
                current, size, added = [], 0, len(piece)
            current.append(piece)
            size += added
    if current:
        documents.append("\n".join(current))
    return documents


def _unique(texts: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(texts))


def split_train_validation(docs: list[str], validation_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Remove exact duplicates, then split the documents at random into train and validation.

    ``round(validation_fraction * n)`` of the n unique documents go to validation, but at least
    one and at most n - 1 when n >= 2, so both lists are non-empty then. The two lists are
    disjoint, keep the input order, and are the same for the same documents and ``seed``.

    Raises:
        ValueError: If ``validation_fraction`` is not strictly between 0 and 1.
    """
    if not 0.0 < validation_fraction < 1.0:
        raise ValueError(f"invalid validation_fraction {validation_fraction}: expected a value in (0, 1)")

    unique = _unique(docs)
    if len(unique) < 2:
        return unique, []
    count = min(max(1, round(validation_fraction * len(unique))), len(unique) - 1)
    validation_indices = set(random.Random(seed).sample(range(len(unique)), count))
    train = [doc for i, doc in enumerate(unique) if i not in validation_indices]
    validation = [doc for i, doc in enumerate(unique) if i in validation_indices]
    return train, validation


class _CorpusBuilder:
    """Documents, seen lines and input records of a Corpus while its inputs are added one by one."""

    def __init__(self, max_document_chars: int, min_hangul_share: float):
        if max_document_chars < MIN_LINE_CHARS:
            raise ValueError(f"invalid max_document_chars {max_document_chars}: expected at least "
                             f"{MIN_LINE_CHARS}, the minimum length of a kept line")
        if not 0.0 < min_hangul_share <= 1.0:
            raise ValueError(f"invalid min_hangul_share {min_hangul_share}: expected a value in (0, 1]")
        self.max_document_chars = max_document_chars
        self.min_hangul_share = min_hangul_share
        self.documents: dict[str, list[str]] = {language: [] for language in LANGUAGES}
        self.seen_lines: dict[str, set[str]] = {language: set() for language in LANGUAGES}
        self.inputs: list[dict] = []

    def _keep(self, language: str, line: str) -> bool:
        if len(line) < MIN_LINE_CHARS or line in self.seen_lines[language]:
            return False
        if language == "korean":
            return _is_korean_line(line, self.min_hangul_share)
        return _is_english_line(line)

    def add(self, language: str, texts: Iterable[str], source: dict, max_chars: int | None = None) -> dict:
        """Add the documents made from ``texts`` and record ``source`` with their counts.

        Each text is one input document, already cleaned of markup. With ``max_chars``, no more
        texts are read once this input has given that many characters, so the total can exceed
        it by at most one input document's characters.
        """
        documents = []
        characters = 0
        for text in texts:
            lines = []
            for line in text.splitlines():
                line = line.strip()
                if self._keep(language, line):
                    self.seen_lines[language].add(line)
                    lines.append(line)
            chunks = chunk_documents(lines, self.max_document_chars)
            documents += chunks
            characters += sum(len(chunk) for chunk in chunks)
            if max_chars is not None and characters >= max_chars:
                break

        self.documents[language] += documents
        record = {**source, "language": language, "documents": len(documents), "characters": characters}
        self.inputs.append(record)
        logger.info("%s (%s): %d %s documents, %d characters", source["name"], source["kind"],
                    len(documents), language, characters)
        return record

    def _check_document_count(self, language: str, documents: list[str]) -> None:
        inputs = [f"{i['name']} ({i['kind']})" for i in self.inputs if i["language"] == language]
        fixes = (f"Add {language} inputs or longer {language} text, or lower max_document_chars "
                 f"(now {self.max_document_chars}) so that the text is cut into more documents")
        if language == "korean":
            fixes += f", or lower min_hangul_share (now {self.min_hangul_share})"
        if not documents:
            raise ValueError(f"no {language} documents are left from the inputs {inputs} after filtering. {fixes}.")
        if len(documents) < MIN_DOCUMENTS_PER_LANGUAGE:
            raise ValueError(
                f"only {len(documents)} {language} document is left from the inputs {inputs} after filtering, "
                f"but the train/validation split needs at least {MIN_DOCUMENTS_PER_LANGUAGE}. {fixes}.")

    def corpus(self) -> Corpus:
        """Return the Corpus, or raise if a language has fewer than two distinct documents."""
        english = _unique(self.documents["english"])
        korean = _unique(self.documents["korean"])
        self._check_document_count("english", english)
        self._check_document_count("korean", korean)
        logger.info("language corpus: %d English documents (%d characters), %d Korean documents (%d characters)",
                    len(english), sum(map(len, english)), len(korean), sum(map(len, korean)))
        return Corpus(english=english, korean=korean, inputs=self.inputs)


# --- offline: Debian packages and pydoc ------------------------------------------------------

def _deb_pattern(name: str, version: str) -> str:
    # apt-get download writes an epoch's colon as %3a: 4:7.4.7 -> libreoffice-help-ko_4%3a7.4.7_all.deb
    return f"{glob.escape(name)}_{glob.escape(version.replace(':', '%3a'))}_*.deb"


def _cached_deb(cache_dir: Path, name: str, version: str) -> Path | None:
    matches = sorted(cache_dir.glob(_deb_pattern(name, version)))
    if len(matches) > 1:
        logger.warning("%d files match %s in %s, using %s", len(matches), _deb_pattern(name, version),
                       cache_dir, matches[0].name)
    return matches[0] if matches else None


def _download_hint(cache_dir: Path, name: str, version: str) -> str:
    return (f"{_LOCAL_SOURCE_HINT}, or place the package file ({_deb_pattern(name, version)}) "
            f"in {cache_dir} by hand.")


def _corrupt_deb_hint(deb: Path) -> str:
    return (f"If {deb} is truncated or corrupt (for example from an interrupted download), delete it "
            "so that the next run downloads it again.")


def _run(command: list[str], cwd: Path, package: str, version: str, hint: str,
         failure_hint: str | None = None) -> str:
    """Run ``command`` and return its stdout, or raise LanguageSourceError with its stderr and a hint.

    A missing program or a timeout gets ``hint``. A non-zero exit status gets ``failure_hint``, or
    ``hint`` when ``failure_hint`` is None.
    """
    command_line = " ".join(command)
    try:
        result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S,
                                check=False)
    except FileNotFoundError as err:
        raise LanguageSourceError(
            f"{command[0]} is not installed, so {package}={version} cannot be read (command: {command_line}). "
            f"This is probably not a Debian-based system. {hint}") from err
    except subprocess.TimeoutExpired as err:
        raise LanguageSourceError(
            f"{command_line} timed out after {COMMAND_TIMEOUT_S} s for package {package}={version}. {hint}") from err
    if result.returncode != 0:
        raise LanguageSourceError(
            f"{command_line} failed with exit status {result.returncode} for package {package}={version}: "
            f"{result.stderr.strip()}. {failure_hint or hint}")
    return result.stdout


def fetch_package(cache_dir: Path, name: str, version: str) -> Path:
    """Return the .deb file of ``name`` at ``version`` in ``cache_dir``, downloading it if missing.

    ``apt-get download`` runs in ``cache_dir``. Run as root it warns that the download is
    unsandboxed, which is harmless here. The package name and version inside the file are checked
    with ``dpkg-deb``, so a wrongly named file in the cache is not read as another package.

    Raises:
        LanguageSourceError: If a command is missing or fails, or the file has other contents.
    """
    cache_dir.mkdir(parents=True, exist_ok=True)
    deb = _cached_deb(cache_dir, name, version)
    if deb is None:
        logger.info("downloading %s=%s into %s", name, version, cache_dir)
        _run(["apt-get", "download", f"{name}={version}"], cache_dir, name, version,
             _download_hint(cache_dir, name, version))
        deb = _cached_deb(cache_dir, name, version)
        if deb is None:
            raise LanguageSourceError(
                f"apt-get download {name}={version} succeeded, but no file matching "
                f"{_deb_pattern(name, version)} is in {cache_dir}. {_download_hint(cache_dir, name, version)}")

    fields = _run(["dpkg-deb", "--field", str(deb), "Package", "Version"], cache_dir, name, version,
                  f"{_LOCAL_SOURCE_HINT}.", failure_hint=_corrupt_deb_hint(deb))
    found = dict(line.split(": ", 1) for line in fields.splitlines() if ": " in line)
    if (found.get("Package"), found.get("Version")) != (name, version):
        raise LanguageSourceError(
            f"{deb} contains package {found.get('Package')} version {found.get('Version')}, "
            f"expected {name} version {version}; delete the file so that it is downloaded again")
    return deb


def _package_layout(name: str) -> PackageLayout:
    if name not in PACKAGE_LAYOUTS:
        raise ValueError(f"unknown language package {name!r}: expected one of {sorted(PACKAGE_LAYOUTS)}, "
                         "the packages whose text files PACKAGE_LAYOUTS lists")
    return PACKAGE_LAYOUTS[name]


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{path} is not valid UTF-8 ({err.reason} at byte {err.start})") from err


def _drop_lines(text: str, prefixes: tuple[str, ...]) -> str:
    if not prefixes:
        return text
    return "\n".join(line for line in text.splitlines() if not line.startswith(prefixes))


def _package_texts(root: Path, layout: PackageLayout) -> Iterator[str]:
    """Yield the text of each page in an unpacked package, in sorted path order.

    Lines that start with one of ``layout.skipped_line_prefixes`` are dropped.
    """
    paths = sorted({path for pattern in layout.patterns for path in root.glob(pattern)})
    if not paths:
        raise LanguageSourceError(f"no files match {layout.patterns} in the unpacked package at {root}; "
                                  "the package layout may have changed in this version")
    for path in paths:
        yield _drop_lines(html_text(_read_text(path)), layout.skipped_line_prefixes)


def _pydoc_texts() -> Iterator[str]:
    """Yield each pydoc help topic with one line per paragraph.

    The topics are wrapped at about 80 columns, so each paragraph's line breaks become spaces.
    """
    for name in sorted(pydoc_topics.topics):
        paragraphs = re.split(r"\n\s*\n", pydoc_topics.topics[name])
        yield "\n".join(" ".join(paragraph.split()) for paragraph in paragraphs)


def _add_package(builder: _CorpusBuilder, cache_dir: Path, name: str, version: str) -> None:
    layout = _package_layout(name)
    deb = fetch_package(cache_dir, name, version)
    source = {"name": name, "kind": "deb", "version": version, "file": deb.name, "sha256": file_sha256(deb)}
    with tempfile.TemporaryDirectory(prefix=f"{name}-") as tmp:
        _run(["dpkg", "-x", str(deb), tmp], cache_dir, name, version, f"{_LOCAL_SOURCE_HINT}.",
             failure_hint=_corrupt_deb_hint(deb))
        builder.add(layout.language, _package_texts(Path(tmp), layout), source)


def offline_corpus(cache_dir: Path, packages: dict[str, str], max_document_chars: int, min_hangul_share: float,
                   include_python_docs: bool = True) -> Corpus:
    """Build the corpus from Debian documentation packages and, optionally, Python's pydoc topics.

    Args:
        cache_dir: Folder for the downloaded .deb files. A file already there is not downloaded again.
        packages: Package name -> exact Debian version. Names must be keys of ``PACKAGE_LAYOUTS``,
            which also sets each package's language. ``DEFAULT_PACKAGES`` is the default set.
        max_document_chars: Maximum document length in characters.
        min_hangul_share: Minimum Hangul share of a Korean line, in (0, 1].
        include_python_docs: Add English from ``pydoc_data.topics`` of the running Python. Its text
            changes between Python versions, so the version is recorded in ``inputs``.

    Raises:
        LanguageSourceError: If a package cannot be downloaded or unpacked.
        ValueError: If a package name is unknown or a language ends up with fewer than two documents.
    """
    cache_dir = Path(cache_dir)
    for name in packages:
        _package_layout(name)  # reject an unknown name before downloading anything
    builder = _CorpusBuilder(max_document_chars, min_hangul_share)
    for name, version in packages.items():
        _add_package(builder, cache_dir, name, version)
    if include_python_docs:
        source = {"name": "pydoc_data.topics", "kind": "python", "version": platform.python_version(),
                  "sha256": file_sha256(pydoc_topics.__file__)}
        builder.add("english", _pydoc_texts(), source)
    return builder.corpus()


# --- local files -----------------------------------------------------------------------------

def _jsonl_texts(path: Path) -> Iterator[str]:
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{number}: invalid JSON ({err.msg}); expected one object per line") from err
            if not isinstance(record, dict) or not isinstance(record.get("text"), str):
                raise ValueError(f"{path}:{number}: expected a JSON object with a string field 'text'")
            yield record["text"]


def _txt_texts(path: Path) -> Iterator[str]:
    """Yield the documents of a txt file: blank lines separate them, other line breaks are spaces."""
    for block in re.split(r"\n\s*\n", _read_text(path)):
        if block.strip():
            yield " ".join(block.split())


def _local_texts(path: Path) -> Iterator[str]:
    if path.suffix == ".jsonl":
        texts = _jsonl_texts(path)
    elif path.suffix == ".txt":
        texts = _txt_texts(path)
    else:
        raise ValueError(f"unsupported language file {path}: expected a .jsonl or .txt file")
    for text in texts:
        yield strip_markup(text)


def local_corpus(english_files: list[Path], korean_files: list[Path], max_document_chars: int,
                 min_hangul_share: float) -> Corpus:
    """Build the corpus from jsonl files (a ``text`` field per line) and txt files.

    Raises:
        FileNotFoundError: If a listed file does not exist.
        ValueError: If a file has an unsupported suffix or an invalid line, or a language ends up
            with fewer than two documents.
    """
    files = {"english": [Path(p) for p in english_files], "korean": [Path(p) for p in korean_files]}
    for language, paths in files.items():
        for path in paths:
            if not path.is_file():
                raise FileNotFoundError(f"{path} not found; it is listed under data.language.local.{language}. "
                                        "Fix the path or remove it from that list.")
    builder = _CorpusBuilder(max_document_chars, min_hangul_share)
    for language, paths in files.items():
        for path in paths:
            source = {"name": str(path), "kind": "file", "version": None, "sha256": file_sha256(path)}
            builder.add(language, _local_texts(path), source)
    return builder.corpus()


# --- Hugging Face hub ------------------------------------------------------------------------

def _hub_texts(spec: dict, digest) -> Iterator[str]:
    """Yield the cleaned text of each streamed record and feed the raw text to ``digest``."""
    import datasets

    path, text_field = spec["path"], spec.get("text_field", "text")
    dataset = datasets.load_dataset(path, name=spec.get("name"), split=spec.get("split", "train"),
                                    revision=spec.get("revision"), streaming=True)
    for record in dataset:
        if not isinstance(record.get(text_field), str):
            raise ValueError(f"dataset {path} has no string field {text_field!r} (fields: {sorted(record)}); "
                             "set text_field in its spec")
        digest.update(record[text_field].encode("utf-8") + b"\0")
        yield strip_markup(record[text_field])


def _hub_error_message(language: str, spec: dict, err: OSError) -> str:
    message = (f"cannot read the {language} dataset {spec['path']} (config {spec.get('name')}, revision "
               f"{spec.get('revision')}) from the Hugging Face hub: {type(err).__name__}: {err}.")
    offline = offline_sentence(DATASET_OFFLINE_VARIABLES, "datasets", download="the dataset")
    if offline:
        message += f" {offline}"
    return (f"{message} For text without the hub, set data.language.source: offline (Debian documentation "
            "packages) or local (jsonl or txt files under data.language.local)")


def hub_corpus(english: dict, korean: dict, max_chars: dict[str, int], max_document_chars: int,
               min_hangul_share: float) -> Corpus:
    """Build the corpus by streaming one Hugging Face dataset per language.

    Args:
        english, korean: Dataset specs with keys ``path`` (a hub id or a local folder of data
            files), ``name`` (config, default None), ``split`` (default "train"), ``text_field``
            (default "text") and ``revision`` (default None, the latest).
        max_chars: Characters to keep per language, keyed "english" and "korean". Records are read
            in stream order until a language has that many characters.
        max_document_chars: Maximum document length in characters.
        min_hangul_share: Minimum Hangul share of a Korean line, in (0, 1].

    The ``sha256`` of a hub input is the hash of the raw texts read, each followed by a NUL byte,
    and its ``version`` is the spec's ``revision``. Without a revision the text can change whenever
    the dataset is updated on the hub, so a warning is logged.

    Raises:
        LanguageSourceError: If a dataset cannot be reached or found.
        ValueError: If a spec or ``max_chars`` misses a key, or a language ends up with fewer than two
            documents.
    """
    specs = {"english": english, "korean": korean}
    for language, spec in specs.items():
        if "path" not in spec:
            raise ValueError(f"the {language} dataset spec {spec} has no 'path'; expected e.g. "
                             "{'path': 'HuggingFaceFW/fineweb-edu', 'name': 'sample-10BT', 'split': 'train'}")
        if language not in max_chars:
            raise ValueError(f"max_chars {max_chars} has no {language!r} entry; expected a character count per language")

    builder = _CorpusBuilder(max_document_chars, min_hangul_share)
    for language, spec in specs.items():
        if spec.get("revision") is None:
            logger.warning("no revision is set for the %s dataset %s, so the latest version is read and the "
                           "text may change between runs. Set data.language.hub.%s.revision to a commit to "
                           "pin it.", language, spec["path"], language)
        digest = sha256()
        source = {"name": spec["path"], "kind": "hub", "version": spec.get("revision"),
                  "config": spec.get("name"), "split": spec.get("split", "train")}
        try:
            record = builder.add(language, _hub_texts(spec, digest), source, max_chars=max_chars[language])
        except OSError as err:  # connection, offline-mode and not-found errors of datasets and huggingface_hub
            raise LanguageSourceError(_hub_error_message(language, spec, err)) from err
        record["sha256"] = digest.hexdigest()
    return builder.corpus()
