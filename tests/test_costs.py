from eval.costs import arm_cost, break_even, percentile


def test_percentile_and_cost_per_1k() -> None:
    assert percentile([1, 2, 3, 4, 5], 0.5) == 3 and percentile([1, 2, 3, 4, 5], 0.95) == 5
    c = arm_cost("base", [1000.0, 3000.0], [100.0, 300.0], [50.0, 70.0], price_per_hour=3.6, one_off_seconds=0)
    assert c.seconds_per_answer == 2.0 and abs(c.per_1k_answers - 2.0) < 1e-9  # 2 s × 1000 × 0.001/s


def test_break_even_known_value() -> None:
    # ft: 100 s one-off, 1 s per answer; rag: 10 s one-off, 2 s per answer; 1 unit/s price
    ft = arm_cost("ft", [1000.0], [1.0], [1.0], price_per_hour=3600, one_off_seconds=100)
    rag = arm_cost("rag", [2000.0], [1.0], [1.0], price_per_hour=3600, one_off_seconds=10)
    assert abs(break_even(ft, rag) - 90.0) < 1e-6  # (100 − 10) / (2 − 1)
    slow_ft = arm_cost("ft", [3000.0], [1.0], [1.0], price_per_hour=3600, one_off_seconds=100)
    assert break_even(slow_ft, rag) is None  # dearer up front and per answer: never pays back
