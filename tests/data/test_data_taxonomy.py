"""The ranks above species: from Latin binomials with the built-in primate families, or from a CSV file."""

from __future__ import annotations

from pathlib import Path

import pytest

from monkeysee.data.labels import read_labels_file
from monkeysee.data.primates import FAMILY_GENERA, PRIMATE_FAMILY
from monkeysee.data.species import Species
from monkeysee.data.taxonomy import Taxonomy, from_latin_names, read_taxonomy_csv, resolve_taxonomy
from monkeysee.errors import DataError
from tests.conftest import SHARED_DATA

MONKEY_LABELS = SHARED_DATA / "monkeys" / "monkey_labels.txt"
BUTTERFLY_TAXONOMY = SHARED_DATA / "butterflies-taxonomy.csv"

HOWLER = Species("n0", "mantled_howler", "alouatta_palliata")
MARMOSET = Species("n4", "pygmy_marmoset", "cebuella_pygmea")
SILVERY = Species("n6", "silvery_marmoset", "mico_argentatus")


def test_every_genus_in_the_monkeys_labels_file_resolves_to_its_family():
    if not MONKEY_LABELS.exists():
        pytest.skip(f"{MONKEY_LABELS} is absent (the shared data set is not beside the repository)")
    taxonomy = from_latin_names(list(read_labels_file(MONKEY_LABELS).values()))
    assert taxonomy is not None and taxonomy.ranks == ("genus", "family")
    assert taxonomy.lineage == {
        "n0": ("Alouatta", "Atelidae"), "n1": ("Erythrocebus", "Cercopithecidae"),
        "n2": ("Cacajao", "Pitheciidae"), "n3": ("Macaca", "Cercopithecidae"),
        "n4": ("Cebuella", "Callitrichidae"), "n5": ("Cebus", "Cebidae"),
        "n6": ("Mico", "Callitrichidae"), "n7": ("Saimiri", "Cebidae"),
        "n8": ("Aotus", "Aotidae"), "n9": ("Trachypithecus", "Cercopithecidae"),
    }
    assert taxonomy.members("family")["Cercopithecidae"] == ("n1", "n3", "n9")


def test_the_built_in_table_gives_each_genus_one_family():
    listed = [genus for genera in FAMILY_GENERA.values() for genus in genera]
    assert len(listed) == len(set(listed)) == len(PRIMATE_FAMILY)
    assert len(FAMILY_GENERA) == 16
    assert PRIMATE_FAMILY["Gorilla"] == "Hominidae" and PRIMATE_FAMILY["Lemur"] == "Lemuridae"


def test_a_genus_outside_the_primates_stops_the_ranks_at_genus():
    taxonomy = from_latin_names([HOWLER, Species("x", "red_fox", "vulpes_vulpes")])
    assert taxonomy == Taxonomy(("genus",), {"n0": ("Alouatta",), "x": ("Vulpes",)},
                                "Latin names of the labels file")


def test_species_without_latin_names_have_no_taxonomy_unless_a_file_gives_one(tmp_path: Path):
    plain = [Species("a", "a"), Species("b", "b")]
    assert from_latin_names(plain) is None
    path = tmp_path / "t.csv"
    path.write_text("species,family\na,F\nb,G\n")
    assert resolve_taxonomy(plain, path).lineage == {"a": ("F",), "b": ("G",)}


def test_the_csv_matches_labels_or_names_ignores_other_rows_and_keeps_its_rank_names(tmp_path: Path):
    path = tmp_path / "taxonomy.csv"
    path.write_text("Species,Genus,Family\n"
                    "mantled howler,Alouatta,Atelidae\n"
                    "n4,Cebuella,Callitrichidae\n"
                    "Mico argentatus,Mico,Callitrichidae\n"
                    "golden lion tamarin,Leontopithecus,Callitrichidae\n")
    taxonomy = read_taxonomy_csv(path, [HOWLER, MARMOSET, SILVERY])
    assert taxonomy.ranks == ("genus", "family")
    assert taxonomy.lineage == {"n0": ("Alouatta", "Atelidae"), "n4": ("Cebuella", "Callitrichidae"),
                                "n6": ("Mico", "Callitrichidae")}
    assert taxonomy.members("family") == {"Atelidae": ("n0",), "Callitrichidae": ("n4", "n6")}
    assert taxonomy.taxon("n6", "genus") == "Mico"
    assert Taxonomy.from_dict(taxonomy.to_dict()) == taxonomy


@pytest.mark.parametrize(("text", "mentions"), [
    ("species,family\nn0,Atelidae\n", "species 'n4' (pygmy marmoset) is not in the taxonomy file"),
    ("family,species\nAtelidae,n0\n", "is not 'species' then rank names"),
    ("species\nn0\n", "is not 'species' then rank names"),
    ("species,family\nn0,Atelidae\nn4,\n", "line 3 has 1 filled cells, the header 2"),
    ("species,genus,family\nn0,Alouatta,Atelidae\nn4,Alouatta,Callitrichidae\n",
     "genus 'Alouatta' lies in family 'Atelidae' and, through species 'n4', in 'Callitrichidae'"),
])
def test_a_bad_taxonomy_file_is_a_clear_error_naming_the_file(tmp_path: Path, text: str, mentions: str):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(DataError) as err:
        read_taxonomy_csv(path, [HOWLER, MARMOSET])
    assert mentions in err.value.message and str(path) in err.value.message


def test_a_missing_taxonomy_file_names_the_flag(tmp_path: Path):
    with pytest.raises(DataError, match="check the path given to --taxonomy"):
        read_taxonomy_csv(tmp_path / "nope.csv", [HOWLER])


def test_the_butterflies_taxonomy_covers_every_species_folder():
    folders = SHARED_DATA / "butterflies"
    if not BUTTERFLY_TAXONOMY.exists() or not folders.is_dir():
        pytest.skip(f"{BUTTERFLY_TAXONOMY} or {folders} is absent (no shared data beside the repository)")
    species = [Species(p.name, p.name) for p in sorted(folders.iterdir()) if p.is_dir()]
    taxonomy = read_taxonomy_csv(BUTTERFLY_TAXONOMY, species)
    assert taxonomy.ranks == ("family", "superfamily") and len(taxonomy.lineage) == 100
    families = taxonomy.members("family")
    assert len(families) == 13 and len(families["Nymphalidae"]) == 36
    assert taxonomy.taxon("MOURNING CLOAK", "family") == "Nymphalidae"
