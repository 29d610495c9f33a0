"""Validation of what the recipe makes, on whole annotated fields: a network or a bundle on the held-out fields
(`field_validation`), cross-validation by field with nested choices (`field_cv`) and its per-field counts, border
strip and bootstrap intervals (`cv_report`)."""
