"""The Slack adapter: Bolt events in, native streams or chat.update edits out."""

from adapters.slack.adapter import SlackAdapter
from adapters.slack.manifest import manifest_notes, render_manifest
from adapters.slack.surface import SlackReplySurface

__all__ = ["SlackAdapter", "SlackReplySurface", "manifest_notes", "render_manifest"]
