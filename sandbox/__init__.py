"""Local stand-ins for Slack, Discord and an OpenAI-compatible LLM, and `chat-bridge sandbox`.

The tests, the sandbox and the benchmarks run against the emulators; `sandbox.runner` is the
command that shows the real bridge working on them.
"""
