"""model stage of parcelscan."""
