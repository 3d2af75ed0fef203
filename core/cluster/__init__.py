"""Distributed runs of the mapping tools on a Dask cluster (``dask.distributed``).

The area is cut into *blocks* of whole sliding windows (:mod:`.blocks`), aligned on the
engine's tile grid so that a block's pixels equal those of a single-machine run. Each block
is one Dask task (:mod:`.building_use`): the worker keeps the model loaded
(:class:`.client.ModelPlugin`, one per worker, on the GPU the worker was given), runs the
same engine as one machine over the block's windows and writes the block's own tiled
GeoTIFFs (temporary file, then an atomic rename). The driver records finished blocks in a
manifest with a fingerprint of the inputs and settings (:mod:`.manifest`), so a rerun skips
them; writes a VRT of the blocks and, on request, a COG mosaic (:mod:`.mosaic`); and merges
building polygons cut by block borders (:func:`core.use.vectorize.merged_seam_buildings`).

Imports dask/distributed lazily: the rest of Edifice works without them.
"""

#: windows along a block's side by default (8 x 8 windows of 1024 px at 0.5 m: about 9.4 km²)
BLOCK_WINDOWS = 8
