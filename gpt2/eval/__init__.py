"""Scoring trained models: a model loaded for inference from wherever it is. (HellaSwag's scorer is
gpt2/train/hellaswag.py, as training scores it too.)"""
