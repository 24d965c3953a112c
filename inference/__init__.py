"""inference stage of parcelscan."""
