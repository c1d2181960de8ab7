"""The `chat-bridge` command line: run, check, migrate, the setup helpers and the sandbox.

Heavy imports (SDKs, SQLAlchemy) happen inside the commands, through the composition root, so that
`--help` and `check` stay fast and the core stays importable without them.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from bridge import __version__
from bridge.config import ConfigError, Settings, load_settings, summary, warnings

EXIT_OK = 0
EXIT_CONFIG = 1
EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chat-bridge",
        description="Bring an OpenAI-compatible LLM into Slack threads and Discord channels.",
    )
    parser.add_argument("--version", action="version", version=f"chat-bridge {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_text: str, config_required: bool = True) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.add_argument(
            "--config",
            type=Path,
            required=config_required,
            metavar="FILE",
            help="the TOML configuration file (every key can be overridden by "
            "CHAT_BRIDGE_<SECTION>__<KEY> environment variables)",
        )
        return sub

    command("run", "Run every enabled platform adapter until SIGINT or SIGTERM.")
    command("check", "Validate the configuration and print what `run` would start.")
    command("migrate", "Create or upgrade the database schema.")
    command("slack-manifest", "Print a Slack app manifest (JSON) that matches the configuration.")
    command("discord-invite", "Print the OAuth2 URL that invites the bot with what it needs.")
    command("tools", "Connect to each [[mcp.servers]] once and list the tools it offers.")
    commands.add_parser(
        "console-password",
        help="Make the console.password_hash of a password (asked twice, or one line of stdin).",
        description="Read a password (twice at a terminal; else one line of standard input, for "
        "scripts) and print its argon2id hash, the value of console.password_hash.",
    )
    _sandbox_command(commands)
    return parser


def _sandbox_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    about = (
        "Run the real bridge offline against the bundled Slack, Discord and LLM emulators, play "
        "a short conversation on both platforms and show it live, then a summary. Needs no "
        "configuration, tokens or network."
    )
    sub = commands.add_parser(
        "sandbox", help="See the bridge work offline, against local emulators.", description=about
    )
    sub.add_argument(
        "-i",
        "--interactive",
        action="store_true",
        help="after the script, keep running: type as a Slack or Discord user (`help` lists how)",
    )
    sub.add_argument(
        "--speed",
        type=_positive_float,
        default=1.0,
        metavar="FACTOR",
        help="pace of the local model (50 tokens/s times FACTOR) and of the script (default: 1)",
    )
    sub.add_argument(
        "--llm-base-url",
        metavar="URL",
        help="use this OpenAI-compatible endpoint instead of the local scripted model",
    )
    sub.add_argument(
        "--llm-api-key",
        metavar="KEY",
        help="API key for --llm-base-url (default: $OPENAI_API_KEY, if set)",
    )
    sub.add_argument("--model", metavar="NAME", help="model name to ask for")
    sub.add_argument(
        "--timeout",
        type=_positive_float,
        metavar="SECONDS",
        help="fail when a reply takes longer (default: 60 at speed 1, 120 with --llm-base-url)",
    )


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be above 0: {text!r}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "sandbox":
        return _sandbox(args)  # builds its own settings: no --config, no environment
    if args.command == "console-password":
        return _console_password()
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"error: {problem}", file=sys.stderr)
        print(f"{len(exc.problems)} problem(s) in the configuration", file=sys.stderr)
        return EXIT_CONFIG

    if args.command == "check":
        print(f"{args.config}: ok")
        for line in summary(settings):
            print(f"  {line}")
        for warning in warnings(settings):
            print(f"warning: {warning}", file=sys.stderr)
        return EXIT_OK
    if args.command == "migrate":
        from bridge import app

        revision: str | None = asyncio.run(app.migrate_database(settings))
        print(f"database at revision {revision}")
        return EXIT_OK
    if args.command == "slack-manifest":
        from bridge import app

        manifest, notes = app.slack_manifest(settings)
        print(manifest)
        for note in notes:
            print(f"note: {note}", file=sys.stderr)
        return EXIT_OK
    if args.command == "discord-invite":
        from bridge import app

        try:
            print(app.discord_invite(settings))
        except ValueError as exc:
            print(
                f"error: {exc} (set discord.token or CHAT_BRIDGE_DISCORD__TOKEN)", file=sys.stderr
            )
            return EXIT_CONFIG
        return EXIT_OK
    if args.command == "tools":
        return _tools(settings)
    if args.command == "run":
        return _run(settings, args.config)
    raise AssertionError(args.command)  # argparse rejects unknown commands before this


def _run(settings: Settings, config: Path) -> int:
    if not settings.enabled_platforms():
        print(
            f"error: no platform is enabled in {config}: set slack.enabled or discord.enabled "
            "to true (see config.example.toml)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    from bridge import app

    code: int = asyncio.run(app.run(settings, config_path=config))
    return code


MIN_PASSWORD_LENGTH = 12


def _console_password() -> int:
    if sys.stdin.isatty():
        password = getpass.getpass("Console password: ")
        if getpass.getpass("Again: ") != password:
            print("error: the two passwords differ", file=sys.stderr)
            return EXIT_USAGE
    else:
        password = sys.stdin.readline().removesuffix("\n").removesuffix("\r")
    if len(password) < MIN_PASSWORD_LENGTH:
        print(
            f"error: the password must have at least {MIN_PASSWORD_LENGTH} characters",
            file=sys.stderr,
        )
        return EXIT_USAGE
    from bridge import app

    print(app.console_password_hash(password))
    return EXIT_OK


def _tools(settings: Settings) -> int:
    if not settings.mcp.servers:
        print("no [[mcp.servers]] in the configuration: no tools (see docs/tools.md)")
        return EXIT_OK
    from bridge import app

    lines, all_reached = asyncio.run(app.list_tools(settings))
    for line in lines:
        print(line)
    # Exit 1 when a server could not be reached: scripts and health checks can tell.
    return EXIT_OK if all_reached else EXIT_CONFIG


def _sandbox(args: argparse.Namespace) -> int:
    from sandbox.runner import SandboxOptions
    from sandbox.runner import main as run_sandbox

    api_key = args.llm_api_key
    if api_key is None and args.llm_base_url is not None:
        api_key = os.environ.get("OPENAI_API_KEY")
    options = SandboxOptions(
        interactive=args.interactive,
        speed=args.speed,
        llm_base_url=args.llm_base_url,
        llm_api_key=api_key,
        model=args.model,
        reply_timeout=args.timeout,
    )
    return run_sandbox(options)


if __name__ == "__main__":
    sys.exit(main())
