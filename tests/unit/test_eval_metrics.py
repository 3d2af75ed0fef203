"""Classification metrics against scikit-learn and hand-computed cases."""
import numpy as np
import pytest
from sklearn import metrics as skm

from edifice.core.evaluation import metrics as M


def _random_pairs(n=500, k=5, seed=1):
    rng = np.random.default_rng(seed)
    r = rng.integers(0, k, n)
    p = np.where(rng.random(n) < 0.6, r, rng.integers(0, k, n))
    return r, p


def test_kappa_and_averages_match_sklearn():
    r, p = _random_pairs()
    cm = M.confusion_matrix(r, p, 5)
    assert np.array_equal(cm, skm.confusion_matrix(r, p, labels=range(5)))
    assert M.cohen_kappa(cm) == pytest.approx(skm.cohen_kappa_score(r, p))
    av = M.average_metrics(cm)
    for avg in ("macro", "weighted", "micro"):
        pr, rc, f1, _ = skm.precision_recall_fscore_support(r, p, average=avg, zero_division=0)
        assert av[avg]["precision"] == pytest.approx(pr)
        assert av[avg]["recall"] == pytest.approx(rc)
        assert av[avg]["f1"] == pytest.approx(f1)
    assert av["micro"]["f1"] == pytest.approx(skm.accuracy_score(r, p))
    # weighted recall equals overall accuracy (why BuildingSense's Acc == Recall)
    assert av["weighted"]["recall"] == pytest.approx(M.overall_accuracy(cm))


def test_hand_computed_small_case():
    # reference a a a b b c ; prediction a a b b c c
    res = M.evaluate_labels(list("aaabbc"), list("aabbcc"), n_boot=0)
    assert res["classes"] == ["a", "b", "c"]
    assert res["confusion_matrix"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert res["overall_accuracy"] == pytest.approx(4 / 6)
    a = res["per_class"]["a"]
    assert (a["precision"], a["recall"], a["support"]) == (1.0, pytest.approx(2 / 3), 3)
    assert a["accuracy"] == pytest.approx(5 / 6)
    # p_o = 4/6, p_e = (3*2 + 2*2 + 1*2)/36 = 12/36
    assert res["kappa"] == pytest.approx((4 / 6 - 1 / 3) / (1 - 1 / 3))
    assert "confidence_intervals" not in res


def test_class_absent_from_reference_is_defined():
    res = M.evaluate_labels(["r", "r", "c"], ["r", "i", "c"], classes=["r", "c", "i", "other"], n_boot=200)
    i = res["per_class"]["i"]
    assert i == {"accuracy": pytest.approx(2 / 3), "precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert res["absent_from_reference"] == ["i", "other"]
    assert res["absent_from_prediction"] == ["other"]
    # macro over classes present on either side (r, c, i) as scikit-learn without labels=
    f1 = skm.f1_score(["r", "r", "c"], ["r", "i", "c"], average="macro", zero_division=0)
    assert res["averages"]["macro"]["f1"] == pytest.approx(f1)
    values = [v for d in res["per_class"].values() for v in d.values()]
    assert all(np.isfinite(values))
    assert all(np.isfinite(res["confidence_intervals"]["kappa"]))


def test_kappa_degenerate_cases():
    assert M.cohen_kappa(np.array([[5, 0], [0, 0]])) == 1.0
    assert M.cohen_kappa(np.zeros((2, 2))) == 0.0


def test_bootstrap_is_seeded_and_brackets_estimate():
    r, p = _random_pairs(400, 3, seed=5)
    cm = M.confusion_matrix(r, p, 3)
    a = M.bootstrap_ci(cm, n_boot=500, seed=3, class_names=["x", "y", "z"])
    b = M.bootstrap_ci(cm, n_boot=500, seed=3, class_names=["x", "y", "z"])
    assert a == b
    lo, hi = a["overall_accuracy"]
    assert lo < M.overall_accuracy(cm) < hi
    assert lo < hi
    lo, hi = a["kappa"]
    assert lo < M.cohen_kappa(cm) < hi
    assert a["per_class"]["x"]["f1"][0] <= a["per_class"]["x"]["f1"][1]
    # the multinomial shortcut agrees with resampling items (same distribution)
    rng = np.random.default_rng(0)
    accs = [np.mean((r == p)[rng.integers(0, len(r), len(r))]) for _ in range(500)]
    assert np.quantile(accs, 0.025) == pytest.approx(a["overall_accuracy"][0], abs=0.02)
    assert np.quantile(accs, 0.975) == pytest.approx(a["overall_accuracy"][1], abs=0.02)


def test_evaluate_labels_ignore_and_errors():
    res = M.evaluate_labels(["a", "none", "b"], ["a", "b", "none"], ignore=["none"], n_boot=0)
    assert res["n"] == 1 and res["ignored"] == 2
    with pytest.raises(ValueError):
        M.evaluate_labels(["a"], ["a", "b"])
    with pytest.raises(ValueError):
        M.evaluate_labels(["a"], ["z"], classes=["a"])
