"""Training labels and evaluation taxonomies classify the same source values alike.

Training presets (``taxonomies/building_use/``) map a value to residential, commercial,
industrial or unknown (use ignored in mask B); evaluation taxonomies
(``taxonomies/buildings/``) map it to R/C/I, ``other`` (scored, but not R/C/I) or
``none`` (excluded). A building the evaluation calls industrial must not be trained as
commercial: for every value either file names, both give the same R/C/I class, and a
value that is not R/C/I for one is not R/C/I for the other."""
import pytest

from edifice.core.use.labels import load_building_mapping
from edifice.core.taxonomy import load_taxonomy

RCI = {"residential", "commercial", "industrial"}


def _train_class(mapping, key, value):
    cls = mapping.classify([(key, value)])
    return cls if cls in RCI else "not R/C/I"


def _eval_class(tax, value):
    cls = tax.lookup_at(value, tax.level_index("rci"))
    return cls if cls in RCI else "not R/C/I"


@pytest.mark.parametrize("preset,key", [("eubucco_type", "type"), ("osm_building", "building")])
def test_training_and_evaluation_presets_agree(preset, key):
    mapping, tax = load_building_mapping(preset), load_taxonomy(preset)
    eval_values = {pattern for pattern, _ in tax.rows if not any(c in pattern for c in "*?[")}
    train_values = {r.pattern for r in mapping.rules if r.key in ("", key) and not any(c in r.pattern for c in "*?[")}
    values = sorted(eval_values | train_values)
    assert len(values) >= (6 if preset == "eubucco_type" else 60)
    differ = {v: (_train_class(mapping, key, v), _eval_class(tax, v)) for v in values
              if _train_class(mapping, key, v) != _eval_class(tax, v)}
    assert differ == {}, f"value: (training class, evaluation class) {differ}"
