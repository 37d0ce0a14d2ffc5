"""op-sentinel on Azure Functions (Python v2 programming model): the triggers, wired to opsentinel.functions.

Built into a deployment zip by `op-sentinel azure package`; see docs/deploy-sentinel.md.
"""

# No `from __future__ import annotations`: the Functions worker reads these annotations as objects.
import typing
from pathlib import Path

import azure.functions as func

from opsentinel.functions import QUEUE_CONNECTION, QUEUE_NAME, SCHEDULE_EXPRESSION, AppHost

app = func.FunctionApp()
host = AppHost(Path(__file__).resolve().parent)


@app.timer_trigger(arg_name="timer", schedule=SCHEDULE_EXPRESSION, run_on_startup=False, use_monitor=True)
@app.queue_output(arg_name="fanout", queue_name=QUEUE_NAME, connection=QUEUE_CONNECTION)
async def tick(
    timer: func.TimerRequest,
    fanout: func.Out[typing.List[str]],  # noqa: UP006 - the worker accepts typing.List, not list[str]
    context: func.Context,
) -> None:
    """Every OP_SENTINEL_SCHEDULE: one bounded cycle, or (OP_SENTINEL_FANOUT) a message per account."""
    await host.tick(timer, fanout, context)


@app.queue_trigger(arg_name="message", queue_name=QUEUE_NAME, connection=QUEUE_CONNECTION)
async def work(message: func.QueueMessage, context: func.Context) -> None:
    """One bounded cycle over the account the message names."""
    await host.work(message, context)
