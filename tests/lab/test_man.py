"""man/pulse.8 and man/lvs.cf.5: they render without a warning and document every option and every key."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pyrhfos.config.keys import KEYS

ROOT = Path(__file__).resolve().parents[2]
PULSE_8 = ROOT / "man" / "pulse.8"
LVS_CF_5 = ROOT / "man" / "lvs.cf.5"
PAGES = [PULSE_8, LVS_CF_5]

# The lvs.cf.5 heading under which each KEYS section is documented (one .TP entry per key).
KEY_HEADINGS = {
    "global": "GLOBAL SETTINGS",
    "failover": "FAILOVER BLOCKS",
    "virtual": "VIRTUAL BLOCKS",
    "server": "Server blocks",
}


def render_command(page: Path) -> list[str] | None:
    """A command that formats ``page`` with every warning on stderr, or None without groff or man."""
    if shutil.which("groff"):
        return ["groff", "-man", "-Tutf8", "-ww", "-z", str(page)]
    if shutil.which("man"):
        return ["man", "--warnings=all", "-l", str(page)]
    return None


def plain(roff: str) -> str:
    """Roff source as words: comments dropped, ``\\-`` as ``-``, font and special-character escapes gone."""
    text = "\n".join(line for line in roff.splitlines() if not line.startswith(('.\\"', "'\\\"")))
    text = re.sub(r"\\f(\[[^]]*\]|\(..|.)", "", text)
    text = re.sub(r"\\\(..", " ", text)
    text = text.replace("\\-", "-").replace("\\&", "").replace("\\e", "\\")
    return text


def sections(roff: str) -> dict[str, str]:
    """Each .SH and .SS heading of a page and the source text under it, up to the next heading."""
    out: dict[str, str] = {}
    current = ""
    for line in roff.splitlines():
        m = re.match(r'\.S[HS]\s+"?([^"]*)"?\s*$', line)
        if m:
            current = m.group(1).strip()
            out.setdefault(current, "")
        else:
            out[current] = out.get(current, "") + line + "\n"
    return out


def tags(roff: str) -> list[str]:
    """The tag line of every .TP entry (the line after it), as plain words."""
    lines = roff.splitlines()
    return [
        plain(re.sub(r"^\.(BR|BI|IR|RB|B|I)\s+", "", lines[i + 1])).replace('"', " ")
        for i, line in enumerate(lines[:-1])
        if line.startswith(".TP")
    ]


def mentions(text: str, word: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(word)}(?![\w-])", text) is not None


def long_options(argv: list[str]) -> set[str]:
    help_text = subprocess.run(
        [sys.executable, "-m", "pyrhfos.cli", *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    return set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", help_text))


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_page_renders_without_warnings(page: Path) -> None:
    cmd = render_command(page)
    if cmd is None:
        pytest.skip("neither groff nor man is installed: cannot render the man pages")
    env = dict(os.environ, MANWIDTH="80", MANPAGER="cat", PAGER="cat")
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stderr == "", f"{' '.join(cmd)} warned:\n{result.stderr}"


def test_pulse_8_documents_every_daemon_option() -> None:
    options = long_options(["--help"])
    assert {"--configfile", "--check", "--forceactive", "--command-timeout"} <= options, options
    text = plain(PULSE_8.read_text())
    missing = sorted(o for o in options if not mentions(text, o))
    assert not missing, f"pulse --help options missing from {PULSE_8.name}: {missing}"


def test_pulse_8_gives_every_option_an_entry() -> None:
    heads = sections(PULSE_8.read_text())
    entries = " | ".join(tags(heads["OPTIONS"]) + tags(heads["CONTROL COMMANDS"]) + tags(heads["pulse sync"]))
    options = long_options(["--help"]) | long_options(["status", "--help"]) | long_options(["sync", "--help"])
    assert {"--json", "--remote-file", "--ssh-option"} <= options
    missing = sorted(o for o in options if not mentions(entries, o))
    assert not missing, f"options without a .TP entry in OPTIONS or CONTROL COMMANDS: {missing}"


def test_pulse_8_has_the_classic_sections() -> None:
    heads = sections(PULSE_8.read_text())
    for name in (
        "NAME",
        "SYNOPSIS",
        "DESCRIPTION",
        "OPTIONS",
        "SIGNALS",
        "FILES",
        "EXIT STATUS",
        "LOGGING",
        "EXAMPLES",
        "COMPATIBILITY",
        "SEE ALSO",
    ):
        assert name in heads, name
    assert "lvs.cf" in plain(heads["SEE ALSO"])


def test_lvs_cf_5_documents_every_key_in_its_section() -> None:
    roff = LVS_CF_5.read_text()
    text = plain(roff)
    names = {k.name for k in KEYS}
    missing = sorted(n for n in names if not mentions(text, n))
    assert not missing, f"lvs.cf keys missing from {LVS_CF_5.name}: {missing}"
    heads = sections(roff)
    for key in KEYS:
        heading = KEY_HEADINGS[key.section]
        entries = {tag.split()[0] for tag in tags(heads[heading]) if tag.split()}
        assert key.name in entries, f"{key.section} key {key.name!r} has no entry under {heading}"


def test_lvs_cf_5_example_is_a_valid_file(tmp_path: Path) -> None:
    from pyrhfos.config import load

    example = sections(LVS_CF_5.read_text())["EXAMPLE"]
    body = example.split(".nf\n", 1)[1].split(".fi\n", 1)[0]
    path = tmp_path / "lvs.cf"
    path.write_text(body.replace("\\e", "\\"))
    cfg, warnings = load(str(path))
    assert cfg.failovers and not warnings
