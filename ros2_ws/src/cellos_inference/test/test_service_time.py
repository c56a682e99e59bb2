from cellos_inference.core.service_time import ServiceTime


def test_interpolates_and_extrapolates():
    s = ServiceTime(alpha=1.0)
    assert s.estimate(3) == s.initial_s * 3
    s.observe(1, 0.010)
    s.observe(8, 0.040)
    assert s.estimate(1) == 0.010
    assert abs(s.estimate(4) - (0.010 + 3 / 7 * 0.030)) < 1e-12
    assert abs(s.estimate(16) - 0.080) < 1e-12
    assert abs(s.per_item(8) - 0.005) < 1e-12


def test_moving_estimate_follows_new_measurements():
    s = ServiceTime(alpha=0.5)
    s.observe(2, 0.010)
    s.observe(2, 0.020)
    assert abs(s.estimate(2) - 0.015) < 1e-12
