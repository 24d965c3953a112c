"""Scan files: the station PNG pair, TIFF, pseudo-colour images and DICOS DX; readers, writers and render.

Builds on ``datasets.physics`` only (profiles and pseudo-colour tables); the simulator and the dataset
tools read and write scans through this package.
"""
