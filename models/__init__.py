"""Network definitions and the checkpoint format. Imports torch only (never qgis, never core)."""
