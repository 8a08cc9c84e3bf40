"""Moved to `repedit.suites.pools` (pools are suites); re-exported here."""

from repedit.suites.pools import (
           CLASSES,
           SKIP,
           THETA_C,
           THETA_M,
           Item,
           Pool,
           PoolKey,
           ScreenReport,
           ScreenRow,
           item_ids,
           load_pool,
           pool_names,
           screen,
           screened,
           token_logprobs,
           toy_pool,
)

__all__ = ["CLASSES", "SKIP", "THETA_C", "THETA_M", "Item", "Pool", "PoolKey", "ScreenReport", "ScreenRow",
           "item_ids", "load_pool", "pool_names", "screen", "screened", "token_logprobs", "toy_pool"]
