"""Multimodal-LLM models on native transformers checkpoints: zero-shot, DeQA-Score, DepictQA.

``mllm_zeroshot`` (zeroshot.py), ``deqa`` (deqa.py) and ``depictqa_compare`` (depictqa.py) are
registered when ``agiqa.models.MODELS`` first looks them up.
"""
