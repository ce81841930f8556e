#!/usr/bin/env python3
"""Rewrites the `--help` blocks in Docs/cli.md from the built binary.

Each block sits under a marker line `<!-- help: rowcast COMMAND -->` followed by a fenced
code block; the test suite (RowcastCLITests) fails when a block and the binary's
`--help` disagree. Run after changing a command: scripts/cli-reference.py
"""
import os
import re
import subprocess
import sys

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
binary = os.environ.get("ROWCAST_BIN", os.path.join(root, ".build/debug/rowcast"))
path = os.path.join(root, "Docs/cli.md")
text = open(path, encoding="utf-8").read()
marker = re.compile(r"(<!-- help: rowcast([a-z ]*) -->\n)```text\n.*?```\n", re.S)


def help_text(command):
    env = dict(os.environ, COLUMNS="100")
    args = [binary] + (command.split() if command else []) + ["--help"]
    return subprocess.run(args, capture_output=True, text=True, env=env, check=True).stdout


def replace(match):
    return match.group(1) + "```text\n" + help_text(match.group(2).strip()) + "```\n"


updated = marker.sub(replace, text)
if updated != text:
    open(path, "w", encoding="utf-8").write(updated)
    print("updated Docs/cli.md", file=sys.stderr)
