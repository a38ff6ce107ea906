"""The species map: where the run's photos sit in its feature space, drawn from what `monkeysee map`
(or `evaluate`) stored, with a thumbnail per species when there are few enough."""

from __future__ import annotations

from functools import partial

from monkeysee.errors import CheckpointError
from monkeysee.explain.map_render import plot_species_map, species_thumbnails
from monkeysee.explain.species_map import SPLITS, SpeciesMap, species_map_of
from monkeysee.report.context import ReportContext
from monkeysee.report.html import code, figure, img, note, para
from monkeysee.report.images import plot_uri
from monkeysee.report.sections import Section, section


@section
class SpeciesMapSection(Section):
    id = "species-map"
    title = "Species map"
    order = 95

    def render(self, ctx: ReportContext) -> str:
        try:
            smap = SpeciesMap.load(ctx.evaluation)
        except CheckpointError as exc:
            return note(f"The stored species map cannot be read: {exc.message}")
        if smap is None and ctx.options.species_map and ctx.photos_ok:
            smap = species_map_of(ctx.predictor, ctx.run_dir, ctx.options.data, log=lambda _: None)
        if smap is None:
            return note(f"No species map is stored. {code('monkeysee map RUN_DIR')} lays one out (and "
                        f"writes a page with hover and zoom); {code('monkeysee report --species-map')} does "
                        "it here.")
        names = [ctx.name(i) for i in range(len(ctx.species))]
        thumbs = species_thumbnails(smap, locate=ctx.photo_path)
        uri = plot_uri(partial(plot_species_map, smap, names, thumbs=thumbs))
        counts = {name: int((smap.split == i).sum()) for i, name in enumerate(SPLITS)}
        intro = para(
            f"Each dot is a photo: its pooled features (the head's input) laid out in two dimensions by "
            f"{smap.method} (seed {smap.seed}); photos the network finds alike lie close. "
            f"{counts['train']} training, {counts['val']} validation and {counts['test']} test photos "
            f"(the test ones larger). Crosses: the {int(smap.mistake.sum())} test photos predicted wrong; "
            f"rings: the {int(smap.unknown.sum())} photos the detector calls \u201cnot one of my "
            f"species\u201d. Species that overlap here are the ones the network confuses.")
        return intro + figure(img(uri, "species map"), (
            f"{code('monkeysee map RUN_DIR')} writes the same map as a page with hover (species, file, "
            "thumbnail), zoom and pan."))
