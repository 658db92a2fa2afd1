"""Building blocks shared by the architectures of ``hope.models``: attention, SwiGLU, the gated output of the
recurrent mixers, the short convolution, norms. Built on ``hope.ops``; each mixer lives with its architecture."""
