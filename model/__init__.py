"""MIDOG mitosis detector: P4-equivariant ResNet applied densely, two-policy agreement ensemble.

The inference path (`model.plain`, `model.dense`, `model.candidates`, `model.inference`, `model.bundle`) depends on
torch, numpy and scikit-image only. `model.p4resnet` (training-time network) needs e2cnn and is imported lazily.
"""
