"""Adapters: one package per platform (and the LLM), each translating an SDK to the core."""
