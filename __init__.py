"""parcelscan: dual-energy X-ray inspection of postal parcels for concealed critical-mineral powders.

The repository root is this package: ``datasets`` (physics, simulator, scan files), ``model``,
``training`` and ``inference`` install as ``parcelscan.datasets`` and so on.
"""

__version__ = "0.2.0"
