"""The subcommand shell the multi-part benchmark scripts share (imported as a sibling module)."""
import argparse


def run_commands(doc: str, commands: dict) -> None:
    """Parses argv as one of `commands` ({name: (add_args, run)}) and runs it with its arguments."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    for command, (add_args, run) in commands.items():
        add_args(p := sub.add_parser(command))
        p.set_defaults(run=run)
    a = ap.parse_args()
    a.run(a)
