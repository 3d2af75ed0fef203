"""The QGIS side of Edifice: plugin class, styles and layer loading (imports qgis)."""
