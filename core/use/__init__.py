"""Building use at 50 cm (seed 000): image preparation, POI maps, training data, training, mapping, polygons."""
