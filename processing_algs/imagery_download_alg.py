"""edifice:imagerydownload — imagery for an extent from a tile/WMTS/WMS service or a web raster
layer of the project (adapter over core.acquire.imagery)."""
from __future__ import annotations

from urllib.parse import parse_qsl

from qgis.core import (QgsProcessingException, QgsProcessingParameterAuthConfig, QgsProcessingParameterCrs,
                       QgsProcessingParameterDefinition, QgsProcessingParameterEnum, QgsProcessingParameterExtent,
                       QgsProcessingParameterNumber, QgsProcessingParameterRasterDestination,
                       QgsProcessingParameterRasterLayer, QgsProcessingParameterString)

from .base import EdificeAlgorithm

SOURCE_TYPES = [("XYZ / TMS tile URL template", "xyz"), ("WMTS (GetCapabilities URL)", "wmts"), ("WMS", "wms"),
                ("Web raster layer of the project (its data source)", "layer")]
WMS_VERSIONS = ["1.3.0", "1.1.1"]


def source_from_qgis_uri(uri: str) -> dict:
    """ImagerySource fields of a QGIS 'wms' provider data source: an XYZ layer
    (``type=xyz&url=...&zmax=..``), a WMTS layer (``tileMatrixSet=..&url=..&layers=..``) or a
    WMS layer (``crs=..&format=..&layers=..&styles=..&url=..``). ``authcfg`` is returned too."""
    values = dict(parse_qsl(uri, keep_blank_values=True))  # decodes the percent-encoded url once
    url = values.get("url", "")
    out = {"url": url, "authcfg": values.get("authcfg", "")}
    if values.get("type") == "xyz":
        out.update(kind="xyz", min_zoom=int(values.get("zmin", 0) or 0), max_zoom=int(values.get("zmax", 19) or 19))
    elif values.get("tileMatrixSet"):
        sep = "&" if "?" in url else "?"
        caps = url if "request=getcapabilities" in url.lower() else f"{url}{sep}SERVICE=WMTS&REQUEST=GetCapabilities"
        out.update(kind="wmts", url=caps, layer=values.get("layers"), style=values.get("styles", ""),
                   tile_matrix_set=values.get("tileMatrixSet"), image_format=values.get("format") or "image/png")
    elif values.get("layers"):
        out.update(kind="wms", layer=values.get("layers"), style=values.get("styles", ""),
                   crs=values.get("crs") or "EPSG:3857", image_format=values.get("format") or "image/png")
    else:
        raise QgsProcessingException("SOURCE_LAYER: the layer's data source is neither an XYZ, a WMTS nor a WMS "
                                     "source. Fix: choose a web raster layer (XYZ Tiles, WMS/WMTS).")
    return out


