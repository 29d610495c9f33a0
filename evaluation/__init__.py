"""Offline evaluation identical to the MIDOG 2022 and 2025 challenges' (no training import: people who never
train use it): `inputs` reads predictions and ground truth, `metrics` computes F1 / AP / FROC, `evaluate` is the CLI."""
