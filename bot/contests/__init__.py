"""Contests: a themed /imagine round in a thread, anonymous entries, fair votes, one ranking.

Discord-free: `rules` (what a member may ask), `store` (the contest in Redis: one per channel,
entries, votes, the close claimed exactly once), `ranking`, `closer` (the close, step by step),
`render` (the texts). The cog only translates Discord events into these calls.
"""
