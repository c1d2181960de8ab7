"""`python -m bridge` is the `chat-bridge` command."""

import sys

from bridge.cli import main

sys.exit(main())
