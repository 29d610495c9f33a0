"""Everything that makes weights: data, augmentation, training loop, threshold tuning, evaluation."""
