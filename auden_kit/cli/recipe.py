"""``auden-kit recipe``: list recipes and their stages, start a new one from a template
(``egs/TEMPLATE`` for ASR, ``egs/TEMPLATE_<task>`` for other tasks)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Optional

import typer

from auden_kit.errors import UserError

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)

STAGE_RE = re.compile(r"""log\s+["']Stage\s+(\d+):\s*([^"']+)["']""")


def find_egs(start: Optional[Path] = None) -> Path:
    """The egs/ folder: from --egs, else the nearest one above the current folder, else the
    one beside the installed package (editable install)."""
    here = (start or Path.cwd()).resolve()
    for d in [here, *here.parents]:
        if (d / "egs").is_dir():
            return d / "egs"
        if d.name == "egs":
            return d
    pkg = Path(__file__).resolve().parents[2] / "egs"
    if pkg.is_dir():
        return pkg
    raise UserError("cannot find an egs/ folder; run from inside the auden-kit checkout or pass --egs")


def stages(run_sh: Path) -> list[tuple[int, str]]:
    return [(int(n), t.strip()) for n, t in STAGE_RE.findall(run_sh.read_text())]


@app.command("ls", epilog="Example: auden-kit recipe ls")
def ls(egs: Optional[Path] = typer.Option(None, help="The egs/ folder (default: found from here).")):
    """List recipes and the stage titles of each run*.sh."""
    root = egs or find_egs()
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        scripts = sorted(d.glob("run*.sh"))
        if not scripts:
            continue
        readme = d / "README.md"
        desc = readme.read_text().splitlines()[0].lstrip("# ").strip() if readme.is_file() else ""
        typer.echo(f"{d.name}: {desc}")
        for s in scripts:
            typer.echo(f"  {s.name}")
            for n, title in stages(s):
                typer.echo(f"    stage {n}: {title}")


TEMPLATE_OF = {"distill": "ssl"}  # tasks whose recipe is another task's template


@app.command("new", epilog="Example: auden-kit recipe new mydata   |   auden-kit recipe new myvoices --task voice   "
                           "|   auden-kit recipe new mytrans --task st   |   auden-kit recipe new mytalks --task tagspeech   "
                           "|   auden-kit recipe new small --task distill   "
                           "(then follow egs/NAME/README.md)")
def new(name: str = typer.Argument(..., help="Folder name under egs/ (letters, digits, _ and -)."),
        task: str = typer.Option("asr", help="asr, or a task with a template egs/TEMPLATE_<task> (voice, st, ssl, tagspeech); distill: the ssl template, "
                                  "run with --teacher DIR."),
        egs: Optional[Path] = typer.Option(None, help="The egs/ folder (default: found from here).")):
    """Copy the task's template to egs/NAME; its README says what to give it."""
    if not re.fullmatch(r"[A-Za-z0-9_-]+", name):
        raise UserError(f"recipe name '{name}' may only hold letters, digits, '_' and '-'")
    root = egs or find_egs()
    # distillation is the pretraining template with a teacher (run.sh --teacher DIR)
    template = "TEMPLATE" if task == "asr" else f"TEMPLATE_{TEMPLATE_OF.get(task, task)}"
    src, dst = root / template, root / name
    if not src.is_dir():
        have = ["asr"] * (root / "TEMPLATE").is_dir() + sorted(p.name[len("TEMPLATE_"):] for p in root.glob("TEMPLATE_*"))
        have += sorted(t for t, base in TEMPLATE_OF.items() if base in have)
        raise UserError(f"no recipe template for task '{task}' ('{src}' is missing); templates: {', '.join(have)}")
    if dst.exists():
        raise UserError(f"'{dst}' already exists; choose another name")
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("data", "exp", "download", "*.done"))
    readme = dst / "README.md"
    readme.write_text(readme.read_text().replace(template, name))
    first = dst / "local" / "prepare.py"
    nxt = f"edit {first} (stage 0) and read {readme}" if first.is_file() else f"read {readme}"
    if task == "distill":
        nxt += " (give the teacher with ./run.sh --teacher DIR)"
    typer.echo(f"created {dst}; next: {nxt}")
