"""Corpus loading (``hope.data.corpus``), tokenizers (``hope.data.tokenizer``) and batching (``hope.data.dataset``).

The package imports none of them, so that the torch-free ones (corpus, tokenizer) load without torch.
"""
