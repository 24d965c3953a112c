"""Physics, simulator, scan files, preprocessing: everything that turns the world into tensors.

``datasets`` uses no other stage of parcelscan (the house plan's arrows point downward only).
"""
