"""Moved to `repedit.probing` (shared by edits and verify); re-exported here."""

from repedit.probing import (
           TIE,
           correct,
           logistic_group_loo,
           mlp_group_loo,
           naive_ridge_group_loo,
           per_group_accuracy,
           proba_accuracy,
           ridge_group_loo,
           shuffled_within_groups,
           standardise,
           zscore_stats,
)

__all__ = ["TIE", "correct", "logistic_group_loo", "mlp_group_loo", "naive_ridge_group_loo",
           "per_group_accuracy", "proba_accuracy", "ridge_group_loo", "shuffled_within_groups", "standardise",
           "zscore_stats"]
