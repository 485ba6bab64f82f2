"""ingestion-job command line."""

from __future__ import annotations

import argparse


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="ingestion-job", description="One probe-and-repair run of an IngestionSchedule.")
    p.add_subparsers(dest="command")
    p.parse_args(argv)
    p.print_help()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
