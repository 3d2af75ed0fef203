"""The output and parameter contract in real QGIS (processing.run): refused before any work, with the
parameter, the value and the fix named."""
import hashlib

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
