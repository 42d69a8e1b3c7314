"""The shop's web service: `POST /orders` stores an order and enqueues its
receipt in one transaction, `GET /orders/{id}/receipt` waits for the
receipt's typed result.

    SHOP_DATABASE_URL=postgresql://... python -m shop.web     # 127.0.0.1:8080

The order and its task commit together or not at all: an order for an item
that is out of stock is refused after both were written, and rolls back
with no order and no task (no replica ever hears of it).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from shop.tasks import Receipt, send_receipt
from treadle.client import Client, enqueue

PRICES_CENTS = {"teapot": 2500, "cup": 700}
OUT_OF_STOCK = {"samovar"}


class OutOfStock(Exception):
    pass


def create_app(
    database_url: str,
    scheduler_address: str,
    *,
    shop_schema: str = "shop",
    treadle_schema: str | None = None,
) -> Starlette:
    """The shop on `database_url` (its orders in `shop_schema`), enqueueing
    into Treadle's tables in `treadle_schema` (default: TREADLE_DATABASE_SCHEMA,
    else `treadle`) and reading results from the scheduler at `scheduler_address`."""
    orders = f'"{shop_schema}".orders'

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        pool = await asyncpg.create_pool(database_url, min_size=1, max_size=4)
        try:
            async with pool.acquire() as conn:
                await conn.execute(
                    f'CREATE SCHEMA IF NOT EXISTS "{shop_schema}"; '
                    f"CREATE TABLE IF NOT EXISTS {orders} ("
                    "id bigserial PRIMARY KEY, email text NOT NULL, item text NOT NULL, "
                    "quantity int NOT NULL, total_cents int NOT NULL, receipt_task uuid)"
                )
            async with Client(scheduler_address) as client:
                yield {"pool": pool, "client": client}
        finally:
            await pool.close()

    async def place_order(request: Request) -> JSONResponse:
        body = await request.json()
        email, item, quantity = body.get("email"), body.get("item"), body.get("quantity", 1)
        if not isinstance(email, str) or item not in PRICES_CENTS.keys() | OUT_OF_STOCK:
            return JSONResponse({"error": "email and a known item are required"}, 400)
        if not isinstance(quantity, int) or quantity < 1:
            return JSONResponse({"error": "quantity must be a whole number from 1"}, 400)
        pool: asyncpg.Pool = request.state.pool
        try:
            async with pool.acquire() as conn, conn.transaction():
                total = PRICES_CENTS.get(item, 0) * quantity
                order_id: int = await conn.fetchval(
                    f"INSERT INTO {orders} (email, item, quantity, total_cents) "
                    "VALUES ($1, $2, $3, $4) RETURNING id",
                    email,
                    item,
                    quantity,
                    total,
                )
                queued = await enqueue(
                    conn,
                    send_receipt,
                    Receipt(order_id=order_id, email=email, total_cents=total),
                    schema=treadle_schema,
                )
                await conn.execute(
                    f"UPDATE {orders} SET receipt_task = $1 WHERE id = $2", queued.id, order_id
                )
                if item in OUT_OF_STOCK:  # found out late: everything above rolls back
                    raise OutOfStock(item)
        except OutOfStock:
            return JSONResponse({"error": f"{item} is out of stock"}, 409)
        return JSONResponse({"order": order_id, "receipt_task": queued.id}, 201)

    async def receipt(request: Request) -> JSONResponse:
        pool: asyncpg.Pool = request.state.pool
        task_id = await pool.fetchval(
            f"SELECT receipt_task FROM {orders} WHERE id = $1", int(request.path_params["id"])
        )
        if task_id is None:
            return JSONResponse({"error": "no such order"}, 404)
        handle = await send_receipt.attach(str(task_id), client=request.state.client)
        sent = await handle.wait(timeout=float(request.query_params.get("timeout", "30")))
        return JSONResponse({"order": sent.order_id, "attempt": sent.attempt})

    return Starlette(
        routes=[
            Route("/orders", place_order, methods=["POST"]),
            Route("/orders/{id:int}/receipt", receipt),
        ],
        lifespan=lifespan,
    )


def main() -> None:
    import uvicorn

    app = create_app(
        os.environ["SHOP_DATABASE_URL"],
        os.environ.get("TREADLE_SCHEDULER_ADDRESS", "127.0.0.1:50051"),
    )
    uvicorn.run(app, host="127.0.0.1", port=int(os.environ.get("SHOP_PORT", "8080")))


if __name__ == "__main__":
    main()
