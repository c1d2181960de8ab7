"""Local stand-ins for Slack, Discord and an OpenAI-compatible LLM.

The tests, the sandbox and the benchmarks run against them.
"""
