import numpy as np
import torch

from fedmm.federated.messages import Message
from fedmm.federated.mechanisms.logit_kd import select_teachers
from fedmm.federated.server import global_update, pair_centers, run_clustering_and_fusion
from fedmm.models.head import SharedHead


def _upload(name, n, s, arrays):
    return Message("upload", arrays, {"client": name, "n_train": n, "val_score": s})


def test_global_update_weights_by_group_by_hand():
    shared = {"image_adapter.proj.weight": np.zeros((2, 2), np.float32),
              "classifier.net.0.bias": np.zeros(3, np.float32)}
    a = _upload("a", 10, 0.5, {"shared/image_adapter.proj.weight": np.full((2, 2), 1.0, np.float32),
                               "shared/classifier.net.0.bias": np.array([1, 2, 3], np.float32)})
    b = _upload("b", 30, 0.5, {"shared/classifier.net.0.bias": np.array([5, 6, 7], np.float32)})
    new = global_update(shared, [a, b], weighting="samples")
    # only client a trained the image adapter: its values are taken as they are
    np.testing.assert_allclose(new["image_adapter.proj.weight"], np.ones((2, 2)))
    # classifier: (10 * [1,2,3] + 30 * [5,6,7]) / 40
    np.testing.assert_allclose(new["classifier.net.0.bias"], [4.0, 5.0, 6.0], rtol=1e-6)


def test_untrained_group_keeps_previous_value_and_median_resists_outlier():
    shared = {"fusion.i2t.bg": np.full(2, 7.0, np.float32), "classifier.net.0.bias": np.zeros(2, np.float32)}
    ups = [_upload(str(i), 1, 0.5, {"shared/classifier.net.0.bias": np.array([v, v], np.float32)})
           for i, v in enumerate([1.0, 2.0, 1000.0])]
    new = global_update(shared, ups, weighting="uniform", method="median")
    np.testing.assert_array_equal(new["fusion.i2t.bg"], [7.0, 7.0])
    np.testing.assert_array_equal(new["classifier.net.0.bias"], [2.0, 2.0])
    krum = global_update(shared, ups, weighting="uniform", method="krum", n_byzantine=1)
    np.testing.assert_allclose(krum["classifier.net.0.bias"], [1.5, 1.5])


def test_hungarian_pairing_recovers_a_permutation():
    rng = np.random.default_rng(0)
    ci = rng.standard_normal((6, 8)).astype(np.float32)
    perm = rng.permutation(6)
    ct = ci[perm] + 0.01 * rng.standard_normal((6, 8)).astype(np.float32)
    h = np.eye(6, dtype=np.float32)
    rows, cols = pair_centers(ci, h, ct, h[perm], 1.0, 1.0, "hungarian", 0)
    # image center i must pair with the text center that is its copy: perm[cols[i]] == i
    np.testing.assert_array_equal(perm[cols], rows)
    rows_r, cols_r = pair_centers(ci, h, ct[:4], h[perm][:4], 1.0, 1.0, "hungarian", 0)
    assert len(rows_r) == 4 and len(set(cols_r)) == 4  # rectangular


def test_teachers_are_chosen_per_view_and_soft_labels_weighted():
    logits_a = np.array([[2.0, 0.0]], np.float32)
    logits_b = np.array([[0.0, 2.0]], np.float32)
    ups = [_upload("a", 1, 0.9, {"public/full_logits": logits_a, "public/text_only_logits": logits_b}),
           _upload("b", 1, 0.3, {"public/full_logits": logits_b, "public/text_only_logits": logits_a}),
           _upload("c", 1, 0.6, {"public/full_logits": logits_b, "public/text_only_logits": logits_a}),
           _upload("t", 1, 0.2, {"public/text_only_logits": logits_b})]
    for u in ups[:3]:
        u.meta["modality"] = "multimodal"
    ups[3].meta["modality"] = "text_only"
    ups[0].meta["val_scores"] = {"full": 0.9, "text_only": 0.1}   # a is a poor text-only teacher
    teachers, students, probs = select_teachers(ups, threshold=-1, temperature=1.0)
    assert teachers["full"] == ["a", "c"] and set(probs) == {"full", "text_only"}
    pa, pb = (torch.softmax(torch.tensor(x), -1).numpy() for x in (logits_a, logits_b))
    np.testing.assert_allclose(probs["full"], (0.9 * pa + 0.6 * pb) / 1.5, rtol=1e-6)
    # text_only view: scores a 0.1, b 0.3, c 0.6, t 0.2 -> median 0.25: teachers b, c
    assert teachers["text_only"] == ["b", "c"]
    np.testing.assert_allclose(probs["text_only"], pa, rtol=1e-6)
    # students: below the median of their own view (b on full; t on text_only; a is a full-view teacher)
    assert sorted(students) == ["b", "t"]


def test_clustering_and_fusion_builds_paired_prototypes_and_calibrates():
    torch.manual_seed(0)
    rng = np.random.default_rng(1)
    head = SharedHead(16, 16, n_classes=3, d=8, heads=2)
    before = {k: v.clone() for k, v in head.state_dict().items()}
    ups = []
    for i in range(3):
        arrays = {}
        for mod in ("image", "text"):
            arrays[f"summary/{mod}_centroids"] = rng.standard_normal((4, 8)).astype(np.float32)
            arrays[f"summary/{mod}_counts"] = np.full(4, 10, np.float32)
            arrays[f"summary/{mod}_hist"] = rng.integers(0, 5, (4, 3)).astype(np.float32)
        ups.append(_upload(str(i), 40, 0.5, arrays))

    class F:
        n_centers, pair_alpha, pair_beta, pairing, calib_steps, calib_lr = 5, 1.0, 1.0, "hungarian", 3, 1e-2
    gv = run_clustering_and_fusion(ups, head, F, 3, seed=0)
    assert gv.img_centers.shape == (5, 8) and gv.txt_centers.shape == (5, 8)
    assert gv.prototypes.shape == (5, 16) and np.isfinite(gv.prototypes).all()
    assert sorted(gv.pair_img.tolist()) == list(range(5)) and sorted(gv.pair_txt.tolist()) == list(range(5))
    np.testing.assert_allclose(gv.hist_img.sum(), sum(u.arrays["summary/image_hist"].sum() for u in ups))
    after = head.state_dict()
    assert not torch.equal(before["classifier.net.3.weight"], after["classifier.net.3.weight"])
    assert torch.equal(before["image_adapter.proj.weight"], after["image_adapter.proj.weight"])
