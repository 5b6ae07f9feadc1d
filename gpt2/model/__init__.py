"""The model: GPT-2 itself (gpt.py, which imports only torch) and Hugging Face GPT-2 weights in and out."""
