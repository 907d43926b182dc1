"""One cog per feature. Handlers stay thin: checks in bot.limits, queueing in bot.app, how results look in a renderer each cog registers with bot.dispatcher."""
