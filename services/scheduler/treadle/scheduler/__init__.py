"""The Treadle scheduler: a grpc.aio service that stores tasks in PostgreSQL and runs them.

Handlers are registered in a user's module with `task` (the same decorator as
`treadle.tasks.task`, which a new app imports from there; see
docs/python-api.md):

    from treadle.scheduler import task

    @task("email.send", queue="email")
    async def send(payload):
        ...
"""

from treadle.scheduler.registry import Permanent, task

__all__ = ["Permanent", "task"]
