"""`python -m mlplatform.local.node --state-dir DIR`: run the local node agent of a cluster."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from mlplatform.local.config import load_config
from mlplatform.local.node.agent import _main


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m mlplatform.local.node")
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("kubernetes_asyncio").setLevel(logging.WARNING)
    config = load_config(args.state_dir)
    if config is None:
        sys.exit(f"no local cluster in {args.state_dir}")
    asyncio.run(_main(config))


if __name__ == "__main__":
    main()
