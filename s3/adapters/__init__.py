"""Adapters around the pure core: Redis, the store, the S4 client, config sources, the model runner."""
