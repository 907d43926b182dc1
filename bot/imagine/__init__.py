"""What /imagine shows in Discord: its buttons (`buttons`) and its one channel message per generation (`messages`).

The command itself is the cog `bot.cogs.imagine`, which registers `messages.ImagineMessages` as
the renderer of imagine jobs.
"""
