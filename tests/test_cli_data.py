import gzip
import json
import subprocess
import sys

import pytest

CLI = [sys.executable, "-m", "auden_kit.cli.main"]


def _all_commands():
    """Every command path of the CLI, read from the app itself so a new command cannot be missed."""
    import typer

    from auden_kit.cli.main import app

    out = []

    def walk(cmd, path):
        out.append((path, hasattr(cmd, "commands")))
        for name, sub in getattr(cmd, "commands", {}).items():  # groups have sub-commands
            walk(sub, path + [name])

    walk(typer.main.get_command(app), [])
    return out


COMMANDS = _all_commands()


def run(*args):
    return subprocess.run(CLI + list(args), capture_output=True, text=True)


@pytest.mark.parametrize("cmd,is_group", COMMANDS, ids=lambda c: " ".join(c) or "top" if isinstance(c, list) else "")
def test_help_has_example(cmd, is_group):
    r = run(*cmd, "--help")
    assert r.returncode == 0, r.stderr
    if not is_group:  # groups list their commands; every command shows an example
        assert "Example" in r.stdout, r.stdout


def test_info_json():
    r = run("info", "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["torchaudio_ops"] is True and info["espeak_voices"] > 50 and "k2" in info


def _write(path, cuts):
    with gzip.open(path, "wt") as f:
        for c in cuts:
            f.write(json.dumps(c) + "\n")


def test_validate_names_every_bad_cut(synth_cuts, tmp_path):
    good = [json.loads(line) for line in gzip.open(synth_cuts["dev-clean"], "rt")]
    assert run("data", "validate", str(synth_cuts["dev-clean"])).returncode == 0
    assert good[0]["supervisions"][0]["alignment"]["word"]  # the synthesized cuts carry alignments
    bad = [dict(c) for c in good[:6]]
    ali = bad[5]["supervisions"][0]["alignment"]
    bad[5]["supervisions"] = [dict(bad[5]["supervisions"][0], alignment={**ali, "phone": ali["phone"][::-1]})]
    bad[0]["recording"] = dict(bad[0]["recording"], sources=[{"type": "file", "channels": [0],
                                                            "source": str(tmp_path / "nope.flac")}])
    bad[1]["supervisions"] = [dict(bad[1]["supervisions"][0], text="  ")]
    bad[2] = dict(bad[3])  # duplicate id
    bad[4]["supervisions"] = [dict(bad[4]["supervisions"][0], start=1.0, duration=bad[4]["duration"] + 1)]
    path = tmp_path / "bad.jsonl.gz"
    _write(path, bad)
    r = run("data", "validate", str(path))
    assert r.returncode == 1
    err = r.stderr
    assert f"{bad[0]['id']}: audio file" in err and "is missing" in err
    assert f"{bad[1]['id']}: supervision" in err and "empty text" in err
    assert f"{bad[3]['id']}: duplicate cut id" in err
    assert f"{bad[4]['id']}: supervision" in err and "outside" in err
    assert f"{bad[5]['id']}: supervision" in err and "phone alignment item 1" in err and "out of order" in err
    assert "problem(s)" in err


def test_validate_recordings_and_supervisions(synth_corpus, tmp_path):
    from lhotse.recipes import prepare_librispeech

    prepare_librispeech(synth_corpus, output_dir=tmp_path, num_jobs=1, dataset_parts=["dev-clean"])
    recs = tmp_path / "librispeech_recordings_dev-clean.jsonl.gz"
    sups = tmp_path / "librispeech_supervisions_dev-clean.jsonl.gz"
    r = run("data", "validate", str(recs), str(sups))
    assert r.returncode == 0, r.stderr
    r = run("data", "stats", str(recs), str(sups))
    assert r.returncode == 0 and "speakers: 4" in r.stdout and "histogram" in r.stdout


def test_missing_manifest_is_a_clear_error(tmp_path):
    r = run("data", "stats", str(tmp_path / "none.jsonl.gz"))
    assert r.returncode == 1 and "none.jsonl.gz' does not exist" in r.stderr and "Traceback" not in r.stderr
