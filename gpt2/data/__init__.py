"""From text to batches: downloads, tokenizers, token sources and token files, the window loaders."""
