"""Cloud gap filling by kriging: semivariograms (:mod:`.variogram`), local ordinary
kriging in batches (:mod:`.kriging`), the grid-walk neighbour search (:mod:`.search`), gap definitions (:mod:`.gaps`) and the block-wise
tool (:mod:`.fill`)."""
from .fill import KrigingSettings, cloud_gap_fill, sidecar_path
from .gaps import BandRange, GapSpec, parse_ranges

__all__ = ["BandRange", "GapSpec", "KrigingSettings", "cloud_gap_fill", "parse_ranges", "sidecar_path"]
