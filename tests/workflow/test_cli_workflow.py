"""The workflow CLI: typed one-line errors with their exit codes, and the commands' output."""

from __future__ import annotations

import pytest

from accelml.hdl.errors import DependencyError, WorkspaceError
from accelml.runtime.cli import main


def run(capsys, *argv):
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_missing_config_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    rc, out, err = run(capsys, "model", "list")
    assert rc == WorkspaceError.exit_code == 13
    assert err.count("\n") == 1 and "no workspace config (.azureml/config.json)" in err


def test_workflow_commands_and_errors(tmp_path, monkeypatch, capsys, saved_model, stand_in):
    monkeypatch.chdir(tmp_path)
    assert run(capsys, "workspace", "create", "w")[0] == 0
    path, inp, out = saved_model
    rc, text, _ = run(capsys, "model", "register", str(path), "--name", "rn", "--tag", "k=v")
    assert rc == 0 and "registered rn:1 (tensorflow)" in text
    assert run(capsys, "model", "register", str(path), "--name", "rn")[0] == 0
    rc, text, _ = run(capsys, "model", "list")
    assert [ln.split("\t")[:3] for ln in text.splitlines()] == [["rn", "1", "tensorflow"], ["rn", "2", "tensorflow"]]
    rc, _, err = run(capsys, "model", "delete", "nope")
    assert rc == 13 and err.strip() == "accelml: error: model 'nope' is not registered in workspace 'w'"
    rc, _, err = run(capsys, "model", "register", str(path), "--name", "rn", "--tag", "novalue")
    assert rc == 13 and "--tag 'novalue': expected KEY=VALUE" in err
    rc, text, _ = run(capsys, "convert", "rn:1", "--input", inp, "--output", out)
    assert rc == 0 and "converted rn:1 -> rn.accel:1" in text
    rc, text, _ = run(capsys, "image", "create", "img", "--model", "rn.accel")
    assert rc == 0 and text.startswith("image img:1 at ")
    rc, _, err = run(capsys, "model", "delete", "rn.accel:1")
    assert rc == DependencyError.exit_code == 14 and "used by image img (version 1)" in err
    rc, _, err = run(capsys, "image", "delete", "img:7")
    assert rc == 13 and "image 'img' version 7 does not exist" in err
    rc, _, err = run(capsys, "service", "keys", "nosuch")
    assert rc == 13 and "service 'nosuch' does not exist" in err
    rc, _, err = run(capsys, "score", "nosuch", "x.jpg")
    assert rc == 13 and "service 'nosuch' does not exist" in err
    # services, with a stand-in keeping the server's start-up contract in place of accelml serve
    from accelml.runtime.workspace import local

    start = local.start
    monkeypatch.setattr(local, "start", lambda *a, **k: start(*a, program=stand_in, **k))
    rc, _, err = run(capsys, "service", "deploy", "svc", "--image", "img")
    assert rc == 0, err
    rc, text, _ = run(capsys, "service", "list")
    name, state, image, target, uri = text.strip().split("\t")
    assert (name, state, image, target) == ("svc", "Healthy", "img:1", "local") and uri.startswith("http://127.0.0.1:")
    rc, text, _ = run(capsys, "service", "keys", "svc")
    old = dict(ln.split("\t") for ln in text.splitlines())
    rc, text, _ = run(capsys, "service", "keys", "svc", "--regen", "primary")
    new = dict(ln.split("\t") for ln in text.splitlines())
    assert rc == 0 and new["primary"] != old["primary"] and new["secondary"] == old["secondary"]
    rc, _, err = run(capsys, "image", "delete", "img")
    assert rc == 14 and "used by service svc" in err
    assert run(capsys, "service", "delete", "svc")[0] == 0
    assert run(capsys, "image", "delete", "img")[0] == 0
    assert run(capsys, "model", "delete", "rn.accel")[0] == 0
    rc, text, _ = run(capsys, "model", "list", "--name", "rn.accel")
    assert rc == 0 and text == ""


def test_explicit_workspace_option(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    rc, _, err = run(capsys, "image", "list", "--workspace", str(tmp_path / "none"))
    assert rc == 13 and "not an accelml workspace" in err


@pytest.mark.parametrize("argv", [["model"], ["service", "frobnicate"]])
def test_usage_errors_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
