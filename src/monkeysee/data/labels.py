"""Reading the labels file that maps class folders ('n0') to species names.

The Kaggle file is ragged: CRLF line ends, a header row, commas padded with runs of spaces and tabs,
trailing blank lines and extra count columns. Columns are found by their header names, so any file
with Label and Common Name columns (Latin Name optional, others ignored) works.
"""

from __future__ import annotations

import csv
from pathlib import Path

from monkeysee.data.species import Species
from monkeysee.errors import DataError

# Normalised header name -> Species field. Normalising drops case, spaces, tabs, '_' and '-'.
_COLUMNS = {"label": "label", "commonname": "common_name", "latinname": "latin_name"}
_REQUIRED = ("label", "commonname")
_EXPECTED = "a header row naming the columns Label, Common Name and (optionally) Latin Name"


def read_labels_file(path: Path) -> dict[str, Species]:
    """Parse a labels file into {label: Species}, in file order."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DataError("labels file not found", fix="check the path", path=path) from None
    except IsADirectoryError:
        raise DataError("labels file is a folder", fix="pass the labels .txt file", path=path) from None
    except UnicodeDecodeError:
        raise DataError("labels file is not UTF-8 text", fix="save it as UTF-8 text", path=path) from None
    except OSError as exc:
        raise DataError(
            f"cannot read the labels file ({exc.strerror})", fix="check its permissions", path=path
        ) from None

    rows = [(n, line) for n, line in enumerate(text.splitlines(), start=1) if line.strip()]
    rows = [(n, line) for n, line in rows if not line.lstrip().startswith("#")]
    if not rows:
        raise DataError("labels file is empty", fix=f"write {_EXPECTED}, then one row per species", path=path)

    header_no, header_line = rows[0]
    delimiter = "," if "," in header_line or "\t" not in header_line else "\t"
    header = [_norm(h) for h in _split(header_line, delimiter)]
    where = f"{path}, line {header_no}"
    missing = [c for c in _REQUIRED if c not in header]
    if "label" not in header:
        raise DataError(
            f"no header row (first line: {header_line.strip()!r})", fix=f"start with {_EXPECTED}", path=where
        )
    if missing:
        names = ", ".join(_display(c) for c in missing)
        raise DataError(f"header lacks the column(s) {names}", fix=f"start with {_EXPECTED}", path=where)
    for name in set(header):
        if name in _COLUMNS and header.count(name) > 1:
            raise DataError(f"header names the column {_display(name)} twice", fix="keep one", path=where)
    index = {name: i for i, name in enumerate(header) if name in _COLUMNS}
    width = max(index.values()) + 1

    species: dict[str, Species] = {}
    first_seen: dict[str, int] = {}
    for line_no, line in rows[1:]:
        where = f"{path}, line {line_no}"
        fields = _split(line, delimiter)
        if len(fields) < width:
            raise DataError(
                f"row has {len(fields)} field(s), the header needs at least {width}",
                fix="give every row a label, a common name and (if the header has one) a Latin name",
                path=where,
            )
        values = {_COLUMNS[name]: fields[i] for name, i in index.items()}
        label = values["label"]
        if not label:
            raise DataError(
                "row has an empty label", fix="write the class folder name in the Label column", path=where
            )
        if not values["common_name"]:
            raise DataError(
                f"species {label!r} has no common name", fix="fill in its Common Name", path=where
            )
        if label in species:
            raise DataError(
                f"label {label!r} appears twice (first on line {first_seen[label]})",
                fix="keep one row per class folder",
                path=where,
            )
        species[label] = Species(**values)
        first_seen[label] = line_no
    if not species:
        raise DataError(
            "labels file has a header but no species rows", fix="add one row per class folder", path=path
        )
    return species


def _split(line: str, delimiter: str) -> list[str]:
    """One row's fields with surrounding spaces/tabs removed (csv handles any quoted commas)."""
    fields = next(csv.reader([line], delimiter=delimiter, skipinitialspace=True), [])
    return [f.strip() for f in fields]


def _norm(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch not in " \t_-")


def _display(norm: str) -> str:
    return {"label": "Label", "commonname": "Common Name", "latinname": "Latin Name"}[norm]
