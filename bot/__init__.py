"""clipbot's Discord front end: validates commands, queues jobs, shows their events as messages."""
