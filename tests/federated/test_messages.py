import json

import numpy as np
import pytest

from fedmm.engines.wire import check_arrays
from fedmm.federated.messages import Message, MessageError
from fedmm.engines.wire import load_message, save_message


def _msg(rng):
    return Message("upload", {"shared/w": rng.standard_normal((3, 4)).astype(np.float32),
                              "public/index": np.arange(5, dtype=np.int64)},
                   {"client": "client_3", "val_score": 0.25, "trained_groups": ["fusion"]})


def test_round_trip_preserves_arrays_and_meta(tmp_path):
    rng = np.random.default_rng(0)
    msg = _msg(rng)
    save_message(msg, tmp_path / "up")
    back = load_message(tmp_path / "up", kind="upload")
    assert back.meta == msg.meta
    assert set(back.arrays) == set(msg.arrays)
    for k in msg.arrays:
        np.testing.assert_array_equal(back.arrays[k], msg.arrays[k])
        assert back.arrays[k].dtype == msg.arrays[k].dtype
    assert not list(tmp_path.glob("*.tmp")), "atomic writes leave no temporary files"


def test_wrong_kind_and_missing_files_are_clear_errors(tmp_path):
    save_message(_msg(np.random.default_rng(1)), tmp_path / "up")
    with pytest.raises(MessageError, match="expected a 'broadcast'"):
        load_message(tmp_path / "up", kind="broadcast")
    with pytest.raises(MessageError, match="missing"):
        load_message(tmp_path / "nothing")


def test_index_mismatch_and_nan_are_rejected(tmp_path):
    msg = _msg(np.random.default_rng(2))
    save_message(msg, tmp_path / "up")
    header = json.loads((tmp_path / "up.json").read_text())
    header["arrays"]["shared/w"] = [[4, 3], "float32"]
    (tmp_path / "up.json").write_text(json.dumps(header))
    with pytest.raises(MessageError, match="index says"):
        load_message(tmp_path / "up")
    msg.arrays["shared/w"][1, 2] = np.nan
    save_message(msg, tmp_path / "bad")
    with pytest.raises(MessageError, match="NaN"):
        load_message(tmp_path / "bad")


def test_corrupt_safetensors_is_a_message_error(tmp_path):
    save_message(_msg(np.random.default_rng(3)), tmp_path / "up")
    (tmp_path / "up.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(MessageError, match="unreadable"):
        load_message(tmp_path / "up")


def test_check_arrays_validates_names_shapes_dtypes():
    spec = {"a": (2, None), "b": (3,)}
    check_arrays({"a": np.ones((2, 7), np.float32)}, spec, "x")
    with pytest.raises(MessageError, match="unexpected array 'c'"):
        check_arrays({"c": np.ones(3, np.float32)}, spec, "x")
    with pytest.raises(MessageError, match="shape"):
        check_arrays({"b": np.ones(4, np.float32)}, spec, "x")
    with pytest.raises(MessageError, match="dtype"):
        check_arrays({"b": np.ones(3, np.float64)}, spec, "x")
    with pytest.raises(MessageError, match="missing arrays"):
        check_arrays({}, spec, "x", required={"a"})
    with pytest.raises(MessageError, match="NaN"):
        check_arrays({"b": np.array([1, np.inf, 0], np.float32)}, spec, "x")
