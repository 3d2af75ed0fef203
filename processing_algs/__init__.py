"""Processing provider ``edifice`` and its algorithms: thin adapters over core."""
