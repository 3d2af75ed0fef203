"""Hierarchical taxonomies: shipped presets, roll-ups, unknown labels."""
import pytest

from edifice.core.errors import InputError
from edifice.core.taxonomy import Taxonomy, list_taxonomies, load_taxonomy


def test_presets_load_and_are_trees():
    names = list_taxonomies()
    assert {"nyc_building_class", "osm_building", "eubucco_type", "buildingsense_template"} <= set(names)
    for n in names:
        t = load_taxonomy(n)
        assert t.levels[-1] == "rci"
        assert set(t.classes("rci")) <= {"residential", "commercial", "industrial", "other"}


def test_nyc_rollup_fine_to_land_use_to_rci():
    t = load_taxonomy("nyc_building_class")
    assert t.levels == ("building_class", "land_use", "rci")
    m = t.map(["A1", "d6", "O4", "E1", "T2", "W1", "Q3", "V0", "H8", "G1"], "land_use")
    assert m.labels == ["01 one and two family buildings", "04 mixed residential and commercial",
                        "05 commercial and office buildings", "06 industrial and manufacturing",
                        "07 transportation and utility", "08 public facilities and institutions",
                        "09 open space and outdoor recreation", "11 vacant land", "08 public facilities and institutions",
                        "10 parking facilities"]
    r = t.map(["A1", "D6", "O4", "E1", "T2", "W1", "Q3", "V0"], "rci").labels
    assert r == ["residential", "residential", "commercial", "industrial", "industrial", "commercial", "other", "none"]
    # fine level keeps the code itself (pattern rows), spelled as in the data
    assert t.map(["A1"], "building_class").labels == ["A1"]
    # a label already given at a coarser level rolls up from there
    assert t.map(["05 commercial and office buildings", "industrial"], "rci").labels == ["commercial", "industrial"]


def test_osm_follows_seed_definitions():
    t = load_taxonomy("osm_building")
    m = t.map(["house", "warehouse", "train_station", "school", "hospital", "government", "yes", "retail"], "rci")
    assert m.labels == ["residential", "industrial", "industrial", "commercial", "commercial", "commercial",
                        "none", "commercial"]


def test_eubucco_decisions():
    t = load_taxonomy("eubucco_type")
    assert t.map(["public", "agricultural", "others", "Residential"]).labels == \
        ["commercial", "other", "other", "residential"]
    assert t.classes() == ["residential", "commercial", "industrial", "other"]


def test_unknown_labels_listed_counted_and_policy():
    t = load_taxonomy("eubucco_type")
    m = t.map(["castle", "castle", "mall", "residential", None, ""], unknown="other")
    assert m.labels[:4] == ["other", "other", "other", "residential"]
    assert m.unknown == {"castle": 2, "mall": 1} and m.missing == 2
    assert t.map(["castle"], unknown="ignore").labels == ["none"]
    with pytest.raises(InputError, match=r"'castle' \(2\)"):
        t.map(["castle", "castle", "residential"], unknown="error")


def test_user_file_errors(tmp_path):
    p = tmp_path / "bad.csv"
    p.write_text("fine,coarse,rci\na,x,residential\nb,x,commercial\n")
    with pytest.raises(InputError, match="rolls up to both"):
        Taxonomy.from_csv(p)
    p.write_text("fine,rci\na\n")
    with pytest.raises(InputError, match="expected 2"):
        Taxonomy.from_csv(p)
    with pytest.raises(InputError, match="does not exist"):
        load_taxonomy(tmp_path / "missing.csv")
    with pytest.raises(InputError, match="no level"):
        load_taxonomy("eubucco_type").classes("coarse")
