"""See what the CNN sees: layer activations and the CAM family of class activation maps.

from monkeysee.explain import Explainer, explain
maps = Explainer.from_run(load_run("runs/x")).explain([photo], methods=("gradcam", "scorecam"))
maps["gradcam"].save("out/")            # overlays, .npy maps and a JSON manifest
picture = overlay(rgb_uint8, maps["gradcam"].upsampled[0], alpha=0.5)
"""

from monkeysee.errors import ExplainError
from monkeysee.explain.activations import layer_activations, stage_layers
from monkeysee.explain.api import Explainer, photo_names
from monkeysee.explain.engine import cams_from_pass, explain, explain_pass, normalize01
from monkeysee.explain.methods import (
    DEFAULT_METHOD,
    METHODS,
    CamMethod,
    LayerPass,
    method_names,
    register_method,
    resolve_methods,
)
from monkeysee.explain.render import channel_grid, heatmap, overlay, side_by_side
from monkeysee.explain.result import CamResult
from monkeysee.explain.targets import resolve_species
from monkeysee.models.hooks import default_layer, resolve_layer

__all__ = [
    "DEFAULT_METHOD",
    "METHODS",
    "CamMethod",
    "CamResult",
    "ExplainError",
    "Explainer",
    "LayerPass",
    "cams_from_pass",
    "channel_grid",
    "default_layer",
    "explain",
    "explain_pass",
    "heatmap",
    "layer_activations",
    "method_names",
    "normalize01",
    "overlay",
    "photo_names",
    "register_method",
    "resolve_layer",
    "resolve_methods",
    "resolve_species",
    "side_by_side",
    "stage_layers",
]
