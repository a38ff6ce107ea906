"""Photos in, species and splits out. Torch-dependent parts (augment, dataset, preview) import from
their own modules so that reading data stays light."""

from monkeysee.data.images import MAX_PIXELS, iter_photos, load_rgb, load_rgb_bytes
from monkeysee.data.labels import read_labels_file
from monkeysee.data.layout import DataIndex, Sample, Skipped, scan_dataset
from monkeysee.data.species import Species

__all__ = [
    "MAX_PIXELS",
    "DataIndex",
    "Sample",
    "Skipped",
    "Species",
    "iter_photos",
    "load_rgb",
    "load_rgb_bytes",
    "read_labels_file",
    "scan_dataset",
]
