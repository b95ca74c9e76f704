"""Corpus ingestion: read whatever a user has, cut it into passages a model can read.

The output is the BEIR corpus layout plus the source document id, one JSON line per
passage: ``{"_id", "title", "text", "doc_id"}``. Everything streams: documents are read,
chunked and written one at a time, so memory stays flat whatever the corpus size (only a
set of ids and of text digests is kept, to catch duplicates).
"""

from __future__ import annotations

import csv
import hashlib
import itertools
import logging
import re
import sys
import time
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple

from tqdm.auto import tqdm

from genq.io import (
    DataError,
    ErrorTally,
    GenqError,
    atomic_write,
    describe_error,
    dumps_line,
    find_lone_surrogate,
    input_lines,
    iter_jsonl,
    open_input,
    parse_json_text,
    refuse_same_path,
    require_file,
)
from genq.locks import one_writer
from genq.models import resolve_model

logger = logging.getLogger(__name__)

FORMATS = ("auto", "beir", "jsonl", "json", "csv", "tsv", "txt", "folder", "hf", "parquet")
TXT_MODES = ("auto", "line", "paragraph")
DEFAULT_MAX_TOKENS = 350
DEFAULT_OVERLAP = 50
DEFAULT_TOKENIZER = "BeIR/query-gen-msmarco-t5-base-v1"
WORDS_TOKENIZER = "words"

ID_CANDIDATES = ("_id", "id", "doc_id", "docid", "pid", "passage_id")
TEXT_CANDIDATES = ("text", "contents", "content", "body", "passage", "document")
TITLE_CANDIDATES = ("title", "heading", "name")

_WHITESPACE = re.compile(r"\s+")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")
_SENTENCE_END = re.compile(r"(?<=[.!?;:\u3002])\s+")
_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+(.+?)\s*#*\s*$")


class Document(NamedTuple):
    """One source document before chunking; ``where`` is "file:line" for error messages."""

    id: str
    title: str
    text: str
    where: str


def normalize_whitespace(text: str) -> str:
    """NFC, control characters removed, whitespace runs collapsed to one space."""
    text = unicodedata.normalize("NFC", text)
    text = _CONTROL.sub(" ", text)
    return _WHITESPACE.sub(" ", text).strip()


# --------------------------------------------------------------------------- readers


def detect_format(path: Path) -> str:
    """Guess the reader from the path: folder layout, then the file suffix."""
    if path.is_dir():
        if (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists() or (
            path / "state.json"
        ).exists():
            return "hf"
        if (path / "corpus.jsonl").exists():
            return "beir"
        return "folder"
    suffixes = [s.lower() for s in path.suffixes]
    suffix = suffixes[-1] if suffixes else ""
    if suffix in (".gz", ".bz2", ".xz") and len(suffixes) > 1:
        suffix = suffixes[-2]
    table = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv", ".tsv": "tsv",
             ".tab": "tsv", ".txt": "txt", ".md": "txt", ".parquet": "parquet"}
    if suffix in table:
        return table[suffix]
    raise DataError(path, f"cannot tell the format from the suffix {suffix or '(none)'!r}",
                    f"pass --format, one of: {', '.join(FORMATS[1:])}")


def _pick_field(available: Iterable[str], wanted: str | None, candidates: tuple[str, ...]) -> str | None:
    available = list(available)
    if wanted:
        return wanted if wanted in available else None
    for name in candidates:
        if name in available:
            return name
    return None


@dataclass
class FieldMap:
    """Which record fields hold id, text and title; unset ones are detected from the first record."""

    id_field: str | None = None
    text_field: str | None = None
    title_field: str | None = None
    numbered: bool = False  # no id column: a record's id is its row number (CSV/TSV)
    _resolved: bool = False

    def resolve(self, keys: Iterable[str], path: Path, line: int | None) -> None:
        keys = list(keys)
        explicit_id, explicit_text = self.id_field, self.text_field
        id_field = _pick_field(keys, self.id_field, ID_CANDIDATES)
        text_field = _pick_field(keys, self.text_field, TEXT_CANDIDATES)
        if text_field is None:
            hint = f"--text-field {explicit_text!r} is not among" if explicit_text else "no text field among"
            raise DataError(path, f"{hint} the fields {keys}",
                            "pass --text-field NAME naming the field that holds the passage text", line)
        if id_field is None:
            hint = f"--id-field {explicit_id!r} is not among" if explicit_id else "no id field among"
            raise DataError(path, f"{hint} the fields {keys}",
                            "pass --id-field NAME naming a unique id field", line)
        self.id_field, self.text_field = id_field, text_field
        self.title_field = _pick_field(keys, self.title_field, TITLE_CANDIDATES) or self.title_field
        self._resolved = True

    def extract(self, record: dict, path: Path, line: int | None, number: int | None = None) -> Document:
        if not self._resolved:
            self.resolve(record.keys(), path, line)
        where = f"{path}:{line}" if line is not None else str(path)
        doc_id = str(number) if self.numbered else record.get(self.id_field)
        if doc_id is None or (isinstance(doc_id, str) and not doc_id.strip()):
            raise DataError(path, f"record has no id in field {self.id_field!r}",
                            "give every record an id, or pass --on-error skip to drop such records", line)
        if self.text_field not in record:
            raise DataError(path, f"record has no text field {self.text_field!r}",
                            "give every record a text, or pass --on-error skip to drop such records", line)
        return Document(_id_text(doc_id, self.id_field, path, line),
                        _field_text(record.get(self.title_field) if self.title_field else "", "title",
                                    self.title_field, path, line),
                        _field_text(record.get(self.text_field), "text", self.text_field, path, line), where)


