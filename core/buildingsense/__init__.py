"""BuildingSense-style building function by large multimodal models (seed
``buildingsense-essd-2026``, §3.1–3.3).

- :mod:`.streetview`: street-view sampling points (nearest road point, heading, pitch);
- :mod:`.samples`: per-building samples (rooftop and 60.96 m buffer chips, street-view
  images, POIs, attributes) and their manifest;
- :mod:`.prompts`: the prompt templates (data files in ``prompts/``) and the seven data
  combinations (T, R, S, RT, ST, RS, RST);
- :mod:`.classify`: an OpenAI-compatible chat-completions client over
  :class:`edifice.core.acquire.http.HttpClient` that writes a GeoPackage of functions.
"""

#: Environment variable holding the endpoint's API key on the CLI (and in QGIS when no AUTHCFG is given).
KEY_ENV = "EDIFICE_LLM_API_KEY"
