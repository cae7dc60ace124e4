#!/usr/bin/env python3
"""anonswap command line entry: `python run_pipeline.py INPUT -o OUTPUT`."""

import sys

from pipeline.cli import main

if __name__ == "__main__":
    sys.exit(main())
