"""nn.Modules built on hope.ops: mixers, channel memories, norms, convolutions."""
