"""Training: one optimizer loop (``hope.train.loop``) that the language-model trainer (``hope.train.lm``)
and every task run (``hope.tasks.runner``) drive, and the options of ``hope train`` (``hope.train.config``,
importable without torch).

This package imports nothing, so that ``hope.train.config`` stays free of torch.
"""