# characters that end a line in some reader (TREC run files, `\n`-split query files, str.splitlines) or a C string
_ID_BREAKERS = re.compile("[\x00-\x1f\x7f\x85\u2028\u2029]")


def _id_text(value, field_name: str, path: Path, line: int | None) -> str:
    """An id as text: a string or a whole number; anything else would become an id nobody meant.

    An empty id, or one holding a tab, a line break (U+0085, U+2028, U+2029 included) or
    NUL, would break the TREC runs and TSV files genq writes with it: refused here, where the
    line is known.
    """
    if isinstance(value, str):
        text = value.strip()
        if not text:
            raise DataError(path, f"the id in field {field_name!r} is empty",
                            "give every record an id, or pass --on-error skip to drop such records", line)
        breaker = _ID_BREAKERS.search(text)
        if breaker:
            raise DataError(path, f"the id {text[:40]!r} holds the control character U+{ord(breaker.group()):04X}, "
                                  "which would break the run and TSV files written with it",
                            "remove tabs, line breaks and NUL from ids, or pass --on-error skip", line)
        return text
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    raise DataError(path, f"the id in field {field_name!r} is a {type(value).__name__} ({str(value)[:40]}), "
                          "not a string or a whole number",
                    "give every record a string or integer id, or pass --on-error skip to drop such records", line)


