"""The texts of a contest. Pure functions.

The theme is member text: it is escaped (markdown and mentions) everywhere it is shown. The
ranking reveals authors as user mentions: send it with allowed_mentions=users only (the authors
are told they placed); everything else with no mentions allowed.
"""
from __future__ import annotations

from bot.contests.ranking import Entry
from bot.contests.store import Admission, Contest, VoteOutcome
from bot.text import member_text

MEDALS = {1: "🥇", 2: "🥈", 3: "🥉"}
RANKING_LINES = 25  # the ranking message lists this many entries (Discord's 2000-character limit)


def safe(text: str) -> str:
    return member_text(text)


def entry_label(number: int) -> str:
    return f"Entry #{number}"


def thread_name(contest: Contest) -> str:
    """Thread names show no markdown and ping no one; Discord allows 100 characters."""
    name = f"Contest: {contest.theme}"
    return name if len(name) <= 100 else name[:99] + "…"


def _when(ts: float) -> str:
    return f"<t:{int(ts)}:f> (<t:{int(ts)}:R>)"


def _link(contest: Contest, message_id: int | None) -> str:
    where = contest.thread or contest.channel
    return f"https://discord.com/channels/{contest.guild}/{where}/{message_id}"


def announcement(contest: Contest, up: str = "👍", down: str = "👎") -> str:
    """The first message of the contest thread."""
    entries = "one entry" if contest.entries_limit == 1 else f"up to {contest.entries_limit} entries"
    voters = ("every member" if contest.min_member_days == 0 else
              f"members who joined at least {contest.min_member_days} day{'s' if contest.min_member_days != 1 else ''} ago")
    return (f"🏁 **Contest:** {safe(contest.theme)}\n"
            f"Closes {_when(contest.closes_at)}.\n"
            f"Enter with /imagine in this thread: {entries} per member, all at {contest.steps} steps, "
            f"{contest.width}x{contest.height}. Entries are anonymous until the close.\n"
            f"Vote with {up} / {down} on the entries: {voters}, one vote per entry, not on your own.")


def status(contest: Contest, posted: int, mine: int | None = None) -> str:
    """/contest status."""
    where = f"<#{contest.thread}>" if contest.thread else f"<#{contest.channel}>"
    if contest.is_open:
        head = f"🏁 **{safe(contest.theme)}** in {where}: open, closes {_when(contest.closes_at)}."
    else:
        head = f"🏁 **{safe(contest.theme)}** in {where}: closed."
    lines = [head, f"{posted} entr{'y' if posted == 1 else 'ies'} so far."]
    if mine is not None and contest.is_open:
        lines.append(f"You have used {mine} of your {contest.entries_limit} entr{'y' if contest.entries_limit == 1 else 'ies'}.")
    return "\n".join(lines)


def entry_caption(contest: Contest, entry_number: int) -> str:
    """An entry's post while the contest is open: no author, no seed."""
    return f"**{entry_label(entry_number)}** · {safe(contest.theme)}"


def ranking(contest: Contest, ranked: list[Entry], up: str = "👍", down: str = "👎") -> str:
    """The close: every posted entry best first, authors revealed, with votes and seeds."""
    head = f"🏁 **Contest closed:** {safe(contest.theme)}"
    if not ranked:
        return head + "\nNo entries were posted, so there is no winner this time."
    lines = [head]
    for place, e in enumerate(ranked[:RANKING_LINES], 1):
        medal = MEDALS.get(place, f"**{place}.**")
        seed = "" if e.seed is None else f" · seed `{e.seed}`"
        lines.append(f"{medal} [{entry_label(e.number)}]({_link(contest, e.message_id)}) by <@{e.author}> — "
                     f"**{e.score:+d}** ({e.up}{up} {e.down}{down}){seed}")
    if len(ranked) > RANKING_LINES:
        lines.append(f"…and {len(ranked) - RANKING_LINES} more.")
    lines.append(f"Ties go to fewer {down}, then the earlier entry.")
    return "\n".join(lines)


def hall_of_fame(contest: Contest, entry: Entry, up: str = "👍", down: str = "👎") -> str:
    """The winner's repost (an embed description, or plain text)."""
    return (f"🏆 **Contest winner:** {safe(contest.theme)}\n{entry_label(entry.number)} by <@{entry.author}> — "
            f"{entry.up}{up} {entry.down}{down} · [see the contest]({_link(contest, entry.message_id)})")


def already_running(contest: Contest) -> str:
    where = f"<#{contest.thread}>" if contest.thread else "this channel"
    return (f"A contest is already running here ({safe(contest.theme)}, in {where}, closes {_when(contest.closes_at)}). "
            "Wait for it to close, or end it with /contest end.")


def admission_refusal(contest: Contest, a: Admission) -> str | None:
    """The private answer when an /imagine in a contest thread is not admitted; None when it is."""
    if a.ok:
        return None
    if a.status == "limit":
        n = contest.entries_limit
        return (f"You have already entered this contest {a.number} time{'s' if a.number != 1 else ''}; "
                f"the limit is {n} entr{'y' if n == 1 else 'ies'} per member.")
    if a.status == "closed":
        return "This contest is closed: it takes no more entries."
    return "This contest no longer exists."


VOTE_ANSWERS = {
    "own": "You can't vote on your own entry.",
    "too_new": "Only members who joined the server at least {days} day{s} ago can vote in this contest.",
    "closed": "This contest is closed: votes are no longer counted.",
}


def vote_answer(contest: Contest | None, v: VoteOutcome) -> str | None:
    """The private note to a member whose reaction was not counted; None when nothing needs saying."""
    text = VOTE_ANSWERS.get(v.status)
    if text is None:
        return None
    days = contest.min_member_days if contest else 0
    return text.format(days=days, s="" if days == 1 else "s")
