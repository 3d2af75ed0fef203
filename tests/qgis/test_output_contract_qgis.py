"""The output and parameter contract in real QGIS (processing.run): refused before any work, with the
parameter, the value and the fix named."""
import hashlib
import re

import pytest

pytestmark = pytest.mark.qgis


def _md5(path):
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_output_that_is_the_input_is_refused_before_work(provider, kampala_rgb, tmp_path):
    import processing
    from qgis.core import QgsProcessingException

    before = _md5(kampala_rgb)
    link = tmp_path / "same.tif"
    link.symlink_to(kampala_rgb)
    for out in (kampala_rgb, link):
        with pytest.raises(QgsProcessingException, match="OUTPUT: .* is also the input INPUT"):
            processing.run("edifice:retinex", {"INPUT": str(kampala_rgb), "OUTPUT": str(out)})
    assert _md5(kampala_rgb) == before


def test_out_of_range_numbers_name_the_range(provider, kampala_rgb, tmp_path):
    import processing
    from qgis.core import QgsProcessingException

    with pytest.raises(QgsProcessingException,
                       match=r"CLIP_PERCENT \(Stretch: percent clipped at each end\): '?77(\.0)?'? is not accepted\. "
                             r"Fix: give a number at least 0 and at most 49\."):
        processing.run("edifice:retinex", {"INPUT": str(kampala_rgb), "CLIP_PERCENT": 77,
                                           "OUTPUT": str(tmp_path / "o.tif")})
    assert not (tmp_path / "o.tif").exists()


@pytest.mark.parametrize("content, words", [
    (b"", "is not a readable raster: it is empty (0 bytes)"),
    (None, "is not a readable raster: it may be truncated or corrupt"),
])
def test_empty_or_corrupt_files_are_not_called_missing(provider, kampala_rgb, tmp_path, content, words):
    """QGIS reports an unreadable file as 'not found'."""
    import processing
    from qgis.core import QgsProcessingException

    bad = tmp_path / "bad.tif"
    bad.write_bytes(kampala_rgb.read_bytes()[:5000] if content is None else content)
    with pytest.raises(QgsProcessingException, match=f"INPUT: '.*bad.tif' {re.escape(words)}"):
        processing.run("edifice:retinex", {"INPUT": str(bad), "OUTPUT": str(tmp_path / "o.tif")})
    with pytest.raises(QgsProcessingException, match="INPUT: file '.*absent.tif' does not exist"):
        processing.run("edifice:retinex", {"INPUT": str(tmp_path / "absent.tif"), "OUTPUT": str(tmp_path / "o.tif")})
