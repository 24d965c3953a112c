"""The parcel simulator: goods, containers, concealments, scenes, whole parcels, the phantom and `simulate`.

The top layer of ``datasets``: it uses the physics to render scenes, the scan files to write them and the
dataset tools' manifest to record them. Nothing below it imports the simulator.
"""
