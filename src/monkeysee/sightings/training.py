"""Corrections teach the model: the confirmed and corrected photos as a folder per species, for
`monkeysee train --from RUN --data DIR`. A species the run knows goes into the run's own folder name
(its label); a newly named one into a folder made from its name, and a labels file names them all.
`train --from` trains on what DIR holds, so the run's own photos are linked in beside the corrections
(`run_photos`): the grown run keeps every species it knew and gains the corrected and new ones."""

from __future__ import annotations

import shutil
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from monkeysee.data.species import Species
from monkeysee.io import atomic_write_text
from monkeysee.sightings.store import Store

LABELS_FILE = "monkey_labels.txt"


def folder_for(name: str, known: Sequence[Species]) -> tuple[str, Species]:
    """The class folder and species for a reviewed name: the run's species it means, else a new one."""
    for sp in known:
        if sp.matches(name):
            return sp.label, sp
    label = name.lower().replace(" ", "_")
    return label, Species(label=label, common_name=label, latin_name=label)


def link_photos(photos: Sequence[tuple[Path, str]], out: Path) -> int:
    """Symbolic links `out/<label>/<name>` to (photo, label) pairs; a name taken gets a number."""
    for path, label in photos:
        folder = out / label
        folder.mkdir(parents=True, exist_ok=True)
        target, n = folder / path.name, 1
        while target.is_symlink() or target.exists():
            if target.is_symlink() and target.resolve() == path.resolve():
                break
            n += 1
            target = folder / f"{path.stem}-{n}{path.suffix}"
        else:
            target.symlink_to(path.resolve())
    return len(photos)


def export_training(store: Store, out: Path, known: Sequence[Species] = (),
                    run_photos: Sequence[tuple[Path, str]] = ()) -> dict[str, int]:
    """Write every photo of a confirmed or corrected sighting to `out/<label>/` (and link the run's own
    `run_photos` beside them); corrected photos per label."""
    counts: Counter[str] = Counter()
    species: dict[str, Species] = {sp.label: sp for sp in known} if run_photos else {}
    link_photos(run_photos, out)
    for v in store.all():
        if v.status == "unreviewed" or v.species is None:
            continue
        label, sp = folder_for(v.species, known)
        species[label] = sp
        for p in v.photos:
            target = out / label / Path(p.location).name
            if not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(store.photos.path(p.location), target)
                counts[label] += 1
    if species:
        rows = "".join(f"{sp.label}, {sp.latin_name}, {sp.common_name}\n"
                       for _, sp in sorted(species.items()))
        atomic_write_text(out / LABELS_FILE, "Label, Latin Name, Common Name\n" + rows)
    return dict(sorted(counts.items()))
