"""Scoring trained models: a model loaded for inference from wherever it is, HellaSwag."""
