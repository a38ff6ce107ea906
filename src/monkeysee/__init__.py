"""monkeysee: train a monkey-species classifier by transfer learning and see what the CNN sees."""

__version__ = "0.1.0"
