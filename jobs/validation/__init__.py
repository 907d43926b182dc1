"""Checks of what members send (images, labels, prompts), shared by the bot and the worker.

The bot runs them before anything is queued, so a bad upload gets its reason at once; the worker
runs them again on what it dequeues, since the queue is not trusted. Torch-free on purpose: the bot
never imports torch. Every check raises `JobError` with a message fit to show the member.
"""
from __future__ import annotations


class JobError(Exception):
    """A failure the user caused or can act on (bad image, bad prompt, over a limit).

    Its message is shown to the user as is, so it must say what was wrong and what to do.
    The job fails at once; it is not retried on another worker.
    """