def _field_text(value, what: str, field_name: str | None, path: Path, line: int | None) -> str:
    """A text or title field: a string (or missing/null, read as empty); numbers, lists and objects are refused."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    raise DataError(path, f"the {what} in field {field_name!r} is a {type(value).__name__}, not a string",
                    f"store the {what} as a string, point --{what}-field at another field, or pass --on-error skip",
                    line)


def _decoded_lines(path: Path, errors: ErrorTally) -> Iterator[str]:
    """Yield text lines, reporting non-UTF-8 lines by number (skipped ones become empty)."""
    for line_number, raw in enumerate(input_lines(path), start=1):
        try:
            yield raw.decode("utf-8-sig" if line_number == 1 else "utf-8")
        except UnicodeDecodeError as exc:
            errors.report(DataError(path, f"bytes that are not UTF-8 ({exc.reason} at byte {exc.start})",
                                    "re-encode the file as UTF-8, e.g. `iconv -f latin1 -t utf-8`", line_number))
            yield "\n"


def _read_jsonl(path: Path, fields: FieldMap, errors: ErrorTally) -> Iterator[Document]:
    for line, record in iter_jsonl(path, errors):
        try:
            yield fields.extract(record, path, line)
        except DataError as exc:
            errors.report(exc)


def _read_json_array(path: Path, fields: FieldMap, errors: ErrorTally) -> Iterator[Document]:
    import json

    require_file(path, "JSON file")
    try:
        with open_input(path) as handle:
            data = parse_json_text(handle.read().decode("utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise DataError(path, f"bytes that are not UTF-8 at byte {exc.start}", "re-encode the file as UTF-8") from None
    except json.JSONDecodeError as exc:
        raise DataError(path, f"malformed JSON ({exc.msg}, column {exc.colno})",
                        "fix the JSON; for one record per line use a .jsonl file", exc.lineno) from None
    except ValueError as exc:
        raise DataError(path, f"malformed JSON ({exc})", "write plain JSON: finite numbers, shallow nesting") from None
    if (where := find_lone_surrogate(data)) is not None:
        raise DataError(path, f"{where} holds a lone UTF-16 surrogate escape (like \"\\ud800\"), which is not text",
                        "fix or drop that value")
    if isinstance(data, dict):
        # {"id": {"title":..., "text":...}} or {"data": [...]}
        lists = [v for v in data.values() if isinstance(v, list)]
        if len(lists) == 1:
            data = lists[0]
        elif all(isinstance(v, dict) for v in data.values()):
            data = [{"_id": k, **v} for k, v in data.items()]
    if not isinstance(data, list):
        raise DataError(path, f"expected a JSON array of objects, found {type(data).__name__}",
                        "write the corpus as [{\"_id\": ..., \"text\": ...}, ...]")
    if not data:
        raise DataError(path, "the JSON array is empty", "pass a file with at least one record")
    for index, record in enumerate(data, start=1):
        if not isinstance(record, dict):
            errors.report(DataError(path, f"array item {index} is a {type(record).__name__}, not an object",
                                    "every item must be an object with id and text fields"))
            continue
        try:
            yield fields.extract(record, path, None)._replace(where=f"{path}[item {index}]")
        except DataError as exc:
            errors.report(DataError(path, f"array item {index}: {exc.problem}", exc.fix))


def _read_delimited(path: Path, fields: FieldMap, errors: ErrorTally, delimiter: str) -> Iterator[Document]:
    require_file(path, "CSV/TSV file")
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    name = "TSV" if delimiter == "\t" else "CSV"
    lines = _decoded_lines(path, errors)
    # strict: an unterminated quote is an error at its line, not the rest of the file swallowed into one cell
    reader = csv.DictReader(lines, delimiter=delimiter, strict=True)
    try:
        header = reader.fieldnames
    except csv.Error as exc:
        raise DataError(path, f"the header row is not valid {name} ({exc})", "fix the quoting of the first line",
                        1) from None
    if not header:
        raise DataError(path, "has no header row", "the first line must name the columns, e.g. id,title,text", 1)
    _resolve_columns(header, fields, path, delimiter)
    any_rows = False
    number = 0
    row_start = 1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            problem = ("a quote opened in the row starting here is never closed, so the rest of the file would "
                       "be one cell" if "unexpected end of data" in str(exc) else f"malformed {name} ({exc})")
            errors.report(DataError(path, problem,
                                    "close the quote (a quote inside a quoted cell is written twice: \"\")",
                                    row_start + 1))
            if errors.on_error == "raise":
                return
            row_start = reader.line_num
            continue
        line, row_start = row_start + 1, reader.line_num
        if not any(v for k, v in row.items() if k is not None):
            continue
        if None in row or any(v is None for v in row.values()):
            found = len(header) + len(row.get(None) or []) - sum(v is None for v in row.values())
            errors.report(DataError(path, f"row has {found} columns, the header has {len(header)}",
                                    "quote cells that contain the delimiter or a line break, or pass --on-error "
                                    "skip to drop such rows", line))
            continue
        any_rows = True
        number += 1
        try:
            yield fields.extract(row, path, line, number)
        except DataError as exc:
            errors.report(exc)
    if not any_rows and errors.skipped == 0:
        raise DataError(path, "has a header but no rows", "add at least one row")


def _looks_like_data(cell: str) -> bool:
    """A first-line cell that is a value rather than a column name: a number, or prose."""
    cell = cell.strip()
    return bool(re.fullmatch(r"[-+]?\d+([.,]\d+)?", cell)) or len(cell) > 40 or cell.count(" ") >= 3


def _resolve_columns(header: list[str], fields: FieldMap, path: Path, delimiter: str) -> None:
    """Which CSV/TSV columns hold text, id and title; what cannot be told is named with the option that says it.

    A file without an id column is numbered by row (said once); a single column named like an
    id (``plant_id``) is taken as the id. Columns left unread are named, with the option that
    would read them.
    """
    for option, wanted in (("--text-field", fields.text_field), ("--id-field", fields.id_field),
                           ("--title-field", fields.title_field)):
        if wanted and wanted not in header:
            raise DataError(path, f"{option} {wanted!r} is not a column of the header row {header}",
                            f"pass {option} naming one of the columns", 1)
    text_field = _pick_field(header, fields.text_field, TEXT_CANDIDATES)
    if text_field is None:
        if any(_looks_like_data(cell) for cell in header):
            raise DataError(path, f"the first line {header} does not look like a header row naming the "
                                  "columns: it looks like data",
                            f"add a header line (e.g. id{delimiter}title{delimiter}text), or pass --text-field "
                            "(and --id-field) naming columns of the first line", 1)
        raise DataError(path, f"no column of {header} is known to hold the passage text (genq looks for "
                              f"{', '.join(TEXT_CANDIDATES)})", "pass --text-field NAME naming the text column", 1)
    id_field = _pick_field(header, fields.id_field, ID_CANDIDATES)
    if id_field is None:
        id_like = [c for c in header if c != text_field and re.search(r"(^|[_\W])id$|[a-z]Id$|ID$", c.strip())]
        if len(id_like) == 1:
            id_field = id_like[0]
            logger.warning("%s: using the column %r as the document id (pass --id-field to choose another)",
                           path, id_field)
        else:
            fields.numbered = True
            logger.warning("%s: no id column among %s: documents are numbered by row (1 = the first row after the "
                           "header); pass --id-field NAME to use a column", path, header)
    title_field = _pick_field(header, fields.title_field, TITLE_CANDIDATES)
    fields.id_field, fields.text_field, fields.title_field = id_field, text_field, title_field
    fields._resolved = True
    unused = [c for c in header if c and c not in (id_field, text_field, title_field)]
    if unused:
        fix = f"pass --title-field {unused[0]} to read it as the title" if title_field is None else \
            "only one title and one text column are read"
        logger.warning("%s: column(s) %s not read (%s)", path, ", ".join(unused), fix)


def _read_txt(path: Path, errors: ErrorTally, mode: str) -> Iterator[Document]:
    require_file(path, "text file")
    if mode == "auto":
        mode = "line"
        for line in _decoded_lines(path, ErrorTally("skip")):
            if not line.strip():
                mode = "paragraph"
                break
    stem = path.stem
    if mode == "line":
        number = 0
        for line_number, line in enumerate(_decoded_lines(path, errors), start=1):
            if line.strip():
                number += 1
                yield Document(f"{stem}-{number}", "", line, f"{path}:{line_number}")
        return
    number, buffer, first_line = 0, [], 0
    for line_number, line in enumerate(_decoded_lines(path, errors), start=1):
        if line.strip():
            if not buffer:
                first_line = line_number
            buffer.append(line)
        elif buffer:
            number += 1
            yield Document(f"{stem}-{number}", "", "".join(buffer), f"{path}:{first_line}")
            buffer = []
    if buffer:
        number += 1
        yield Document(f"{stem}-{number}", "", "".join(buffer), f"{path}:{first_line}")


def _title_from_file(path: Path, text: str) -> tuple[str, str]:
    """Title from the first Markdown heading (removed from the text), else from the file name."""
    lines = text.splitlines()
    for index, line in enumerate(lines[:20]):
        if not line.strip():
            continue
        match = _HEADING.match(line)
        if match:
            return match.group(1), "\n".join(lines[:index] + lines[index + 1:])
        break
    return re.sub(r"[_\-]+", " ", path.stem).strip(), text


FOLDER_SUFFIXES = (".txt", ".md", ".markdown")


def _read_folder(path: Path, errors: ErrorTally) -> Iterator[Document]:
    everything = sorted(p for p in path.rglob("*") if p.is_file()
                        and not any(part.startswith(".") for part in p.relative_to(path).parts))
    files = [p for p in everything if p.suffix.lower() in FOLDER_SUFFIXES]
    others = [p for p in everything if p.suffix.lower() not in FOLDER_SUFFIXES]
    if others:  # every file is read or named: a .jsonl or .csv beside the documents is not silently left out
        names = ", ".join(p.relative_to(path).as_posix() for p in others[:5]) + (", ..." if len(others) > 5 else "")
        logger.warning("%s: %d file(s) that are not .txt or .md are not read: %s (a folder input reads .txt and .md "
                       "documents; pass a JSONL, CSV or other corpus file on its own)", path, len(others), names)
    if not files:
        raise DataError(path, "folder holds no .txt or .md files"
                        + (f" ({len(others)} other file(s), e.g. {others[0].name})" if others else ""),
                        "point at a folder of .txt/.md documents, or pass a corpus file on its own")
    for file in files:
        try:
            text = file.read_bytes().decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            errors.report(DataError(file, f"bytes that are not UTF-8 at byte {exc.start}",
                                    "re-encode the file as UTF-8, e.g. `iconv -f latin1 -t utf-8`"))
            continue
        title, body = _title_from_file(file, text)
        yield Document(file.relative_to(path).with_suffix("").as_posix(), title, body, str(file))


def _read_hf(path: Path, fields: FieldMap, errors: ErrorTally, fmt: str, split: str | None) -> Iterator[Document]:
    import datasets

    try:
        if fmt == "parquet":
            dataset = datasets.load_dataset("parquet", data_files=str(path), split="train")
        else:
            dataset = datasets.load_from_disk(str(path))
    except Exception as exc:  # datasets raises many types for unreadable input
        raise DataError(path, f"could not be opened as a Hugging Face dataset ({exc})",
                        "save it with Dataset.save_to_disk, or pass --format for another reader") from None
    if isinstance(dataset, datasets.DatasetDict):
        names = list(dataset.keys())
        chosen = split or ("train" if "train" in names else names[0] if len(names) == 1 else None)
        if chosen not in names:
            raise DataError(path, f"holds splits {names}", "pass --split NAME to choose one")
        dataset = dataset[chosen]
    if len(dataset) == 0:
        raise DataError(path, "the dataset has no rows", "pass a dataset with at least one row")
    fields.resolve(dataset.column_names, path, None)
    for index, row in enumerate(dataset):
        try:
            yield fields.extract(row, path, None)._replace(where=f"{path}[row {index}]")
        except DataError as exc:
            errors.report(DataError(path, f"row {index}: {exc.problem}", exc.fix))


def check_input(path: str | Path, format: str = "auto") -> str:
    """The input exists and its first line looks like the format it is read as; returns that format.

    Runs before any tokenizer or model is loaded, so a wrong input is named as such instead
    of surfacing as a model error, and a JSONL file read as CSV is called JSONL rather than
    "a CSV without a text column".
    """
    path = Path(path)
    if not path.exists():
        raise DataError(path, "does not exist", "check the corpus path")
    if format not in FORMATS:
        raise GenqError(f"unknown format {format!r}; choose one of {', '.join(FORMATS)}")
    fmt = detect_format(path) if format == "auto" else format
    if not path.is_file() or path.suffix.lower() in (".bz2", ".xz", ".parquet"):
        return fmt
    try:
        with open_input(path) as handle:
            head = handle.read(1 << 16).lstrip(b"\xef\xbb\xbf").lstrip()
    except (OSError, EOFError) as exc:  # a truncated or corrupt gzip file
        raise DataError(path, f"cannot be read ({describe_error(exc)})",
                        "check the file; a .gz file must be complete gzip data") from None
    first = head[:1]
    looks_json = first in (b"{", b"[")
    if fmt in ("csv", "tsv", "txt") and first == b"{" and head.split(b"\n", 1)[0].rstrip().endswith(b"}"):
        raise DataError(path, f"is read as {fmt.upper()} but its first line is a JSON object: it looks like JSONL",
                        "pass --format jsonl, or leave --format auto for a .jsonl file", 1)
    if fmt in ("jsonl", "json", "beir") and head and not looks_json:
        raise DataError(path, f"is read as {fmt.upper()} but does not start with a JSON object or array",
                        "pass the --format it is written in (csv, tsv, txt, ...)", 1)
    return fmt


def iter_documents(
    path: str | Path,
    format: str = "auto",
    id_field: str | None = None,
    text_field: str | None = None,
    title_field: str | None = None,
    txt_mode: str = "auto",
    split: str | None = None,
    errors: ErrorTally | None = None,
) -> Iterator[Document]:
    """Stream the documents of any supported corpus, refusing (or skipping) duplicate ids."""
    path = Path(path)
    errors = errors or ErrorTally()
    if not path.exists():
        raise DataError(path, "does not exist", "check the corpus path")
    if format not in FORMATS:
        raise GenqError(f"unknown format {format!r}; choose one of {', '.join(FORMATS)}")
    fmt = detect_format(path) if format == "auto" else format
    if fmt == "beir" and path.is_dir():
        path = path / "corpus.jsonl"
    fields = FieldMap(id_field, text_field, title_field)
    if fmt in ("beir", "jsonl"):
        documents = _read_jsonl(path, fields, errors)
    elif fmt == "json":
        documents = _read_json_array(path, fields, errors)
    elif fmt in ("csv", "tsv"):
        documents = _read_delimited(path, fields, errors, "," if fmt == "csv" else "\t")
    elif fmt == "txt":
        if txt_mode not in TXT_MODES:
            raise GenqError(f"unknown txt mode {txt_mode!r}; choose one of {', '.join(TXT_MODES)}")
        documents = _read_txt(path, errors, txt_mode)
    elif fmt == "folder":
        if not path.is_dir():
            raise DataError(path, "is not a folder", "pass a folder of .txt/.md files or another --format")
        documents = _read_folder(path, errors)
    else:
        documents = _read_hf(path, fields, errors, fmt, split)

    seen_ids: set[str] = set()
    for document in documents:
        if document.id in seen_ids:
            file, _, line = document.where.rpartition(":")
            errors.report(DataError(file if line.isdigit() else document.where,
                                    f"duplicate id {document.id!r} (an earlier record has the same id)",
                                    "make the ids unique, or pass --on-error skip to keep only the first",
                                    int(line) if line.isdigit() else None))
            continue
        seen_ids.add(document.id)
        yield document


# --------------------------------------------------------------------------- chunking


class TokenCounter:
    """Counts tokens the way the model that will read the passages does.

    ``"words"`` counts words and punctuation marks without any model: a quick, offline
    approximation (sub-word tokenizers produce somewhat more tokens than this).
    """

    def __init__(self, name_or_tokenizer: str | object = DEFAULT_TOKENIZER, gguf_file: str | None = None):
        if not isinstance(name_or_tokenizer, str):
            self.name = getattr(name_or_tokenizer, "name_or_path", type(name_or_tokenizer).__name__)
            self._tokenizer = name_or_tokenizer
            return
        self.name = name_or_tokenizer
        if name_or_tokenizer == WORDS_TOKENIZER:
            self._tokenizer = None
            return
        from transformers import AutoTokenizer

        location = resolve_model(name_or_tokenizer, what="tokenizer") if not gguf_file else name_or_tokenizer
        try:
            if gguf_file or location.endswith(".gguf"):
                from genq import gguf_cache

                gguf_path = Path(gguf_file or location)
                self._tokenizer = gguf_cache.load(gguf_path, "tokenizer")[0] if gguf_path.is_file() else \
                    AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
            else:
                self._tokenizer = AutoTokenizer.from_pretrained(location)
        except Exception as exc:  # OSError offline, ValueError for unknown configs
            raise GenqError(
                f"could not load the tokenizer {name_or_tokenizer!r} ({describe_error(exc)})\n"
                f"  fix: pass --tokenizer with a local model directory, or --tokenizer words to count words offline"
            ) from None

    _WORD = re.compile(r"\w+|[^\w\s]")

    def count(self, texts: list[str]) -> list[int]:
        if not texts:
            return []
        if self._tokenizer is None:
            return [len(self._WORD.findall(t)) for t in texts]
        encoded = self._tokenizer(texts, add_special_tokens=False, return_attention_mask=False)["input_ids"]
        return [len(ids) for ids in encoded]


MAX_CHARS_PER_TOKEN = 32  # no tokenizer turns fewer than this many characters of real text into one token
_WORD_RUN = re.compile(r"\S+")


def _batched(items: Iterable, size: int) -> Iterator[list]:
    batch: list = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _slices(text: str, size: int) -> Iterator[str]:
    for start in range(0, len(text), size):
        yield text[start:start + size]


def clip_for_model(text: str, max_tokens: int) -> str:
    """``text`` cut to what a model reading ``max_tokens`` tokens can see, before any tokenizer runs.

    Tokenizers encode the whole string before truncating, so one huge record would cost
    gigabytes; past ``max_tokens * MAX_CHARS_PER_TOKEN`` characters nothing is visible anyway.
    """
    limit = max(1, max_tokens) * MAX_CHARS_PER_TOKEN
    return text if len(text) <= limit else text[:limit]


def split_units(text: str) -> list[str]:
    """Paragraphs, then sentences: the boundaries a chunk prefers to end on."""
    units = []
    for paragraph in _PARAGRAPH_BREAK.split(text):
        paragraph = paragraph.strip()
        if paragraph:
            units.extend(s for s in _SENTENCE_END.split(paragraph) if s.strip())
    return units


class Chunker:
    """Cut a document into passages of at most ``max_tokens`` tokens, overlapping by ``overlap``.

    Chunks end on sentence or paragraph boundaries; a single sentence longer than the
    budget is cut between words. Overlap carries whole trailing sentences (words, inside an
    over-long sentence) of one chunk into the next, up to ``overlap`` tokens.
    """

    def __init__(self, counter: TokenCounter, max_tokens: int = DEFAULT_MAX_TOKENS, overlap: int = DEFAULT_OVERLAP):
        if max_tokens < 8:
            raise GenqError(f"--max-tokens must be at least 8, got {max_tokens}")
        if not 0 <= overlap < max_tokens // 2 + 1:
            raise GenqError(f"--overlap must be between 0 and half of --max-tokens ({max_tokens // 2}), got {overlap}")
        self.counter = counter
        self.max_tokens = max_tokens
        self.overlap = overlap

    def chunk(self, text: str) -> list[str]:
        text = text.strip()
        if not text or not normalize_whitespace(text):  # control characters alone are no text
            return []
        if len(text) <= self.max_tokens * MAX_CHARS_PER_TOKEN and self.counter.count([text])[0] <= self.max_tokens:
            return [normalize_whitespace(text)]
        return [normalize_whitespace(" ".join(chunk)) for chunk in self._pack(self._pieces(text))]

    def _pieces(self, text: str) -> Iterator[tuple[str, int]]:
        """(piece, tokens) in order: sentences that fit, else their words, else slices of a word.

        The tokenizer only ever sees a bounded piece (a few hundred tokens' worth of
        characters), so a 50 MB record costs the memory of its text, not of its encoding.
        """
        cap = self.max_tokens * MAX_CHARS_PER_TOKEN
        for units in _batched(split_units(text), 256):
            short = [unit for unit in units if len(unit) <= cap]
            counts = iter(self.counter.count(short))
            for unit in units:
                count = next(counts) if len(unit) <= cap else None
                if count is not None and count <= self.max_tokens:
                    yield unit, count
                else:
                    yield from self._word_pieces(unit)

    def _word_pieces(self, unit: str) -> Iterator[tuple[str, int]]:
        cap = self.max_tokens * MAX_CHARS_PER_TOKEN
        words = (piece for match in _WORD_RUN.finditer(unit)
                 for piece in _slices(match.group(), cap))
        for batch in _batched(words, 4096):
            for word, count in zip(batch, self.counter.count(batch)):
                if count <= self.max_tokens:
                    yield word, count
                    continue
                # one "word" longer than a passage (a URL list, base64): cut it into slices that fit
                size = max(1, len(word) * self.max_tokens // (2 * count))
                slices = list(_slices(word, size))
                yield from zip(slices, self.counter.count(slices))

    def _pack(self, pieces: list[tuple[str, int]]) -> Iterator[list[str]]:
        current: list[tuple[str, int]] = []
        size = 0
        for piece, count in pieces:
            if current and size + count > self.max_tokens:
                yield [p for p, _ in current]
                carried: list[tuple[str, int]] = []
                carried_size = 0
                for previous in reversed(current):
                    if carried_size + previous[1] > self.overlap:
                        break
                    carried.insert(0, previous)
                    carried_size += previous[1]
                while carried and carried_size + count > self.max_tokens:
                    carried_size -= carried.pop(0)[1]
                current, size = carried, carried_size
            current.append((piece, count))
            size += count
        if current:
            yield [p for p, _ in current]


# --------------------------------------------------------------------------- passages


@dataclass
class PrepareSummary:
    input: str
    output: str
    format: str
    documents: int = 0
    passages: int = 0
    chunked_documents: int = 0
    empty_dropped: int = 0
    duplicates_dropped: int = 0
    bad_records_skipped: int = 0
    bad_record_examples: list[str] = field(default_factory=list)
    tokenizer: str = ""
    max_tokens: int = DEFAULT_MAX_TOKENS
    overlap: int = DEFAULT_OVERLAP
    ids_renamed: int = 0  # passages whose id another passage had already (see _unique_id)
    renamed_id_examples: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def iter_passages(
    documents: Iterable[Document], chunker: Chunker, summary: PrepareSummary, dedup: bool = True
) -> Iterator[dict]:
    """Chunk, normalise and deduplicate documents into passage records (counts go to ``summary``)."""
    seen_texts: set[bytes] = set()
    seen_ids: set[bytes] = set()
    for document in documents:
        summary.documents += 1
        chunks = chunker.chunk(document.text)
        title = normalize_whitespace(document.title)
        if not chunks and title:  # a title is text: a title-only document is read as its title
            chunks, title = chunker.chunk(title), ""
        if len(chunks) > 1:
            summary.chunked_documents += 1
        if not chunks:
            summary.empty_dropped += 1
            continue
        for number, chunk in enumerate(chunks):
            if dedup:
                digest = hashlib.blake2b(f"{title}\x00{chunk}".encode(), digest_size=16).digest()
                if digest in seen_texts:
                    summary.duplicates_dropped += 1
                    continue
                seen_texts.add(digest)
            passage_id = document.id if len(chunks) == 1 else f"{document.id}#{number}"
            passage_id = _unique_id(passage_id, seen_ids, summary)
            summary.passages += 1
            yield {"_id": passage_id, "title": title, "text": chunk, "doc_id": document.id}


def check_pair_passage(pair: dict, passage: dict, pairs_path: Path, corpus_path: Path, line: int) -> None:
    """A pair's passage must be the corpus passage of its id: the same ids over other texts (pairs from
    another corpus) would be judged and mined against passages they were never written for."""
    if " ".join(str(pair.get("passage", "")).split()) != " ".join(passage["text"].split()):
        raise DataError(pairs_path, f"the pair's passage differs from passage {passage['_id']!r} of {corpus_path}: "
                                    "the pairs come from another corpus",
                        "use the passages file the pairs were generated from", line)


def check_pairs_against(pairs: Iterable[tuple[int, dict]], passages: list[dict], pairs_path: Path,
                        corpus_path: Path) -> None:
    """Every pair names a passage of the corpus, with that passage's text: checked in one cheap pass before a
    model loads and the corpus is encoded, so a wrong file fails in seconds, not after minutes."""
    by_id = {p["_id"]: p for p in passages}
    for line, pair in pairs:
        passage = by_id.get(str(pair.get("passage_id")))
        if passage is None:
            raise DataError(pairs_path, f"passage_id {pair.get('passage_id')!r} is not in {corpus_path}",
                            "use the passages file the pairs were generated from", line)
        check_pair_passage(pair, passage, pairs_path, corpus_path, line)


def _unique_id(passage_id: str, seen: set[bytes], summary: PrepareSummary) -> str:
    """The id, or when another passage already has it (a document named ``a#1`` beside chunk 1 of ``a``,
    or two documents with one id) the first free ``ID~2``, ``ID~3``, ... (counted, and said by the CLI)."""
    candidate, number = passage_id, 1
    while (key := hashlib.blake2b(candidate.encode(), digest_size=12).digest()) in seen:
        number += 1
        candidate = f"{passage_id}~{number}"
    seen.add(key)
    if number > 1:
        summary.ids_renamed += 1
        if len(summary.renamed_id_examples) < 5:
            summary.renamed_id_examples.append(f"{passage_id} -> {candidate}")
    return candidate


@one_writer("output_path", "passages file")
def prepare_corpus(
    input_path: str | Path,
    output_path: str | Path,
    format: str = "auto",
    id_field: str | None = None,
    text_field: str | None = None,
    title_field: str | None = None,
    txt_mode: str = "auto",
    split: str | None = None,
    tokenizer: str | object = DEFAULT_TOKENIZER,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    overlap: int = DEFAULT_OVERLAP,
    on_error: str = "raise",
    dedup: bool = True,
    progress: bool = True,
) -> PrepareSummary:
    """Read a corpus in any supported format and write clean passages to ``output_path``.

    The output appears only when the whole corpus was read without a fatal error; an
    existing output file is left untouched by a failed run.
    """
    input_path, output_path = Path(input_path), Path(output_path)
    refuse_same_path([input_path], output_path)
    started = time.perf_counter()
    errors = ErrorTally(on_error)
    fmt = check_input(input_path, format)
    documents = iter_documents(input_path, format, id_field, text_field, title_field, txt_mode, split, errors)
    first = next(documents, None)  # the first record is read (and checked) before any tokenizer loads
    documents = itertools.chain([first] if first is not None else [], documents)
    counter = tokenizer if isinstance(tokenizer, TokenCounter) else TokenCounter(tokenizer)
    chunker = Chunker(counter, max_tokens, overlap)
    summary = PrepareSummary(str(input_path), str(output_path), fmt, tokenizer=counter.name,
                             max_tokens=max_tokens, overlap=overlap)
    with atomic_write(output_path) as handle:
        bar = tqdm(desc="preparing", unit=" docs", disable=not progress, file=sys.stderr)
        for passage in iter_passages(_counted(documents, bar), chunker, summary, dedup):
            handle.write(dumps_line(passage))
        bar.close()
        if summary.passages == 0:
            raise DataError(input_path, "no passages left after dropping empty and duplicate texts",
                            "check that the text field holds the passage text")
    summary.bad_records_skipped = errors.skipped
    summary.bad_record_examples = errors.examples
    summary.seconds = round(time.perf_counter() - started, 3)
    return summary


def _counted(items: Iterable, bar) -> Iterator:
    for item in items:
        bar.update(1)
        yield item


_REPORTED_EMPTY: set[tuple[str, int]] = set()


def iter_passage_file(path: str | Path, errors: ErrorTally | None = None,
                      empty_lines: list[int] | None = None, empty_ids: set[str] | None = None) -> Iterator[dict]:
    """Stream a prepared passages file (BEIR corpus layout) as ``{"_id", "title", "text", "doc_id"}``.

    Used by every later stage, so a BEIR ``corpus.jsonl`` works directly as well. A title is
    text (BEIR, Pyserini and sentence-transformers all encode title + text): a record with a
    title and an empty text is yielded with its title as the text, so every stage indexes,
    searches and generates for it alike. Only records with neither are skipped (their lines go
    to ``empty_lines`` and their ids to ``empty_ids`` when given, and are logged).
    """
    path = Path(path)
    if path.is_dir() and (path / "corpus.jsonl").exists():
        path = path / "corpus.jsonl"
    errors = errors or ErrorTally()
    seen: set[str] = set()
    empty: list[int] = [] if empty_lines is None else empty_lines
    for line, record in iter_jsonl(path, errors):
        passage_id = record.get("_id", record.get("id"))
        text = record.get("text")
        if passage_id is None or not isinstance(text, str):
            errors.report(DataError(path, "passage record needs \"_id\" and a string \"text\"",
                                    "run `genq corpus prepare` on the raw corpus first", line))
            continue
        try:
            passage_id = _id_text(passage_id, "_id", path, line)
            title = _field_text(record.get("title"), "title", "title", path, line)
        except DataError as exc:
            errors.report(exc)
            continue
        if passage_id in seen:
            errors.report(DataError(path, f"duplicate passage id {passage_id!r}",
                                    "run `genq corpus prepare` to deduplicate ids", line))
            continue
        seen.add(passage_id)
        if not normalize_whitespace(text):
            if normalize_whitespace(title):  # title-only (half of CACM): the title is what a model reads
                text, title = title, ""
            else:  # nothing to ask a question about (BEIR corpora hold a few)
                empty.append(line)
                if empty_ids is not None:
                    empty_ids.add(passage_id)
                continue
        yield {"_id": passage_id, "title": title, "text": text, "doc_id": str(record.get("doc_id", passage_id))}
    if empty and (str(path), len(empty)) not in _REPORTED_EMPTY:  # said once, not at every pass over the file
        _REPORTED_EMPTY.add((str(path), len(empty)))
        logger.warning("%s: skipped %d passage(s) with neither title nor text (line %s%s)", path, len(empty),
                       ", ".join(map(str, empty[:5])), ", ..." if len(empty) > 5 else "")


def load_passages(path: str | Path) -> list[dict]:
    """All passages of a prepared file as a list, for stages that need random access."""
    return list(iter_passage_file(path))


@dataclass
class CorpusStats:
    path: str
    documents: int
    passages: int
    tokenizer: str
    token_percentiles: dict[str, int]
    mean_tokens: float
    over_limit: int
    limit: int

    def to_dict(self) -> dict:
        return asdict(self)


def corpus_stats(
    path: str | Path,
    tokenizer: str | object = DEFAULT_TOKENIZER,
    format: str = "auto",
    limit: int = DEFAULT_MAX_TOKENS,
    progress: bool = True,
    **reader_options,
) -> CorpusStats:
    """Documents, passages and token-length percentiles of a corpus or a prepared passages file."""
    import numpy as np

    path = Path(path)
    check_input(path, format)
    counter = tokenizer if isinstance(tokenizer, TokenCounter) else TokenCounter(tokenizer)
    lengths: list[int] = []
    doc_ids: set[str] = set()
    passages = 0
    batch: list[str] = []

    def flush() -> None:
        lengths.extend(counter.count(batch))
        batch.clear()

    fmt = format if format != "auto" else detect_format(path) if path.exists() else "auto"
    records: Iterable[tuple[str, str]]
    if fmt in ("beir", "jsonl"):
        records = ((p["doc_id"], p["text"]) for p in iter_passage_file(path))
    else:
        records = ((d.id, d.text) for d in iter_documents(path, format, **reader_options))
    for doc_id, text in tqdm(records, desc="measuring", unit=" passages", disable=not progress, file=sys.stderr):
        passages += 1
        doc_ids.add(doc_id)
        batch.append(text)
        if len(batch) >= 1024:
            flush()
    flush()
    array = np.asarray(lengths) if lengths else np.zeros(1, dtype=int)
    percentiles = {f"p{q}": int(np.percentile(array, q)) for q in (0, 50, 90, 95, 99, 100)}
    return CorpusStats(str(path), len(doc_ids), passages, counter.name, percentiles,
                       round(float(array.mean()), 1), int((array > limit).sum()), limit)

