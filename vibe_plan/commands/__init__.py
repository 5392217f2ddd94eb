"""The `vibe` commands: typed options, one library call, save, render."""
