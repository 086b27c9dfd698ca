"""Workspace, models, conversion, images and compute targets (no server needed)."""

from __future__ import annotations

import json
import os
import sqlite3

import numpy as np
import pytest

from accelml.accel import AccelContainerImage, AccelOnnxConverter
from accelml.core import AksCompute, ComputeTarget, Image, LocalCompute, Model, Workspace
from accelml.hdl.errors import DependencyError, WorkspaceError


def test_config_is_found_upward_and_missing_config_is_typed(workspace, tmp_path, monkeypatch):
    sub = tmp_path / "a" / "b"
    sub.mkdir(parents=True)
    monkeypatch.chdir(sub)
    ws = Workspace.from_config()
    assert (ws.name, ws.subscription_id, ws.resource_group, ws.location) == ("ws", "sub", "rg", "here")
    assert ws.path == workspace.path
    assert Workspace.get("ws", path=workspace.path).name == "ws"
    elsewhere = tmp_path.parent / (tmp_path.name + "-empty")
    elsewhere.mkdir()
    with pytest.raises(WorkspaceError, match=r"no workspace config \(\.azureml/config\.json\)"):
        Workspace.from_config(elsewhere)
    with pytest.raises(WorkspaceError, match="holds workspace 'ws', not 'other'"):
        Workspace.get("other", path=workspace.path)


def test_create_refuses_foreign_directory(tmp_path):
    d = tmp_path / "mine"
    d.mkdir()
    (d / "notes.txt").write_text("keep me")
    with pytest.raises(WorkspaceError, match="not an accelml workspace"):
        Workspace.create("x", path=d)
    assert (d / "notes.txt").read_text() == "keep me" and sorted(os.listdir(d)) == ["notes.txt"]
    ws = Workspace.create("x", path=tmp_path / "new")
    with pytest.raises(WorkspaceError, match="already exists"):
        Workspace.create("x", path=ws.path)
    assert Workspace.create("x", path=ws.path, exist_ok=True).path == ws.path


def test_register_versions_tags_list_delete(workspace, tmp_path):
    src = tmp_path / "m"
    src.mkdir()
    (src / "weights.bin").write_bytes(b"\x01" * 100)
    m1 = Model.register(workspace, src, "net", tags={"stage": "dev"}, description="first")
    (src / "weights.bin").write_bytes(b"\x02" * 100)
    m2 = Model.register(workspace, src, "net", tags={"stage": "prod"})
    single = tmp_path / "one.onnx"
    single.write_bytes(b"onnx")
    m3 = Model.register(workspace, single, "other")
    assert (m1.version, m2.version, m3.version) == (1, 2, 1)
    assert m3.kind == "file" and (m3.path / "one.onnx").read_bytes() == b"onnx"
    assert Model(workspace, name="net").version == 2
    assert Model(workspace, name="net", version=1).description == "first"
    assert Model(workspace, id="net:1").tags == {"stage": "dev"}
    assert [m.id for m in Model.list(workspace)] == ["net:1", "net:2", "other:1"]
    assert [m.id for m in Model.list(workspace, tags=[["stage", "prod"]])] == ["net:2"]
    assert [m.id for m in Model.list(workspace, latest=True)] == ["net:2", "other:1"]
    assert (m1.path / "weights.bin").read_bytes() == b"\x01" * 100  # the stored copy is not the source
    m1.delete()
    assert not m1.path.exists() and m2.path.exists()
    with pytest.raises(WorkspaceError, match="model 'net' version 1 is not registered"):
        Model(workspace, name="net", version=1)
    with pytest.raises(WorkspaceError, match="model 'nope' is not registered"):
        Model(workspace, name="nope")
    # a version number is never reused
    assert Model.register(workspace, src, "net").version == 3


@pytest.fixture
def converted(workspace, saved_model):
    path, inp, out = saved_model
    source = Model.register(workspace=workspace, model_path=path, model_name="resnet50", tags={"area": "vision"})
    req = AccelOnnxConverter.convert_tf_model(workspace, source, inp, out)
    assert req.state == "NotStarted"
    req.wait_for_completion(show_output=False)
    return source, req.result


def test_convert_registers_a_package(workspace, converted, make_jpeg):
    from accelml.compiler.tf_import import HostPreprocess
    from accelml.runtime import load

    source, conv = converted
    assert source.kind == "tensorflow" and conv.kind == "accel"
    assert conv.name == "resnet50.accel" and conv.version == 1
    assert conv.properties["source_model"] == "resnet50:1" and conv.properties["preset"] == "a10"
    pkg = load(conv.path)
    assert pkg.outputs[0]["name"] == "classifier_1/resnet_v1_50/predictions/Softmax:0"
    pre = HostPreprocess(**{k: tuple(v) if isinstance(v, list) else v for k, v in pkg.host_preprocess.items()})
    assert pre.input == "Placeholder:0"
    probs = pkg.run({pre.output: pre(make_jpeg(1))})[pkg.outputs[0]["name"]]
    assert probs.shape == (1, 1000) and abs(float(probs.sum()) - 1.0) < 1e-3


