"""Small SVG charts for the evaluation report: grouped bars with interval whiskers, and lines.

Plain SVG strings (no JavaScript, no external files), so the same chart is inlined in the HTML page and
written beside the Markdown twin. Every mark carries a ``<title>`` (the exact number on hover).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape

PALETTE = ("#4477aa", "#ee6677", "#228833", "#ccbb44", "#66ccee", "#aa3377", "#bbbbbb", "#000000")
WIDTH, HEIGHT = 760, 320
LEFT, RIGHT, TOP, BOTTOM = 56, 170, 34, 74  # the legend sits in the right margin


@dataclass
class Bar:
    value: float  # in [0, 1]
    lo: float | None = None  # interval, same scale
    hi: float | None = None
    note: str = ""  # hover text beyond the number (e.g. "153/300")


@dataclass
class BarChart:
    title: str
    groups: list[str]  # x positions (subsets, datasets)
    series: dict[str, list[Bar | None]] = field(default_factory=dict)  # model -> one bar per group
    chance: float | None = None
    y_label: str = "accuracy (%)"


@dataclass
class LineChart:
    title: str
    series: dict[str, list[tuple[float, float]]] = field(default_factory=dict)  # name -> (x, y) points
    x_label: str = "step"
    y_label: str = ""
    percent: bool = False


def _text(x: float, y: float, s: str, anchor: str = "middle", size: int = 11, extra: str = "") -> str:
    return f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}"{extra}>{escape(s)}</text>'


def _frame(title: str, body: list[str], kind: str) -> str:
    return (
        f'<svg class="chart" data-kind="{kind}" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'width="{WIDTH}" height="{HEIGHT}" role="img" aria-label="{escape(title)}" font-family="sans-serif">'
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>'
        + _text(LEFT, 20, title, "start", 13, ' font-weight="bold"')
        + "".join(body)
        + "</svg>"
    )


def _y_label(label: str, plot_h: float) -> str:
    middle = TOP + plot_h / 2
    return _text(14, middle, label, "middle", 10, f' transform="rotate(-90 14 {middle})"')


def _nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / count
    step = 10 ** math.floor(math.log10(raw))
    step *= next(m for m in (1, 2, 2.5, 5, 10) if raw <= m * step)
    first = math.floor(lo / step) * step
    ticks, t = [], first
    while t <= hi + step * 1e-9:
        ticks.append(round(t, 10))
        t += step
    return ticks


def _legend(names: Sequence[str]) -> list[str]:
    out = []
    for i, name in enumerate(names):
        y = TOP + 10 + 18 * i
        colour = PALETTE[i % len(PALETTE)]
        out.append(f'<rect x="{WIDTH - RIGHT + 14}" y="{y - 9}" width="12" height="12" fill="{colour}"/>')
        out.append(_text(WIDTH - RIGHT + 31, y + 1, name[:22], "start", 11))
    return out


def _y_axis(ticks: list[float], to_y, fmt) -> list[str]:
    out = []
    for t in ticks:
        y = to_y(t)
        out.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e5e5e5"/>')
        out.append(_text(LEFT - 6, y + 4, fmt(t), "end", 10))
    out.append(f'<line x1="{LEFT}" x2="{LEFT}" y1="{TOP}" y2="{HEIGHT - BOTTOM}" stroke="#333"/>')
    out.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{HEIGHT - BOTTOM}" y2="{HEIGHT - BOTTOM}" stroke="#333"/>')
    return out


def bar_chart(chart: BarChart) -> str:
    """Grouped bars on 0-100%, one colour per series, whiskers for the intervals, a dashed chance line."""
    plot_h = HEIGHT - TOP - BOTTOM
    plot_w = WIDTH - LEFT - RIGHT

    def to_y(v: float) -> float:
        return HEIGHT - BOTTOM - v * plot_h

    body = _y_axis([i / 5 for i in range(6)], to_y, lambda t: f"{100 * t:.0f}")
    body.append(_y_label(chart.y_label, plot_h))
    names = list(chart.series)
    slot = plot_w / max(1, len(chart.groups))
    width = 0.8 * slot / max(1, len(names))
    for g, group in enumerate(chart.groups):
        x0 = LEFT + g * slot + 0.1 * slot
        for s, name in enumerate(names):
            bar = chart.series[name][g]
            if bar is None:
                continue
            colour = PALETTE[s % len(PALETTE)]
            x = x0 + s * width
            y = to_y(bar.value)
            tip = f"{name}, {group}: {100 * bar.value:.2f}%"
            if bar.lo is not None and bar.hi is not None:
                tip += f" [{100 * bar.lo:.1f}, {100 * bar.hi:.1f}]"
            tip += f" {bar.note}".rstrip()
            body.append(
                f'<rect class="mark" x="{x:.1f}" y="{y:.1f}" width="{max(width - 2, 1):.1f}" '
                f'height="{max(HEIGHT - BOTTOM - y, 0.5):.1f}" fill="{colour}"><title>{escape(tip)}</title></rect>'
            )
            if bar.lo is not None and bar.hi is not None:
                cx = x + (width - 2) / 2
                lo, hi = to_y(bar.lo), to_y(bar.hi)
                body.append(f'<line x1="{cx:.1f}" x2="{cx:.1f}" y1="{lo:.1f}" y2="{hi:.1f}" stroke="#222"/>')
                for yy in (lo, hi):
                    tick = f'x1="{cx - 3:.1f}" x2="{cx + 3:.1f}" y1="{yy:.1f}" y2="{yy:.1f}"'
                    body.append(f'<line {tick} stroke="#222"/>')
        label_x = LEFT + (g + 0.5) * slot
        turn = f' transform="rotate(-25 {label_x:.1f} {HEIGHT - BOTTOM + 14})"'
        body.append(_text(label_x, HEIGHT - BOTTOM + 14, group[:28], "end", 10, turn))
    if chart.chance is not None:
        y = to_y(chart.chance)
        body.append(
            f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" stroke="#888" stroke-dasharray="5,4">'
            f"<title>chance {100 * chart.chance:.0f}%</title></line>"
        )
        body.append(_text(WIDTH - RIGHT - 4, y - 4, "chance", "end", 9))
    body += _legend(names)
    return _frame(chart.title, body, "bars")


def line_chart(chart: LineChart) -> str:
    """One polyline (with point marks) per series over a shared x axis."""
    points = [p for pts in chart.series.values() for p in pts if math.isfinite(p[1])]  # NaN: a gap
    xs = [p[0] for p in points] or [0.0, 1.0]
    ys = [p[1] for p in points] or [0.0, 1.0]
    y_lo, y_hi = (0.0, 1.0) if chart.percent else (min(ys), max(ys))
    if y_hi - y_lo < 1e-9:
        y_lo, y_hi = y_lo - 0.5, y_hi + 0.5
    x_ticks = _nice_ticks(min(xs), max(xs))
    y_ticks = [i / 5 for i in range(6)] if chart.percent else _nice_ticks(y_lo, y_hi)
    x_lo, x_hi = min(x_ticks[0], min(xs)), max(x_ticks[-1], max(xs))
    y_lo, y_hi = min(y_ticks[0], y_lo), max(y_ticks[-1], y_hi)
    plot_h = HEIGHT - TOP - BOTTOM
    plot_w = WIDTH - LEFT - RIGHT

    def to_x(v: float) -> float:
        return LEFT + (v - x_lo) / ((x_hi - x_lo) or 1.0) * plot_w

    def to_y(v: float) -> float:
        return HEIGHT - BOTTOM - (v - y_lo) / ((y_hi - y_lo) or 1.0) * plot_h

    fmt = (lambda t: f"{100 * t:.0f}") if chart.percent else (lambda t: f"{t:g}")
    body = _y_axis(y_ticks, to_y, fmt)
    for t in x_ticks:
        body.append(_text(to_x(t), HEIGHT - BOTTOM + 16, f"{t:g}", "middle", 10))
    body.append(_text(LEFT + plot_w / 2, HEIGHT - BOTTOM + 36, chart.x_label, "middle", 10))
    label = chart.y_label + (" (%)" if chart.percent else "")
    body.append(_y_label(label, plot_h))
    for s, (name, pts) in enumerate(chart.series.items()):
        colour = PALETTE[s % len(PALETTE)]
        pts = [p for p in pts if math.isfinite(p[1])]
        if not pts:
            continue
        path = " ".join(f"{to_x(x):.1f},{to_y(y):.1f}" for x, y in pts)
        body.append(f'<polyline class="mark" points="{path}" fill="none" stroke="{colour}" stroke-width="1.8"/>')
        if len(pts) <= 60:  # marks for sparse series (evaluations); a loss curve is just its line
            for x, y in pts:
                value = f"{100 * y:.2f}%" if chart.percent else f"{y:.4g}"
                body.append(
                    f'<circle cx="{to_x(x):.1f}" cy="{to_y(y):.1f}" r="3" fill="{colour}">'
                    f"<title>{escape(name)}, {chart.x_label} {x:g}: {value}</title></circle>"
                )
    body += _legend(list(chart.series))
    return _frame(chart.title, body, "lines")
