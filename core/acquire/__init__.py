"""Data acquisition from open services (Overpass, tile/WMTS/WMS imagery, Earth Engine, STAC).

Every service is reached through :mod:`.http` (retries, backoff, cache, redaction of secrets);
credentials come from :mod:`.credentials` (CLI) or QGIS's authentication database (adapters)."""
