"""Everything that turns the world into tensors, one sub-package per concern.

- ``datasets.physics``: X-ray physics (materials, profile, spectra, forward model, pseudo-colour).
- ``datasets.scans``: scan files (station pair, TIFF, pseudo-colour, DICOS), readers and render.
- ``datasets`` itself: the dataset tools (manifest, the one preprocessing, check/split/import, the torch
  Dataset, augmentation, the prepared-scan cache).
- ``datasets.simulator``: the parcel simulator.

Layers, lowest first: physics ← scans ← dataset tools ← simulator. ``datasets`` uses no other stage of
parcelscan (the house plan's arrows point downward only); ``tests/test_layers.py`` enforces it.
"""
