"""AlignedStats (the flow's analytics state) gives, after bar revisions in any order, the rows an
in-order arrival gives: random bars, revisions, late bars and silences, against the in-order run."""

from __future__ import annotations

import random
from dataclasses import dataclass

import pytest

from ticklens.domain.align import Leg, LegBars
from ticklens.domain.aligned import AlignedStats
from ticklens.domain.stats.pair import PairAnalytics, PairParams, PairRow

TF = 1000
LEGS = ["aaa", "bbb"]


@dataclass(slots=True)
class _PairRows:
    stats: PairAnalytics

    def clone(self) -> _PairRows:
        return _PairRows(self.stats.clone())

    def on_row(self, start_ms: int, row: dict[str, Leg]) -> PairRow:
        return self.stats.update(start_ms, row["aaa"][0], row["bbb"][0])


def _final_bars(rng: random.Random, n: int) -> dict[str, dict[int, tuple[int, float, float, float]]]:
    """Each leg's bars: random walks with quiet buckets, and one silence longer than the idle limit."""
    out = {}
    for k, leg in enumerate(LEGS):
        price, bars = 100.0 * (k + 1), {}
        for i in range(n):
            if 300 <= i < 1000 or rng.random() < 0.15:
                continue  # quiet bucket (300..999: both legs silent for 700 s, past the 600-bar idle limit)
            price += rng.gauss(0, 0.5)
            bars[i * TF] = (i * TF, round(price, 2), float(rng.randint(1, 9)), 0.0)
        out[leg] = bars
    return out


def _run(events: list[LegBars], keep_ms: int) -> tuple[dict[int, dict], AlignedStats]:
    state = AlignedStats(list(LEGS), TF, keep_ms, _PairRows(PairAnalytics(PairParams(window=12, adf_every=4))))
    stored: dict[int, dict] = {}
    for leg in events:
        out = state.push(leg)
        for r in [*out.revised, *out.fresh]:
            stored[r.start_ms] = r.as_dict()  # type: ignore[attr-defined]
    return stored, state


def _in_order(final: dict, n: int) -> list[LegBars]:
    return [
        LegBars(leg, "1s", [final[leg][i * TF]] if i * TF in final[leg] else [], (i + 1) * TF)
        for i in range(n)
        for leg in LEGS
    ]


def _out_of_order(final: dict, n: int, rng: random.Random, reach: int) -> list[LegBars]:
    """Bars first sent with other values, or held back, then sent final up to `reach` buckets later."""
    due: dict[int, list[tuple[str, tuple]]] = {}
    events = []
    for i in range(n + reach + 1):
        for leg in LEGS:
            send = []
            bar = final[leg].get(i * TF) if i < n else None
            if bar is not None:
                fate = rng.random()
                if fate < 0.3:  # first seen with a different close and volume, revised later
                    send.append((bar[0], bar[1] + rng.choice((-1, 1)) * 0.37, bar[2] + 1, 0.0))
                    due.setdefault(i + rng.randint(1, reach), []).append((leg, bar))
                elif fate < 0.4:  # its trades arrive only later: a late bar in a bucket thought quiet
                    due.setdefault(i + rng.randint(1, reach), []).append((leg, bar))
                else:
                    send.append(bar)
            send += [b for lg, b in due.get(i, []) if lg == leg]
            events.append(LegBars(leg, "1s", send, min(i + 1, n) * TF))
        due.pop(i, None)
    assert not due
    return events


@pytest.mark.parametrize(("seed", "reach"), [(0, 1), (1, 2), (2, 5), (3, 11), (4, 25), (5, 3)])
def test_revisions_in_any_order_give_the_rows_of_an_in_order_arrival(seed: int, reach: int) -> None:
    rng = random.Random(seed)
    n = 1400
    final = _final_bars(rng, n)
    keep_ms = (reach + 2) * TF  # a revision comes at most `reach` buckets after the bar
    want, _ = _run(_in_order(final, n), keep_ms)
    got, state = _run(_out_of_order(final, n, rng, reach), keep_ms)
    assert len(want) > 500
    assert got == want
    assert state.rewinds > 0
    # Bounded memory: bars and checkpoints only over the revision horizon.
    assert max(len(v) for v in state.bars.values()) <= (keep_ms + TF) // TF + 2 * state.every + 2
    assert len(state.checkpoints) <= (keep_ms + TF) // TF // state.every + 3


def test_a_late_first_bar_moves_the_grid_start_as_in_order_arrival_would() -> None:
    final = {"aaa": {t * TF: (t * TF, 10.0 + t, 1.0, 0.0) for t in range(0, 40)}}
    final["bbb"] = {t * TF: (t * TF, 20.0 + 0.5 * t, 1.0, 0.0) for t in range(3, 40)}
    want, _ = _run(_in_order(final, 40), 10 * TF)
    late = final["bbb"].pop(3 * TF)  # bbb's first bar arrives after bars 4 and 5 were aligned
    events = _in_order(final, 40)
    events.insert(14, LegBars("bbb", "1s", [late], 7 * TF))
    got, _ = _run(events, 10 * TF)
    assert min(want) == 3 * TF and got == want
