"""Treadle's GraphQL gateway: Strawberry on Starlette, served by uvicorn.

It holds no state of its own; every resolver calls a scheduler through
`treadle.client.Client`, like any other user.

    python -m treadle.gateway            # settings from TREADLE_* variables
"""
