"""Property-based tests (Hypothesis) of the gRPC and GraphQL edges with hostile input
(a package, so its conftest does not shadow tests/conftest.py)."""
