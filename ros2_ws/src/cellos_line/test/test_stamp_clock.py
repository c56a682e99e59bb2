"""The line's stamp clock: continuous across wall-clock steps, which it reports."""
from cellos_line.core.stamp_clock import StampClock


class Clocks:
    def __init__(self):
        self.mono, self.wall_minus_mono = 1_000_000_000, 1_800_000_000_000_000_000

    def wall(self):
        return self.mono + self.wall_minus_mono

    def tick(self, ns):
        self.mono += ns


def test_a_wall_step_is_reported_once_and_never_followed():
    c = Clocks()
    clock = StampClock(c.wall, lambda: c.mono)
    t0 = clock.now_ns()
    c.tick(10_000_000)
    assert clock.check() == 0 and clock.now_ns() - t0 == 10_000_000
    c.wall_minus_mono += 5_000_000_000          # forward 5 s
    assert clock.check() == 5_000_000_000 and clock.check() == 0
    c.tick(10_000_000)
    assert clock.now_ns() - t0 == 20_000_000     # no jump here
    c.wall_minus_mono -= 8_000_000_000          # back 8 s
    assert clock.check() == -8_000_000_000
    assert clock.steps == 2 and clock.wall_offset_ns() == -3_000_000_000
    # a DDS stamp on the (stepped) wall clock, taken now, is now on this clock
    assert clock.from_wall(c.wall()) == clock.now_ns() and clock.from_wall(0) == 0


def test_the_wall_clocks_rate_is_followed_between_checks():
    c = Clocks()
    clock = StampClock(c.wall, lambda: c.mono)
    t0, w0 = clock.now_ns(), c.wall()
    for _ in range(100):         # 100 ppm faster than the monotonic clock, checked every 50 ms
        c.tick(50_000_000)
        c.wall_minus_mono += 5_000
        assert clock.check() == 0
    assert clock.now_ns() - t0 == c.wall() - w0 and clock.steps == 0
