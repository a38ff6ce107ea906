"""read_labels_file on the Kaggle file's ragged format and on malformed files."""

from __future__ import annotations

from pathlib import Path

import pytest

from monkeysee.data.labels import read_labels_file
from monkeysee.data.species import Species
from monkeysee.errors import DataError

REAL_LABELS = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "monkeys" / "monkey_labels.txt"

# The Kaggle file byte for byte in shape: CRLF, padded commas, tabs after some Latin names, blank tail.
KAGGLE = (
    "Label,  Latin Name           , Common Name                   , Train Images , Validation Images\r\n"
    "n0   , alouatta_palliata\t , mantled_howler                , 131          , 26\r\n"
    "n1   , erythrocebus_patas\t , patas_monkey                  , 139          , 28\r\n"
    "n9   , trachypithecus_johnii , nilgiri_langur                , 132          , 26\r\n"
    "\r\n\r\n\r\n"
)


def _write(tmp_path: Path, text: str, name: str = "labels.txt", bom: bool = False) -> Path:
    p = tmp_path / name
    p.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))
    return p


def test_kaggle_format(tmp_path: Path) -> None:
    got = read_labels_file(_write(tmp_path, KAGGLE))
    assert got == {
        "n0": Species("n0", "mantled_howler", "alouatta_palliata"),
        "n1": Species("n1", "patas_monkey", "erythrocebus_patas"),
        "n9": Species("n9", "nilgiri_langur", "trachypithecus_johnii"),
    }
    assert list(got) == ["n0", "n1", "n9"]


def test_minimal_columns_any_order_case_and_bom(tmp_path: Path) -> None:
    text = "common_name ,LABEL\nred howler, a\nblack howler ,b\n"
    got = read_labels_file(_write(tmp_path, text, bom=True))
    assert got == {"a": Species("a", "red howler", ""), "b": Species("b", "black howler", "")}


def test_tab_separated(tmp_path: Path) -> None:
    got = read_labels_file(
        _write(tmp_path, "Label\tLatin Name\tCommon Name\nn0\talouatta palliata\thowler\n")
    )
    assert got["n0"] == Species("n0", "howler", "alouatta palliata")


@pytest.mark.parametrize(
    ("text", "where", "words"),
    [
        ("Label, Latin Name\nn0, alouatta\n", "line 1", "Common Name"),
        ("n0, alouatta_palliata, mantled_howler\n", "line 1", "no header row"),
        ("\n\nLabel, Common Name\nn0, a\nn1, b\nn0, c\n", "line 6", "'n0' appears twice (first on line 4)"),
        ("Label, Common Name\n , howler\n", "line 2", "empty label"),
        ("Label, Common Name\nn0, howler\nn1\n", "line 3", "1 field(s)"),
        ("Label, Common Name\nn0,\t \n", "line 2", "no common name"),
        ("Label, Common Name, label\nn0, a, b\n", "line 1", "twice"),
    ],
)
def test_malformed(tmp_path: Path, text: str, where: str, words: str) -> None:
    p = _write(tmp_path, text)
    with pytest.raises(DataError) as info:
        read_labels_file(p)
    assert f"{p}, {where}: " in info.value.message
    assert words in info.value.problem
    assert info.value.fix


@pytest.mark.parametrize(
    ("text", "words"), [("\r\n \r\n", "empty"), ("Label, Common Name\r\n", "no species rows")]
)
def test_empty_files(tmp_path: Path, text: str, words: str) -> None:
    with pytest.raises(DataError, match=words):
        read_labels_file(_write(tmp_path, text))


def test_missing_and_non_utf8(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="labels file not found"):
        read_labels_file(tmp_path / "nope.txt")
    p = tmp_path / "latin1.txt"
    p.write_bytes("Label, Common Name\nn0, sag\xfcin\n".encode("latin-1"))
    with pytest.raises(DataError, match="not UTF-8"):
        read_labels_file(p)


def test_real_labels_file() -> None:
    if not REAL_LABELS.is_file():
        pytest.skip(f"real data not present at {REAL_LABELS}")
    got = read_labels_file(REAL_LABELS)
    assert len(got) == 10
    assert list(got) == [f"n{i}" for i in range(10)]
    assert got["n0"] == Species("n0", "mantled_howler", "alouatta_palliata")
    assert got["n9"] == Species("n9", "nilgiri_langur", "trachypithecus_johnii")
