"""Pure tensor functions for memory updates (no nn.Module, no config)."""
