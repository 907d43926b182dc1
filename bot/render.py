"""Text rendering: progress bars, the classify bar chart, result captions. Pure functions.

Member text (labels, prompts) is escaped here (`bot.text`), so callers pass it as typed."""
from __future__ import annotations

from bot.text import code_text, member_text

FULL, EMPTY = "\N{BLACK SQUARE}", "\N{WHITE SQUARE}"


def progress_bar(step: int, total: int, width: int = 20) -> str:
    frac = 0.0 if total <= 0 else min(max(step / total, 0.0), 1.0)
    filled = round(frac * width)
    return f"`{'█' * filled}{'░' * (width - filled)}` {frac * 100:3.0f}% · step {step}/{total}"


def bar_chart(scores: list[tuple[str, float]], width: int = 20) -> str:
    """Ranked labels with probabilities as a monospace bar chart (best first)."""
    rows = [(code_text(name, 30), p) for name, p in sorted(scores, key=lambda row: -row[1])]
    name_w = max((len(n) for n, _ in rows), default=0)
    lines = []
    for name, p in rows:
        bar = "█" * round(max(p, 0.0) * width)
        lines.append(f"{name:<{name_w}} {bar:<{width}} {p * 100:5.1f}%")
    return "```\n" + "\n".join(lines) + "\n```"


def imagine_caption(prompt: str, user: int, seed=None, steps=None, size=None, status: str = "") -> str:
    bits = [f"**{member_text(prompt, 400)}** — <@{user}>"]
    meta = []
    if seed is not None:
        meta.append(f"seed `{seed}`")
    if steps:
        meta.append(f"steps `{steps}`")
    if size:
        meta.append(f"size `{size}`")
    if meta:
        bits.append(" · ".join(meta))
    if status:
        bits.append(status)
    return "\n".join(bits)
