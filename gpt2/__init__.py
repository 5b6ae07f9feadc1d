"""gpt2-harness: a nanoGPT-style training harness for small GPT-2 models."""

__version__ = "0.1.0"
