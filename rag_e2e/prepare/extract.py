"""One input file -> its cleaned documents (title, text), per format: .txt, .md, .html/.htm, .pdf, .jsonl.

A file that cannot be read (a damaged PDF, a page with no main text) raises `DataFormatError` naming it; bad records
of a JSONL file are returned beside the good ones, so one bad line does not lose the rest of the file.
"""

from __future__ import annotations

import codecs
import contextlib
import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from rag_e2e.data.corpus import json_field
from rag_e2e.errors import DataFormatError
from rag_e2e.prepare.clean import clean_line, clean_text, drop_page_boilerplate, markdown_title

FORMATS = {".txt": "text", ".md": "markdown", ".markdown": "markdown", ".html": "html", ".htm": "html",
           ".pdf": "pdf", ".jsonl": "jsonl"}
_BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"), (codecs.BOM_UTF8, "utf-8-sig"),
         (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))  # UTF-32 LE starts like UTF-16 LE
_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?([A-Za-z0-9_.:-]+)""", re.I)


@dataclass(frozen=True)
class Document:
    """A cleaned document. `doc_id` is unique in the corpus and stable across runs; `source` is its file's key."""

    doc_id: str
    title: str
    text: str
    source: str


@dataclass
class Extraction:
    """What one file gave: its documents, the records skipped inside it, and the text encoding used."""

    documents: list[Document]
    skipped: list[DataFormatError] = field(default_factory=list)  # per-record problems (JSONL lines)
    encoding: str | None = None  # None for binary formats (PDF)


def file_format(path: Path) -> str | None:
    """The format name of a supported file ("text", "markdown", "html", "pdf", "jsonl"), None otherwise."""
    return FORMATS.get(path.suffix.lower())


def extract_file(path: Path, key: str) -> Extraction:
    """Read, parse and clean one file.

    Args:
        path: the file.
        key: its stable name relative to the input it was found under ("docs/a.md"); documents' ids derive from it.

    Raises:
        DataFormatError: the file is unreadable, damaged, or holds no text after cleaning.
    """
    fmt = file_format(path)
    if fmt is None:
        raise DataFormatError(path, None, None, f"unsupported file type '{path.suffix}'")
    if fmt == "pdf":
        return _pdf(path, key)
    data = _read_bytes(path)
    if fmt == "jsonl":
        return _jsonl(path, key, data)
    text, encoding = decode_bytes(data, html=fmt == "html")
    if fmt == "html":
        title, body = _html(path, text)
    elif fmt == "markdown":
        title, body = markdown_title(text), clean_text(text, markdown=True)
    else:
        title, body = "", clean_text(text)
    if not body:
        raise DataFormatError(path, None, None, "no text after cleaning")
    return Extraction([Document(key, title or clean_line(path.stem), body, key)], encoding=encoding)


def decode_bytes(data: bytes, *, html: bool = False) -> tuple[str, str]:
    """Decode text of unknown encoding; never fails.

    Order: a byte-order mark; UTF-8; (HTML) the `<meta charset>` it declares; charset_normalizer's guess where
    installed; cp1252; latin-1 (which decodes any bytes).

    charset_normalizer guesses exotic code pages for short Western text ("café" as cp1006): its guess wins only when
    it found language evidence (coherence > 0) or cp1252 cannot decode the bytes.

    Returns:
        (text, the codec name used).
    """
    for bom, codec in _BOMS:
        if data.startswith(bom):
            with contextlib.suppress(UnicodeDecodeError):
                return data.decode(codec), codec
    with contextlib.suppress(UnicodeDecodeError):
        return data.decode("utf-8"), "utf-8"
    declared = _META_CHARSET.search(data[:4096]) if html else None
    if declared:
        with contextlib.suppress(LookupError, UnicodeDecodeError):
            codec = codecs.lookup(declared.group(1).decode("ascii")).name
            return data.decode(codec), codec
    cp1252 = None
    with contextlib.suppress(UnicodeDecodeError):
        cp1252 = data.decode("cp1252")
    guess = _guess_encoding(data)
    if guess is not None and (cp1252 is None or guess[2] > 0):
        return guess[0], guess[1]
    if cp1252 is not None:
        return cp1252, "cp1252"
    return data.decode("latin-1"), "latin-1"


def _guess_encoding(data: bytes) -> tuple[str, str, float] | None:
    """(text, codec, coherence) from charset_normalizer, or None when it is not installed or finds nothing.

    Single-byte Latin code pages decode most Western text to equally plausible results (cp1250 turns "£" into "Ł" and
    reads just as well to it); among the guesses tied with the best, cp1252, the WHATWG default for legacy text, wins.
    """
    try:
        import charset_normalizer
    except ImportError:
        return None
    matches = list(charset_normalizer.from_bytes(data))
    if not matches:
        return None
    best = matches[0]
    for m in matches:
        tied = abs(m.chaos - best.chaos) < 1e-9 and abs(m.coherence - best.coherence) < 1e-9
        if tied and "cp1252" in m.could_be_from_charset:
            return data.decode("cp1252"), "cp1252", m.coherence
    return str(best), best.encoding, best.coherence


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise DataFormatError(path, None, None, f"cannot read: {e.strerror or e}") from None


