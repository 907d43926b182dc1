"""clipbot's Discord front end: validates commands, queues jobs, delivers events as messages."""
