"""Everything around the PTalker network: mesh and audio IO, metrics, rendering, checkpoints."""
