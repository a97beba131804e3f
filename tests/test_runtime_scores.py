"""Pure score functions: no model needed."""

from __future__ import annotations

import numpy as np
import pytest

from edgecls.runtime.scores import Category, ScoreSmoother, dequantize, quantize, top1_margin, top_k


@pytest.mark.parametrize(
    "dtype, scale, zero_point",
    [
        (np.uint8, 1 / 255, 0),
        (np.uint8, 1 / 256, 128),
        (np.uint8, 0.02, 255),  # zero point at the top of the range
        (np.int8, 1 / 256, -128),  # zero point at the bottom (typical softmax output)
        (np.int8, 0.05, 127),
        (np.int8, 0.1, 0),
    ],
)
def test_quantize_dequantize_round_trip(dtype, scale, zero_point):
    info = np.iinfo(dtype)
    lo, hi = (info.min - zero_point) * scale, (info.max - zero_point) * scale
    x = np.linspace(lo, hi, 1001, dtype=np.float32)
    q = quantize(x, scale, zero_point, dtype)
    assert q.dtype == dtype
    back = dequantize(q, scale, zero_point)
    assert back.dtype == np.float32
    # Within the representable range the error is at most half a step.
    assert np.max(np.abs(back - x)) <= scale / 2 + 1e-6
    # Every integer survives the other way round exactly.
    all_q = np.arange(info.min, info.max + 1).astype(dtype)
    np.testing.assert_array_equal(quantize(dequantize(all_q, scale, zero_point), scale, zero_point, dtype), all_q)


def test_quantize_clips_to_dtype_range():
    q = quantize(np.array([-1000.0, 1000.0]), 1.0, 0, np.uint8)
    np.testing.assert_array_equal(q, [0, 255])
    q = quantize(np.array([-1000.0, 1000.0]), 1.0, 0, np.int8)
    np.testing.assert_array_equal(q, [-128, 127])


def test_quantize_raw_pixels_with_unit_scale_is_identity():
    pixels = np.arange(256, dtype=np.uint8)
    np.testing.assert_array_equal(quantize(pixels, 1.0, 0, np.uint8), pixels)
    np.testing.assert_array_equal(quantize(pixels, 1.0, -128, np.int8), (pixels.astype(int) - 128).astype(np.int8))


def test_dequantize_widens_before_subtracting():
    # In uint8, 3 - 128 would wrap to 131; the real value is -125 * scale.
    out = dequantize(np.array([3], dtype=np.uint8), 0.5, 128)
    assert out[0] == pytest.approx(-62.5)
    out = dequantize(np.array([-128, 127], dtype=np.int8), 1 / 256, -128)
    np.testing.assert_allclose(out, [0.0, 255 / 256])


def test_quantize_rejects_bad_arguments():
    with pytest.raises(ValueError):
        quantize(np.zeros(2), 0.0, 0, np.uint8)
    with pytest.raises(ValueError):
        quantize(np.zeros(2), 1.0, 0, np.float32)


def test_top_k_orders_best_first_with_labels():
    cats = top_k(np.array([0.1, 0.6, 0.3]), 2, labels=["a", "b", "c"])
    assert cats == [Category(1, "b", pytest.approx(0.6)), Category(2, "c", pytest.approx(0.3))]


def test_top_k_ties_keep_lower_index_first():
    cats = top_k(np.array([0.25, 0.25, 0.5, 0.25]), 4)
    assert [c.index for c in cats] == [2, 0, 1, 3]


def test_top_k_threshold_and_k_larger_than_classes():
    s = np.array([0.05, 0.7, 0.25])
    assert [c.index for c in top_k(s, 10)] == [1, 2, 0]
    assert [c.index for c in top_k(s, 10, threshold=0.25)] == [1, 2]  # at threshold is kept
    assert top_k(s, 3, threshold=0.9) == []
    assert top_k(s, 0) == []


def test_top_k_default_labels_and_short_label_list():
    cats = top_k(np.array([0.2, 0.8]), 2, labels=["only"])
    assert [c.label for c in cats] == ["class_1", "only"]
    assert cats[0].as_dict() == {"label": "class_1", "score": pytest.approx(0.8), "index": 1}


def test_smoother_is_an_exponential_moving_average():
    sm = ScoreSmoother(0.5)
    np.testing.assert_allclose(sm(np.array([1.0, 0.0])), [1.0, 0.0])
    np.testing.assert_allclose(sm(np.array([0.0, 1.0])), [0.5, 0.5])
    np.testing.assert_allclose(sm(np.array([0.0, 1.0])), [0.25, 0.75])
    assert ScoreSmoother(0.0)(np.array([0.3, 0.7])).tolist() == pytest.approx([0.3, 0.7])
    with pytest.raises(ValueError):
        ScoreSmoother(1.0)


@pytest.mark.parametrize("probs, margins", [
    ([[0.5, 0.46, 0.04], [0.05, 0.15, 0.8]], [0.04, 0.65]),   # order of the classes does not matter
    ([[0.3, 0.3, 0.4], [0.45, 0.45, 0.1]], [0.1, 0.0]),       # an exact tie has margin 0
    ([[0.7], [0.2]], [0.7, 0.2]),                             # one class: the score itself
])
def test_top1_margin_is_top1_minus_runner_up(probs, margins):
    assert top1_margin(np.array(probs)) == pytest.approx(margins, abs=1e-6)


def test_top1_margin_of_no_rows_is_empty():
    assert top1_margin(np.zeros((0, 3))).shape == (0,)
