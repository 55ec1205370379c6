"""A small reader of Dockerfiles for the image tests: instructions with continuation lines joined,
comments dropped (hadolint's inline `# hadolint ignore=` directives included), ARG defaults applied to FROM."""
from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional


@dataclass
class Instruction:
    keyword: str  # upper case: FROM, RUN, ...
    args: str


def parse(text: str) -> List[Instruction]:
    out: List[Instruction] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):  # a comment inside a continued instruction
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        if not full:
            continue
        keyword, _, args = full.partition(" ")
        out.append(Instruction(keyword.upper(), args.strip()))
    return out


def read(path: Path) -> List[Instruction]:
    return parse(path.read_text(encoding="utf-8"))


def arg_defaults(instructions: List[Instruction]) -> Dict[str, Optional[str]]:
    """ARG NAME=default (None when the ARG has no default)."""
    out: Dict[str, Optional[str]] = {}
    for ins in instructions:
        if ins.keyword == "ARG":
            name, eq, value = ins.args.partition("=")
            out[name.strip()] = value.strip() if eq else None
    return out


def base_images(instructions: List[Instruction]) -> List[str]:
    """Each FROM's image with ${ARG} defaults substituted."""
    args = arg_defaults(instructions)
    images = []
    for ins in instructions:
        if ins.keyword == "FROM":
            image = ins.args.split()[0]
            image = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1)) or m.group(0), image)
            images.append(image)
    return images


def image_is_pinned(image: str) -> bool:
    """An explicit tag that is not `latest` (and not an unresolved ${VAR}); a digest pin is also fine."""
    if "$" in image:
        return False
    if "@sha256:" in image:
        return re.fullmatch(r".+@sha256:[0-9a-f]{64}", image) is not None
    last = image.rsplit("/", 1)[-1]
    if ":" not in last:
        return False
    tag = last.split(":", 1)[1]
    # A version in the tag: "3.11.11-slim-bookworm", "r35.4.1"; not "latest", "slim", "stable".
    return tag != "latest" and re.search(r"\d+\.\d+", tag) is not None


def last_user(instructions: List[Instruction]) -> Optional[str]:
    users = [ins.args.split(":")[0] for ins in instructions if ins.keyword == "USER"]
    return users[-1] if users else None


def runs(instructions: List[Instruction]) -> List[str]:
    return [ins.args for ins in instructions if ins.keyword == "RUN"]


def commands(run: str) -> List[List[str]]:
    """A RUN's shell commands as word lists, split at && || ; | (quoted strings stay whole)."""
    lex = shlex.shlex(run, posix=True, punctuation_chars=";&|")
    lex.whitespace_split = True
    out: List[List[str]] = [[]]
    for token in lex:
        if token in ("&&", "||", ";", "|", ";;"):
            out.append([])
        else:
            out[-1].append(token)
    return [c for c in out if c]


def pip_installs(instructions: List[Instruction]) -> List[List[str]]:
    """The arguments of every `pip install` / `python -m pip install` in RUN instructions."""
    found = []
    for run in runs(instructions):
        for words in commands(run):
            for i in range(len(words) - 1):
                if words[i] == "pip" and words[i + 1] == "install":
                    found.append(words[i + 2:])
                    break
    return found
