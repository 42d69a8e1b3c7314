"""A small shop: a Starlette web service that stores orders and, in the same
database transaction, enqueues typed Treadle tasks (examples/shop/README.md)."""
