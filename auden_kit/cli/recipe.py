"""``auden-kit recipe``: list recipes and their stages, start a new one from egs/TEMPLATE."""

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


@app.command("new", epilog="Example: auden-kit recipe new mydata   (then follow egs/mydata/README.md)")
def new(name: str = typer.Argument(..., help="Folder name under egs/ (letters, digits, _ and -)."),
        egs: Optional[Path] = typer.Option(None, help="The egs/ folder (default: found from here).")):
    """Copy egs/TEMPLATE to egs/NAME; its README says which stage to edit for your data."""
    if not re.fullmatch(r"[A-Za-z0-9_-]+", name):
        raise UserError(f"recipe name '{name}' may only hold letters, digits, '_' and '-'")
    root = egs or find_egs()
    src, dst = root / "TEMPLATE", root / name
    if not src.is_dir():
        raise UserError(f"'{src}' is missing; cannot create a recipe")
    if dst.exists():
        raise UserError(f"'{dst}' already exists; choose another name")
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("data", "exp", "download", "*.done"))
    readme = dst / "README.md"
    readme.write_text(readme.read_text().replace("TEMPLATE", name))
    typer.echo(f"created {dst}; next: edit {dst / 'local' / 'prepare.py'} (stage 0) and read {readme}")
