"""The README's "Two commands" section against deploy/setup.sh: every program the section runs is
one a fresh Debian gets from setup (a minimal system has no curl), and the README's list of what
setup installs is the script's own list. deploy/fresh-debian-check.sh runs the commands for real
in a fresh chroot; these tests catch the drift in a second."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from tests.support.paths import REPO

README = REPO / "README.md"
SETUP = REPO / "deploy" / "setup.sh"
FRESH_CHECK = REPO / "deploy" / "fresh-debian-check.sh"

# Programs on every Debian (essential packages or the shell itself), and the packages providing
# the others. A program missing from both fails the test: add its package to setup.sh.
ESSENTIAL = {"bash", "grep", "sed", "cat", "printf"}
PROVIDED_BY = {"mosquitto_sub": "mosquitto-clients", "mosquitto_pub": "mosquitto-clients",
               "curl": "curl"}  # fmt: skip


def two_commands_section() -> str:
    text = README.read_text()
    start = text.index("## Two commands")
    return text[start : text.index("\n## ", start + 1)]


def wanted_packages() -> list[str]:
    match = re.search(r"^wanted=\(([^)]*)\)", SETUP.read_text(), re.MULTILINE)
    assert match, f"no wanted=(...) package list in {SETUP}"
    return match.group(1).split()


def programs_run(section: str) -> set[str]:
    """The first word of every command (also after |, && and ;) in the section's sh blocks."""
    programs: set[str] = set()
    for block in re.findall(r"```sh\n(.*?)```", section, re.DOTALL):
        for raw in block.splitlines():
            code = re.sub(r"(^|\s)#.*", "", raw)  # a comment; not the # in 'demo/#'
            for command in re.split(r"\|\||&&|\||;", code):
                words = command.split()
                if words:
                    programs.add(words[0])
    return programs


def test_setup_installs_every_program_the_section_runs() -> None:
    wanted = set(wanted_packages())
    problems = []
    for program in sorted(programs_run(two_commands_section())):
        if program in ESSENTIAL or program.startswith((".venv/", "deploy/")):
            continue
        package = PROVIDED_BY.get(program)
        if package is None:
            problems.append(f"{program}: which package provides it? (add it to PROVIDED_BY)")
        elif package not in wanted:
            problems.append(f"{program}: package {package} is not in setup.sh's wanted list")
    assert not problems, "; ".join(problems)


def test_readme_lists_every_package_setup_installs() -> None:
    section = two_commands_section()
    # `gstreamer1.0-plugins-{base,good,bad}` in the README stands for three packages.
    named = set(re.findall(r"`([a-z0-9][a-z0-9.+-]*)`", section))
    for stem, variants in re.findall(r"`([a-z0-9.+-]+)\{([a-z0-9,]+)\}`", section):
        named.update(stem + variant for variant in variants.split(","))
    missing = [package for package in wanted_packages() if package not in named]
    assert not missing, f"README's 'Two commands' section does not list: {', '.join(missing)}"


def test_fresh_check_script_is_shellcheck_clean() -> None:
    if shutil.which("shellcheck") is None:
        pytest.fail("shellcheck is not installed: run deploy/setup.sh (package shellcheck)")
    result = subprocess.run(
        ["shellcheck", str(FRESH_CHECK)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
