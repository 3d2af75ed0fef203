"""Building height and footprint fraction from Sentinel (SHAFTS): inference, training, CCAP mask, reference grids."""
