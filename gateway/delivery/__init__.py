"""Delivery: the one driver that takes batches to a sink, the sink contract, the retry classifier."""
