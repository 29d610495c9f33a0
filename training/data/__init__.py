"""Data: the MIDOG-format reader, the real offline data, the synthetic and composite datasets, the split and the
training sources (positives, negative sites, validation regions) the recipe samples from."""