def _html(path: Path, html: str) -> tuple[str, str]:
    """(title, main text) of a web page: trafilatura drops navigation, headers, footers and comments."""
    import trafilatura

    try:
        doc = trafilatura.bare_extraction(html, with_metadata=True, include_comments=False)
    except Exception as e:  # noqa: BLE001 - a parser on arbitrary markup may raise anything; report, never crash
        raise DataFormatError(path, None, None, f"cannot parse HTML ({type(e).__name__}: {e})") from None
    if doc is None or not (doc.text or "").strip():
        raise DataFormatError(path, None, None, "no main text found in the HTML page")
    return clean_line(doc.title or ""), clean_text(doc.text, lines_are_paragraphs=True)


def _pdf(path: Path, key: str) -> Extraction:
    """A PDF's pages as one document, running headers/footers and page numbers removed.

    The title is the PDF's metadata title, else the file stem.
    """
    import pypdf

    try:
        with _quiet("pypdf"):
            reader = pypdf.PdfReader(path, strict=False)
            if reader.is_encrypted and not reader.decrypt(""):
                raise DataFormatError(path, None, None, "encrypted PDF (a password is needed)")
            pages = [page.extract_text() or "" for page in reader.pages]
            meta_title = reader.metadata.title if reader.metadata is not None else None
    except DataFormatError:
        raise
    except OSError as e:
        raise DataFormatError(path, None, None, f"cannot read: {e.strerror or e}") from None
    except Exception as e:  # noqa: BLE001 - pypdf raises many types (PdfReadError, KeyError, ...) on broken files
        raise DataFormatError(path, None, None, f"damaged PDF ({type(e).__name__}: {e})") from None
    text = clean_text("\n".join(drop_page_boilerplate(pages)), dehyphenate=True)
    if not text:
        raise DataFormatError(path, None, None, f"no extractable text in {len(pages)} PDF page(s) (scanned?)")
    title = clean_line(str(meta_title)) if meta_title else ""
    return Extraction([Document(key, title or clean_line(path.stem), text, key)])


def _jsonl(path: Path, key: str, data: bytes) -> Extraction:
    """One document per line: `text` (str), optional `title` (str) and `id` (str or int; default: the line number).

    A document's id is "<key>:<id>". Blank lines are skipped; a bad line is reported, not fatal.
    """
    docs: list[Document] = []
    skipped: list[DataFormatError] = []
    first_line: dict[str, int] = {}
    for line_no, record in _json_records(path, data, skipped):
        try:
            text = clean_text(json_field(path, line_no, record, "text", str, "a string"))
            title = clean_line(json_field(path, line_no, record, "title", str, "a string", default=""))
            rid = str(json_field(path, line_no, record, "id", (str, int), "a string or integer", default=line_no))
        except DataFormatError as err:
            skipped.append(err)
            continue
        if not text:
            skipped.append(DataFormatError(path, line_no, "text", "no text after cleaning"))
        elif rid in first_line:
            message = f"duplicate id '{rid}' (first on line {first_line[rid]})"
            skipped.append(DataFormatError(path, line_no, "id", message))
        else:
            first_line[rid] = line_no
            docs.append(Document(f"{key}:{rid}", title or clean_line(path.stem), text, key))
    if not docs:
        raise DataFormatError(path, None, None, f"no usable documents ({len(skipped)} bad line(s)"
                              + (f"; first: {skipped[0]}" if skipped else "") + ")")
    return Extraction(docs, skipped, encoding="utf-8")


def _json_records(path: Path, data: bytes, skipped: list[DataFormatError]) -> Iterator[tuple[int, dict]]:
    """(line, object) per non-blank line; lines that are not UTF-8 JSON objects go to `skipped`."""
    for line_no, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as e:
            skipped.append(DataFormatError(path, line_no, None, f"not valid UTF-8 ({e.reason})"))
            continue
        except json.JSONDecodeError as e:
            skipped.append(DataFormatError(path, line_no, None, f"invalid JSON: {e.msg} (column {e.colno})"))
            continue
        if not isinstance(record, dict):
            skipped.append(DataFormatError(path, line_no, None, f"expected a JSON object, got {type(record).__name__}"))
            continue
        yield line_no, record


@contextlib.contextmanager
def _quiet(logger_name: str) -> Iterator[None]:
    """Silence a library's warnings while it reads one file: the damage is reported once, by us, by file name."""
    logger = logging.getLogger(logger_name)
    level = logger.level
    logger.setLevel(logging.ERROR + 10)
    try:
        yield
    finally:
        logger.setLevel(level)
