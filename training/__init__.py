"""training stage of parcelscan."""
