"""Services: records, manifests and dependencies (always), and with the real server: a local
replica that is health-checked, scored with PredictionClient, keyed, and stopped; SIGKILL in the
middle of a deployment."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import yaml

from accelml.accel import AccelContainerImage, AccelOnnxConverter
from accelml.core import AksCompute, ComputeTarget, Image, LocalCompute, Model, Webservice, Workspace
from accelml.core.webservice import AksWebservice
from accelml.hdl.errors import DependencyError, WorkspaceError
from accelml.runtime.workspace import local

needs_server = pytest.mark.skipif(not local.server_available(),
                                  reason="needs the server (accelml serve, runtime.client)")


@pytest.fixture
def image(workspace, saved_model):
    path, inp, out = saved_model
    src = Model.register(workspace, path, "resnet50")
    req = AccelOnnxConverter.convert_tf_model(workspace, src, inp, out)
    req.wait_for_completion()
    return Image.create(workspace, "resnet50-image", [req.result], AccelContainerImage.image_configuration())


@pytest.fixture
def stop_all(workspace):
    yield
    services = workspace.path / "services"
    for d in services.iterdir() if services.exists() else []:
        local.stop(d)


def test_service_records_manifests_and_dependencies(workspace, image, stop_all):
    aks = ComputeTarget.create(workspace, "my-aks", AksCompute.provisioning_configuration())
    cfg = AksWebservice.deploy_configuration(autoscale_enabled=True, autoscale_max_replicas=4, auth_enabled=True)
    svc = Webservice.deploy_from_image(workspace=workspace, name="svc", image=image, deployment_config=cfg,
                                       deployment_target=aks)
    files = sorted(p.name for p in (workspace.path / "kubernetes" / "my-aks" / "svc").iterdir())
    assert files == ["deployment.yaml", "hpa.yaml", "inferenceservice.yaml", "service.yaml"]
    hpa = yaml.safe_load((workspace.path / "kubernetes" / "my-aks" / "svc" / "hpa.yaml").read_text())
    assert hpa["spec"]["maxReplicas"] == 4
    assert [s.name for s in Webservice.list(workspace)] == ["svc"] and svc.auth_enabled
    primary, secondary = svc.get_keys()
    assert primary != secondary and len(primary) >= 32
    assert oct(os.stat(svc.service_dir / local.KEYS).st_mode & 0o777) == "0o600"
    svc.regen_key("Secondary")
    assert svc.get_keys()[0] == primary and svc.get_keys()[1] != secondary
    with pytest.raises(WorkspaceError, match="already exists"):
        Webservice.deploy_from_image(workspace, "svc", image, cfg, aks)
    with pytest.raises(DependencyError, match="image resnet50-image:1 is used by service svc"):
        image.delete()
    with pytest.raises(DependencyError, match="compute target 'my-aks' runs service svc"):
        aks.delete()
    with pytest.raises(DependencyError, match="used by image resnet50-image"):
        image.models[0].delete()
    # a record whose deployer died before it started the replica reads as Failed and deletes cleanly
    local.stop(svc.service_dir)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    with workspace.registry.transaction() as db:
        db.execute("UPDATE services SET runtime=? WHERE name='svc'", (f'{{"deployer": {int(dead.stdout)}}}',))
    assert Webservice(workspace, "svc").state == "Failed"
    svc.delete()
    assert Webservice.list(workspace) == [] and not svc.service_dir.exists()
    assert local.servers_in(svc.service_dir) == []
    aks.delete()
    image.delete()
    with pytest.raises(WorkspaceError, match="service 'svc' does not exist"):
        Webservice(workspace, "svc")


def test_service_lifecycle_against_a_stand_in(workspace, image, stand_in, monkeypatch, stop_all):
    """deploy -> wait_for_deployment -> Healthy -> keys -> stale PID -> delete, with a stand-in
    that keeps the server's start-up contract (conftest.STAND_IN) in place of accelml serve."""
    start = local.start
    monkeypatch.setattr(local, "start", lambda *a, **k: start(*a, program=stand_in, **k))
    target = ComputeTarget.create(workspace, "here", LocalCompute.provisioning_configuration())
    svc = Webservice.deploy_from_image(workspace, "svc", image, AksWebservice.deploy_configuration(), target)
    assert svc.state == "Transitioning" and svc.scoring_uri is None
    svc.wait_for_deployment(show_output=False)
    again = Webservice(workspace, "svc")
    assert again.state == "Healthy" and again.scoring_uri == f"http://127.0.0.1:{again.runtime['grpc_port']}"
    assert local.healthy(again.runtime["grpc_port"]) and again.rest_uri.endswith(str(again.runtime["rest_port"]))
    assert not (workspace.path / "kubernetes").exists()  # a local target writes no manifests
    os.killpg(os.getpgid(again.runtime["pid"]), signal.SIGKILL)
    deadline = time.monotonic() + 10
    while Webservice(workspace, "svc").state != "Unhealthy" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert Webservice(workspace, "svc").state == "Unhealthy"
    Webservice(workspace, "svc").delete()
    assert Webservice.list(workspace) == []


