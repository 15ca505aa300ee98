import numpy as np

from fedmm.metrics import classification_metrics, mean_metrics


def test_metrics_by_hand():
    # truth 0,0,1,2 ; predictions 0,1,1,2
    logits = np.array([[3, 1, 0], [0, 2, 1], [0, 5, 1], [0, 1, 4]], float)
    m = classification_metrics(logits, np.array([0, 0, 1, 2]), ["a", "b", "c"])
    assert m["accuracy"] == 0.75
    # F1: a = 2*1/(2+0+1) = 2/3, b = 2*1/(2+1+0) = 2/3, c = 1
    np.testing.assert_allclose(m["macro_f1"], (2 / 3 + 2 / 3 + 1) / 3)
    assert m["per_class_recall"] == {"a": 0.5, "b": 1.0, "c": 1.0}
    # AUROC class a: scores pos {3, 0} vs neg {0, 0}: pairs (3>0)x2 = 2, (0=0)x2 = 1 -> 3/4
    aucs = [0.75, 1.0, 1.0]
    np.testing.assert_allclose(m["macro_auroc"], np.mean(aucs))


def test_absent_class_left_out_and_multilabel():
    m = classification_metrics(np.array([[2.0, 0, 0], [0, 2.0, 0]]), np.array([0, 1]), ["a", "b", "c"])
    assert m["macro_f1"] == 1.0 and "c" not in m["per_class_recall"]
    ml = classification_metrics(np.array([[1.0, -1.0], [1.0, 1.0]]), np.array([[1, 0], [0, 1]]), ["x", "y"],
                                multilabel=True)
    assert ml["accuracy"] == 0.75


def test_mean_metrics_nested():
    out = mean_metrics([{"f1": 0.2, "r": {"a": 1.0}}, {"f1": 0.4, "r": {"a": 0.0}}])
    np.testing.assert_allclose(out["f1"], 0.3)
    assert out["r"] == {"a": 0.5}


def test_per_class_auroc_listed_for_scorable_classes():
    logits = np.array([[3, 1, 0], [0, 2, 1], [0, 5, 1], [0, 1, 4]], float)
    m = classification_metrics(logits, np.array([0, 0, 1, 2]), ["a", "b", "c"])
    assert m["per_class_auroc"] == {"a": 0.75, "b": 1.0, "c": 1.0}
    # multi-label: class y has no negative row -> no AUROC, left out of the macro as well
    ml = classification_metrics(np.array([[2.0, 1.0], [-1.0, 3.0], [0.5, 2.0]]), np.array([[1, 1], [0, 1], [0, 1]]),
                                ["x", "y"], multilabel=True)
    assert ml["per_class_auroc"] == {"x": 1.0} and ml["macro_auroc"] == 1.0


def test_mean_metrics_keys_missing_in_some_items():
    out = mean_metrics([{"f1": 0.2, "r": {"a": 1.0}}, {"f1": 0.4, "r": {"a": 0.0, "b": 0.5}}])
    assert out["r"] == {"a": 0.5, "b": 0.5}
