"""X-ray physics: materials, the scanner profile, spectra, the dual-energy forward model, pseudo-colour.

The bottom layer of parcelscan: it imports nothing else of the package except ``parcelscan.errors``.
Every attenuation number a scan carries comes from here (xraydb and spekpy through the forward model).
"""
