"""One cog per feature. Handlers stay thin: checks in bot.limits, queueing in bot.app."""