@needs_server
def test_local_service_scores_like_the_package(workspace, image, make_jpeg, stop_all):
    from accelml.accel import PredictionClient
    from accelml.runtime import load

    target = ComputeTarget.create(workspace, "here", LocalCompute.provisioning_configuration())
    svc = Webservice.deploy_from_image(workspace, "svc", image, AksWebservice.deploy_configuration(), target)
    assert svc.state in ("Transitioning", "Healthy")
    svc.wait_for_deployment(show_output=False)
    assert svc.state == "Healthy" and svc.scoring_uri.startswith("http://127.0.0.1:")
    port = int(svc.scoring_uri.rsplit(":", 1)[1])
    assert local.healthy(port)
    jpeg = make_jpeg(5)
    (workspace.path.parent / "x.jpg").write_bytes(jpeg)
    model = image.models[0]
    out = "classifier_1/resnet_v1_50/predictions/Softmax:0"
    client = PredictionClient(address="127.0.0.1", port=port, use_ssl=False, service_name=svc.name,
                              access_token=svc.get_keys()[0])
    got = np.asarray(list(client.score_file(path=str(workspace.path.parent / "x.jpg"), input_name="Placeholder:0",
                                            outputs=out)))
    want = load(model.path).run({"Placeholder:0": np.array([jpeg], dtype=object)})[out].reshape(-1)
    assert np.array_equal(got, want)
    old = svc.get_keys()[0]
    svc.regen_key("Primary")
    time.sleep(1.5)  # the server re-reads the key file when it changes
    stale = PredictionClient(address="127.0.0.1", port=port, use_ssl=False, service_name=svc.name, access_token=old)
    with pytest.raises(Exception, match="(?i)unauthenticated|key|auth"):
        stale.score_file(path=str(workspace.path.parent / "x.jpg"), input_name="Placeholder:0", outputs=out)
    pid = svc.runtime["pid"]
    os.killpg(os.getpgid(pid), signal.SIGKILL)  # the replica dies behind the workspace's back
    deadline = time.monotonic() + 10
    while Webservice(workspace, "svc").state != "Unhealthy" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert Webservice(workspace, "svc").state == "Unhealthy"  # stale PID detected
    Webservice(workspace, "svc").delete()
    assert Webservice.list(workspace) == []


DEPLOY = textwrap.dedent("""
    import sys
    from accelml.core import Workspace, Image, ComputeTarget, Webservice
    from accelml.core.webservice import AksWebservice
    ws = Workspace.open(sys.argv[1])
    image = Image(ws, name="resnet50-image")
    print("ready", flush=True)
    svc = Webservice.deploy_from_image(ws, "svc", image, AksWebservice.deploy_configuration(),
                                       ComputeTarget(ws, "here"))
    svc.wait_for_deployment()
    print("done", flush=True)
""")


@needs_server
@pytest.mark.parametrize("seed", range(3))
def test_kill_during_deploy(workspace, image, seed, stop_all):
    ComputeTarget.create(workspace, "here", LocalCompute.provisioning_configuration())
    proc = subprocess.Popen([sys.executable, "-c", DEPLOY, str(workspace.path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    time.sleep(float(np.random.default_rng(200 + seed).uniform(0.0, 3.0)))
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    ws = Workspace.open(workspace.path)
    assert [m.kind for m in Model.list(ws)] == ["tensorflow", "accel"]
    assert [i.id for i in Image.list(ws)] == ["resnet50-image:1"]
    ws.registry.store.verify(Image.list(ws)[0].blob)
    for svc in Webservice.list(ws):  # a record, if the kill came after it was committed: it deletes cleanly
        svc.delete()
    assert local.servers_in(ws.path / "services" / "svc") == []  # no replica survives its record
    Image(ws, name="resnet50-image").delete()
