"""Edifice core: the science, with no QGIS import anywhere below this package.

Every function here can be called from the CLI, a notebook, a Dask worker or a
Processing algorithm. Long-running functions take a ``progress`` argument that
follows :class:`edifice.core.progress.Progress`.
"""
