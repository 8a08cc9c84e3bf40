"""Moved to `repedit.pool_features` (pool features live beside capture); re-exported here."""

from repedit.pool_features import CONTEXTS, PoolFeatures, depth_key, pool_features, pool_rows

__all__ = ["CONTEXTS", "PoolFeatures", "depth_key", "pool_features", "pool_rows"]
