"""The shift that keeps the most wires straight between two columns (``frag._align``) and its rounding
(``frag._round3``), against their plain definitions: Python's ``round`` and a count of every wire's rounded shift."""

from __future__ import annotations

import random
import struct
from collections import Counter
from operator import sub

from ncd.render.frag import _align, _round3, flat


def _bits(v: float) -> bytes:
    return struct.pack("d", v)


def _plain_align(outs: list[list[float]], ins: list[list[float]]) -> float:
    shifts = list(map(sub, flat(outs), flat(ins)))
    if not shifts:
        return 0.0
    counts = Counter(round(d, 3) for d in shifts)
    best = max(counts.values())
    return float(min((o for o, c in counts.items() if c == best), key=lambda o: (abs(o), o)))


def test_round3_is_round_to_three_digits_bit_for_bit() -> None:
    rng = random.Random(7)
    values = [0.0, -0.0, 0.1, -0.1, 12.345, -12.345, 0.0005, -0.0005, 0.0015, 2.5, 1e-9, -1e-9, 1 / 3, 8e9 + 0.001,
              123456.789, 1e12, -1e12, 9e12, 1e300, float("inf"), -float("inf")]
    for _ in range(20_000):
        a = rng.choice([rng.uniform(-500, 500), round(rng.uniform(-500, 500), 3), rng.randint(-4000, 4000) * 0.5,
                        round(rng.uniform(-500, 500), 2) - round(rng.uniform(-500, 500), 3), rng.randint(-10**5, 10**5) / 375])
        values += [a, a * 0.1, a - 16.0 * rng.choice([1.0, 0.6, 1.5, 0.45])]
    for v in values:
        assert _bits(_round3(v)) == _bits(round(v, 3)), v


def test_align_is_the_commonest_rounded_shift_nearest_zero() -> None:
    rng = random.Random(11)
    for _ in range(3_000):
        segs = rng.randint(1, 4)
        outs = [[rng.choice([0.0, 16.0, 22.4, 7.5, 3.0001, -0.0004]) + 16.0 * k + rng.choice([0.0, 0.0, 1e-4, 0.3337])
                 for k in range(rng.randint(0, 4))] for _ in range(segs)]
        shift = rng.choice([0.0, 8.0, -16.0, 0.1, 2.0004])
        ins = [[y - shift + rng.choice([0.0, 0.0, 0.0, 16.0, -0.0002, 0.0007]) for y in seg] for seg in outs]
        if rng.random() < 0.2:
            ins = ins[:-1]  # fewer inputs than outputs: the wires that meet
        assert _bits(_align(outs, ins)) == _bits(_plain_align(outs, ins)), (outs, ins)
