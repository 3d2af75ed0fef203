"""Data acquisition from open services: HTTP with retries and caches, credentials, imagery, OSM."""