class ImageryDownloadAlgorithm(EdificeAlgorithm):
    (SOURCE_TYPE, URL, LAYER_NAME, SOURCE_LAYER, EXTENT, GSD, CRS, AUTHCFG, KEY_PARAM, MAX_ZOOM, WMS_CRS,
     WMS_VERSION, ATTRIBUTION, MAX_CONCURRENCY, OUTPUT) = (
        "SOURCE_TYPE", "URL", "LAYER_NAME", "SOURCE_LAYER", "EXTENT", "GSD", "CRS", "AUTHCFG", "KEY_PARAM",
        "MAX_ZOOM", "WMS_CRS", "WMS_VERSION", "ATTRIBUTION", "MAX_CONCURRENCY", "OUTPUT")
    GROUP, GROUP_ID = "Data acquisition", "acquisition"
    HELP = ("Downloads imagery for an extent at a ground sample distance (GSD, metres) into an RGB GeoTIFF in the "
            "extent's UTM zone (or CRS), with nodata (0) where the service has no imagery. The service is an XYZ/TMS "
            "tile template ({z}/{x}/{y}, {-y} for TMS), a WMTS (its GetCapabilities URL and a layer; a tile matrix "
            "set in EPSG:3857 is preferred), a WMS (URL and layer), or a web raster layer of the project (XYZ, "
            "WMS or WMTS). The zoom is chosen from the GSD at the extent's latitude; a GSD finer than the deepest "
            "zoom gives a warning naming the zoom used. Tiles are fetched concurrently, retried and cached; a "
            "cancelled run resumes where it stopped when run again with the same parameters. "
            "Keys: put {key} in the URL (or name the query parameter in KEY_PARAM) and choose an authentication "
            "configuration (AUTHCFG) whose password or header value is the key; it is never logged or written. "
            "The service's attribution and URL template are written into the GeoTIFF's metadata.")

    def name(self):
        return "imagerydownload"

    def displayName(self):  # noqa: N802
        return "Download imagery (XYZ / WMTS / WMS)"

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterEnum(self.SOURCE_TYPE, "Service type",
                                                     options=[t[0] for t in SOURCE_TYPES], defaultValue=0))
        self.addParameter(QgsProcessingParameterString(self.URL, "Service URL (tile template, capabilities or WMS URL)",
                                                       optional=True))
        self.addParameter(QgsProcessingParameterString(self.LAYER_NAME, "WMTS / WMS layer name", optional=True))
        self.addParameter(QgsProcessingParameterRasterLayer(self.SOURCE_LAYER, "Web raster layer (service type 4)",
                                                            optional=True))
        self.addParameter(QgsProcessingParameterExtent(self.EXTENT, "Extent"))
        self.addParameter(QgsProcessingParameterNumber(self.GSD, "Ground sample distance (m)",
                                                       QgsProcessingParameterNumber.Double, defaultValue=0.5,
                                                       minValue=0.01))
        self.addParameter(QgsProcessingParameterCrs(self.CRS, "Output CRS (default: the extent's UTM zone)",
                                                    optional=True))
        self.addParameter(QgsProcessingParameterAuthConfig(self.AUTHCFG, "Authentication configuration holding "
                                                           "the key", optional=True))
        for p in (QgsProcessingParameterString(self.KEY_PARAM, "Query parameter that carries the key "
                                               "(when the URL has no {key})", optional=True),
                  QgsProcessingParameterNumber(self.MAX_ZOOM, "XYZ: deepest zoom served", defaultValue=19,
                                               minValue=0, maxValue=30),
                  QgsProcessingParameterString(self.WMS_CRS, "WMS: CRS of the requests", defaultValue="EPSG:3857"),
                  QgsProcessingParameterEnum(self.WMS_VERSION, "WMS: version", options=WMS_VERSIONS, defaultValue=0),
                  QgsProcessingParameterString(self.ATTRIBUTION, "Attribution (written into the metadata)",
                                               optional=True),
                  QgsProcessingParameterNumber(self.MAX_CONCURRENCY, "Requests in flight at once", defaultValue=4,
                                               minValue=1, maxValue=16)):
            p.setFlags(p.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
            self.addParameter(p)
        self.addParameter(QgsProcessingParameterRasterDestination(self.OUTPUT, "Imagery"))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        from ..core.acquire.imagery import download_imagery

        source = self._source(parameters, context)
        crs = self.parameterAsExtentCrs(parameters, self.EXTENT, context)
        rect = self.parameterAsExtent(parameters, self.EXTENT, context, crs)
        extent = (rect.xMinimum(), rect.yMinimum(), rect.xMaximum(), rect.yMaximum())
        out_crs = self.parameterAsCrs(parameters, self.CRS, context)
        out = self.parameterAsOutputLayer(parameters, self.OUTPUT, context)
        summary = self.run_core(download_imagery, source, extent, crs.toWkt(), out,
                                gsd_m=self.parameterAsDouble(parameters, self.GSD, context),
                                crs=out_crs.toWkt() if out_crs.isValid() else None,
                                max_concurrency=self.parameterAsInt(parameters, self.MAX_CONCURRENCY, context),
                                progress=self.progress(feedback))
        feedback.pushInfo(f"{summary['width']} x {summary['height']} pixels in {summary['crs']}, level "
                          f"{summary['level']}; {summary['tiles_requested']} tiles requested, "
                          f"{summary['tiles_missing']} without imagery; {100 * summary['valid_fraction']:.1f} % "
                          "of the pixels hold imagery.")
        self.style_output(context, out, "retinex_uint8.qml")  # RGB shown over 0..255, as the service sent it
        return {self.OUTPUT: out}

    def _source(self, parameters, context):
        """The ImagerySource of the parameters, its key read from the authentication database."""
        from ..core.acquire.imagery_sources import ImagerySource, with_secret_param

        kind = SOURCE_TYPES[self.parameterAsEnum(parameters, self.SOURCE_TYPE, context)][1]
        fields = self._layer_fields(parameters, context) if kind == "layer" else self._url_fields(parameters, context,
                                                                                                 kind)
        authcfg = self.parameterAsString(parameters, self.AUTHCFG, context) or fields.pop("authcfg", "")
        fields.pop("authcfg", None)
        key_param = self.parameterAsString(parameters, self.KEY_PARAM, context).strip()
        name = key_param or "key"
        if key_param and "{" + name + "}" not in fields["url"]:
            fields["url"] = with_secret_param(fields["url"], name)
        secrets = {}
        if "{" + name + "}" in fields["url"]:
            key = self.secret_from_authcfg(authcfg, self.AUTHCFG)
            if key is None:
                raise QgsProcessingException(f"AUTHCFG: the URL needs a key ({{{name}}}). Fix: choose an "
                                             "authentication configuration whose password is the key.")
            secrets[name] = key
        attribution = self.parameterAsString(parameters, self.ATTRIBUTION, context)
        return ImagerySource(secrets=secrets, attribution=attribution or fields.pop("attribution", ""), **fields)

    def _url_fields(self, parameters, context, kind: str) -> dict:
        url = self.parameterAsString(parameters, self.URL, context).strip()
        if not url:
            raise QgsProcessingException("URL: no service URL given. Fix: give the tile template, the WMTS "
                                         "GetCapabilities URL or the WMS URL.")
        fields = {"kind": kind, "url": url, "layer": self.parameterAsString(parameters, self.LAYER_NAME, context)
                  or None}
        if kind == "xyz":
            fields["max_zoom"] = self.parameterAsInt(parameters, self.MAX_ZOOM, context)
        if kind == "wms":
            fields["crs"] = self.parameterAsString(parameters, self.WMS_CRS, context) or "EPSG:3857"
            fields["version"] = WMS_VERSIONS[self.parameterAsEnum(parameters, self.WMS_VERSION, context)]
        return fields

    def _layer_fields(self, parameters, context) -> dict:
        layer = self.parameterAsRasterLayer(parameters, self.SOURCE_LAYER, context)
        if layer is None:
            raise QgsProcessingException("SOURCE_LAYER: no layer given. Fix: choose a web raster layer (XYZ, WMS, "
                                         "WMTS) or another service type.")
        if layer.providerType() != "wms":
            raise QgsProcessingException(f"SOURCE_LAYER: layer '{layer.name()}' is not a web layer "
                                         f"({layer.providerType()}). Fix: choose an XYZ, WMS or WMTS layer; a file "
                                         "raster is already imagery (warp it with Raster > Projections > Warp).")
        fields = source_from_qgis_uri(layer.source())
        attribution = layer.attribution() if hasattr(layer, "attribution") else ""
        if attribution:
            fields["attribution"] = attribution
        return fields