def test_convert_refuses_bad_requests(workspace, converted, saved_model):
    source, conv = converted
    with pytest.raises(WorkspaceError, match="is not a TensorFlow SavedModel"):
        AccelOnnxConverter.convert_tf_model(workspace, conv, "x:0", "y:0").wait_for_completion()
    from accelml.hdl.errors import ModelFormatError

    req = AccelOnnxConverter.convert_tf_model(workspace, source, saved_model[1], "no/such/tensor:0")
    with pytest.raises(ModelFormatError, match="no tensor 'no/such/tensor:0'"):
        req.wait_for_completion()
    assert req.state == "Failed"
    assert [m.id for m in Model.list(workspace)] == ["resnet50:1", "resnet50.accel:1"]


def test_image_create_list_delete_and_dependencies(workspace, converted):
    source, conv = converted
    cfg = AccelContainerImage.image_configuration(tags={"team": "a"})
    with pytest.raises(WorkspaceError, match="exactly one converted"):
        Image.create(name="bad", models=[source], image_config=cfg, workspace=workspace)
    with pytest.raises(WorkspaceError, match="lowercase"):
        Image.create(name="Bad", models=[conv], image_config=cfg, workspace=workspace)
    img = Image.create(name="resnet50-image", models=[conv], image_config=cfg, workspace=workspace)
    img2 = Image.create(name="resnet50-image", models=[conv], image_config=cfg, workspace=workspace)
    assert (img.version, img2.version) == (1, 2)
    listed = Image.list(workspace=workspace)
    assert [(i.name, i.version, i.creation_state) for i in listed] == [("resnet50-image", 1, "Succeeded"),
                                                                       ("resnet50-image", 2, "Succeeded")]
    loc = listed[0].image_location
    assert sorted(os.listdir(loc)) == ["Dockerfile", "build.log", "image.json", "kubernetes", "model.accel"]
    assert listed[0].image_build_log_uri.startswith("file://") and [m.id for m in img.models] == [conv.id]
    assert Image.list(workspace, tags=[["team", "a"]]) and not Image.list(workspace, tags=["other"])
    with pytest.raises(DependencyError, match=r"model resnet50.accel:1 is used by image resnet50-image \(version 1\)"):
        conv.delete()
    source.delete()  # the converted model does not depend on its source
    img.delete()
    with pytest.raises(DependencyError, match="version 2"):
        conv.delete()
    img2.delete()
    conv.delete()
    assert Model.list(workspace) == [] and Image.list(workspace) == []
    assert workspace.registry.store.digests() == set()  # every blob released


def test_compute_targets(workspace):
    aks = ComputeTarget.create(workspace=workspace, name="my-aks",
                               provisioning_configuration=AksCompute.provisioning_configuration(
                                   vm_size="Standard_PB6s", agent_count=1, location="eastus"))
    aks.wait_for_completion(show_output=False)
    assert (aks.provisioning_state, aks.provisioning_errors) == ("Succeeded", None)
    loc = ComputeTarget.create(workspace, "here", LocalCompute.provisioning_configuration())
    assert isinstance(ComputeTarget(workspace, "my-aks"), AksCompute) and isinstance(loc, LocalCompute)
    assert sorted(workspace.compute_targets) == ["here", "my-aks"]
    with pytest.raises(WorkspaceError, match="already exists"):
        ComputeTarget.create(workspace, "here", LocalCompute.provisioning_configuration())
    aks.delete()
    with pytest.raises(WorkspaceError, match="compute target 'my-aks' does not exist"):
        ComputeTarget(workspace, "my-aks")


def test_registry_rows_only_name_complete_blobs(workspace, tmp_path):
    """A blob whose row was never committed (writer killed) is ignored, then collected."""
    src = tmp_path / "m"
    src.mkdir()
    (src / "a").write_bytes(b"a")
    m = Model.register(workspace, src, "keep")
    (tmp_path / "b").write_bytes(b"b")
    orphan = workspace.registry.store.put_tree(tmp_path / "b")  # stored, never named by a row
    assert orphan in workspace.registry.store.digests()
    assert workspace.collect_garbage() == 1
    assert workspace.registry.store.digests() == {m.blob}
    workspace.registry.store.verify(m.blob)
    db = sqlite3.connect(workspace.path / "workspace.db")
    assert db.execute("SELECT COUNT(*) FROM models").fetchone() == (1,)
    (workspace.path / "blobs" / m.blob / "a").write_bytes(b"changed")
    with pytest.raises(WorkspaceError, match="is damaged"):
        workspace.registry.store.verify(m.blob)


def test_workspace_config_file_contents(workspace, tmp_path):
    data = json.loads((tmp_path / ".azureml" / "config.json").read_text())
    assert data["workspace_name"] == "ws" and data["workspace_path"] == str(workspace.path)
    assert np.all([k in data for k in ("subscription_id", "resource_group", "location")])
