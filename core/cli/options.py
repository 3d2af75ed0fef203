"""Command-line options shared by several subcommands (kept free of heavy imports: the
parser is built at every start of ``edifice``)."""
from __future__ import annotations


def add_point_column_arguments(parser, prefix: str = "") -> None:
    """CLI options naming the coordinate columns of a POI table (CSV) and their CRS."""
    parser.add_argument(f"--{prefix}x-field", dest="points_x_field", default=None,
                        help="POI table: x (or longitude) column (default: x, easting, lon, longitude)")
    parser.add_argument(f"--{prefix}y-field", dest="points_y_field", default=None,
                        help="POI table: y (or latitude) column (default: y, northing, lat, latitude)")
    parser.add_argument(f"--{prefix}points-crs", dest="points_crs", default=None,
                        help="POI table: CRS of the coordinates, e.g. EPSG:32636 (default EPSG:4326 for lon/lat)")


def point_columns(args) -> dict:
    """The keyword arguments of :func:`core.use.poi_sources.read_point_file` from the options of
    :func:`add_point_column_arguments`."""
    return {"x_field": args.points_x_field, "y_field": args.points_y_field, "crs": args.points_crs}
