"""``hope explore``: the paper's claims as live figures, and an inspector of trained checkpoints (docs/explore.md).

- ``hope.explore.figures``: one function per chapter (1-6), each returning the numbers its figure draws.
- ``hope.explore.inspector``: what a checkpoint learns as it reads a text (chapter 7), and page handlers that
  turn bad input into a message.
- ``hope.explore.app``: the Gradio page (optional extra ``explore``); it only draws what the functions return.
"""
