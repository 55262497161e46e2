"""The demo job of the page ``@@zasync-demo-queue`` (``make run``, ``make
cluster``): a few seconds of work that reports its progress and returns
a result, to watch a worker run a job in the control panel."""

from __future__ import annotations

import time
from typing import Any

from AccessControl import getSecurityManager

from zasync.local import progress

#: the demo job's steps and the seconds each takes
STEPS = 5
STEP_SECONDS = 1.0


def demo_job(context: Any, steps: int = STEPS, seconds: float = STEP_SECONDS) -> str:
    """Work ``steps`` steps of ``seconds`` each in ``context`` (a Plone
    object, as plone.app.async's jobs take), reporting progress after
    each; return a line saying where and as whom it ran."""
    for step in range(1, steps + 1):
        time.sleep(seconds)  # stands for the work of a step
        progress(step, steps, f"step {step} of {steps} done")
    user = getSecurityManager().getUser().getId()
    return f"demo job done: {steps} steps in {context.absolute_url()} as {user}"
