"""hope: Nested Learning and the Hope model (Behrouz et al., arXiv 2512.24695) in PyTorch."""

__version__ = "0.1.0"
