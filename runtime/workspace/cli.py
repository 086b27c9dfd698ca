"""The workflow commands of the ``accelml`` CLI (registered through ``cli.COMMANDS``).

    accelml workspace create NAME [--path DIR]
    accelml model register PATH --name NAME [--tag KEY=VALUE ...] [--description TEXT]
    accelml model list [--name NAME];  accelml model delete NAME[:VERSION]
    accelml convert MODEL[:VERSION] --input TENSOR --output TENSOR [...] [--preset a10] [--name NAME]
    accelml image create NAME --model MODEL[:VERSION];  image list;  image delete NAME[:VERSION]
    accelml service deploy NAME --image IMAGE[:VERSION] [--target NAME] [--no-auth]
    accelml service list;  service keys NAME [--regen primary|secondary];  service delete NAME
    accelml score SERVICE IMAGE.jpg [--top 5]

Every command finds the workspace with ``--workspace DIR`` or the nearest
``.azureml/config.json`` (``Workspace.from_config``). Errors are the typed ones of
``accelml.hdl.errors`` (missing config, unknown name: WorkspaceError; out-of-order delete:
DependencyError), which ``cli.main`` prints as one line with their exit code.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from accelml.hdl.errors import WorkspaceError

__all__ = ["WORKFLOW_COMMANDS"]


def _ws(args):
    from accelml.core import Workspace

    if args.workspace is not None:
        return Workspace.open(args.workspace)
    return Workspace.from_config()


def _split(ref: str) -> tuple[str, int | None]:
    name, sep, version = ref.rpartition(":")
    if sep and version.isdigit():
        return name, int(version)
    return ref, None


def _model(ws, ref: str):
    from accelml.core.model import Model

    name, version = _split(ref)
    return Model(ws, name=name, version=version)


def _image(ws, ref: str):
    from accelml.core.image import Image

    name, version = _split(ref)
    return Image(ws, name=name, version=version)


def _delete(obj, what: str) -> int:
    obj.delete()
    print(f"deleted {what} {obj.id}")
    return 0


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workspace", type=Path, default=None,
                   help="workspace directory (default: the one .azureml/config.json names)")


# -- workspace -------------------------------------------------------------------------------------

def cmd_workspace_create(args) -> int:
    from accelml.core import Workspace

    ws = Workspace.create(args.name, path=args.path, exist_ok=args.exist_ok)
    cfg = ws.write_config(args.config_dir)
    print(f"workspace {ws.name} at {ws.path}; config {cfg}")
    return 0


# -- models ----------------------------------------------------------------------------------------

def _tags(specs: list[str]) -> dict[str, str]:
    out = {}
    for spec in specs:
        key, sep, value = spec.partition("=")
        if not sep or not key:
            raise WorkspaceError(f"--tag {spec!r}: expected KEY=VALUE")
        out[key] = value
    return out


def cmd_model_register(args) -> int:
    from accelml.core.model import Model

    m = Model.register(_ws(args), args.path, args.name, tags=_tags(args.tag), description=args.description)
    print(f"registered {m.id} ({m.kind})")
    return 0


def cmd_model_list(args) -> int:
    from accelml.core.model import Model

    for m in Model.list(_ws(args), name=args.name):
        tags = ",".join(f"{k}={v}" for k, v in sorted(m.tags.items()))
        print(f"{m.name}\t{m.version}\t{m.kind}\t{m.created_time}\t{tags}")
    return 0


def cmd_model_delete(args) -> int:
    return _delete(_model(_ws(args), args.model), "model")


def cmd_convert(args) -> int:
    from accelml.accel import AccelOnnxConverter

    ws = _ws(args)
    req = AccelOnnxConverter.convert_tf_model(ws, _model(ws, args.model), args.input, args.output,
                                              preset=args.preset, name=args.name)
    req.wait_for_completion(show_output=True)
    print(f"converted {req.source_model.id} -> {req.result.id}")
    return 0


# -- images ----------------------------------------------------------------------------------------

def cmd_image_create(args) -> int:
    from accelml.accel import AccelContainerImage
    from accelml.core.image import Image

    ws = _ws(args)
    image = Image.create(ws, args.name, [_model(ws, args.model)], AccelContainerImage.image_configuration())
    print(f"image {image.id} at {image.image_location}")
    return 0


def cmd_image_list(args) -> int:
    from accelml.core.image import Image

    for i in Image.list(_ws(args)):
        print(f"{i.name}\t{i.version}\t{i.creation_state}\t{','.join(m.id for m in i.models)}\t{i.image_location}")
    return 0


def cmd_image_delete(args) -> int:
    return _delete(_image(_ws(args), args.image), "image")


# -- services --------------------------------------------------------------------------------------

def cmd_service_deploy(args) -> int:
    from accelml.core.compute import ComputeTarget, LocalCompute
    from accelml.core.webservice import AksWebservice, Webservice

    ws = _ws(args)
    image = _image(ws, args.image)
    try:
        target = ComputeTarget(ws, args.target)
    except WorkspaceError:
        if args.target != "local":
            raise
        target = ComputeTarget.create(ws, "local", LocalCompute.provisioning_configuration())
    config = AksWebservice.deploy_configuration(auth_enabled=not args.no_auth)
    svc = Webservice.deploy_from_image(ws, args.name, image, config, target)
    svc.wait_for_deployment(show_output=True)
    return 0


def cmd_service_list(args) -> int:
    from accelml.core.webservice import Webservice

    for s in Webservice.list(_ws(args)):
        print(f"{s.name}\t{s.state}\t{s.image.id}\t{s.compute_name}\t{s.scoring_uri or '-'}")
    return 0


def cmd_service_keys(args) -> int:
    from accelml.core.webservice import Webservice

    svc = Webservice(_ws(args), args.name)
    if args.regen:
        svc.regen_key(args.regen)
    primary, secondary = svc.get_keys()
    print(f"primary\t{primary}\nsecondary\t{secondary}")
    return 0


def cmd_service_delete(args) -> int:
    from accelml.core.webservice import Webservice

    Webservice(_ws(args), args.name).delete()
    print(f"deleted service {args.name}")
    return 0


def cmd_score(args) -> int:
    from accelml.accel.models import imagenet_classes
    from accelml.core.webservice import Webservice

    svc = Webservice(_ws(args), args.service)
    if svc.state != "Healthy" or not svc.scoring_uri:
        raise WorkspaceError(f"service {svc.name!r} is {svc.state}, not serving")
    from accelml.accel import PredictionClient

    model = svc.image.models[0]
    inputs = json.loads(model.properties["input_tensors"])
    outputs = json.loads(model.properties["output_tensors"])
    host, _, port = svc.scoring_uri.split("//", 1)[1].partition(":")
    token = svc.get_keys()[0] if svc.auth_enabled else None
    client = PredictionClient(address=host, port=int(port), use_ssl=False, service_name=svc.name, access_token=token)
    scores = list(client.score_file(path=str(args.image), input_name=inputs[0], outputs=outputs[0]))
    labels = imagenet_classes()
    ranked = sorted(enumerate(scores), key=lambda kv: kv[1], reverse=True)[:args.top]
    for idx, score in ranked:
        label = labels[idx] if len(scores) == len(labels) else f"class {idx}"
        print(f"{score:.4f}\t{idx}\t{label}")
    return 0


# -- registration ----------------------------------------------------------------------------------

def _group(sub, name: str, help_text: str):
    p = sub.add_parser(name, help=help_text)
    inner = p.add_subparsers(dest=f"{name}_command", metavar="ACTION")
    inner.required = True
    return inner


def _register_workspace(sub, name: str) -> None:
    g = _group(sub, name, "create a workspace and its .azureml/config.json")
    p = g.add_parser("create", help="create a workspace directory and write the config naming it")
    p.add_argument("name")
    p.add_argument("--path", type=Path, default=None, help="workspace directory (default ./NAME)")
    p.add_argument("--config-dir", type=Path, default=None, help="where .azureml/config.json goes (default .)")
    p.add_argument("--exist-ok", action="store_true", help="open the workspace if it already exists")
    p.set_defaults(func=cmd_workspace_create)


def _register_model(sub, name: str) -> None:
    g = _group(sub, name, "register, list and delete models")
    p = g.add_parser("register", help="register a SavedModel directory or a file as the next version")
    p.add_argument("path", type=Path)
    p.add_argument("--name", required=True)
    p.add_argument("--tag", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--description", default=None)
    _common(p)
    p.set_defaults(func=cmd_model_register)
    p = g.add_parser("list", help="list models (every version)")
    p.add_argument("--name", default=None)
    _common(p)
    p.set_defaults(func=cmd_model_list)
    p = g.add_parser("delete", help="delete a model version (default the latest)")
    p.add_argument("model", metavar="NAME[:VERSION]")
    _common(p)
    p.set_defaults(func=cmd_model_delete)


def _register_convert(sub, name: str) -> None:
    from accelml.accel.accel_onnx_converter import DEFAULT_PRESET

    p = sub.add_parser(name, help="convert a registered TensorFlow model to a registered package")
    p.add_argument("model", metavar="MODEL[:VERSION]")
    p.add_argument("--input", required=True, help="input tensor name (e.g. Placeholder:0)")
    p.add_argument("--output", action="append", required=True, help="output tensor name (repeat for several)")
    p.add_argument("--preset", default=DEFAULT_PRESET, help=f"engine preset (default {DEFAULT_PRESET})")
    p.add_argument("--name", default=None, help="name of the converted model (default MODEL.accel)")
    _common(p)
    p.set_defaults(func=cmd_convert)


def _register_image(sub, name: str) -> None:
    g = _group(sub, name, "create, list and delete images")
    p = g.add_parser("create", help="bundle a converted model as the next version of an image")
    p.add_argument("name")
    p.add_argument("--model", required=True, metavar="MODEL[:VERSION]")
    _common(p)
    p.set_defaults(func=cmd_image_create)
    p = g.add_parser("list", help="list images")
    _common(p)
    p.set_defaults(func=cmd_image_list)
    p = g.add_parser("delete", help="delete an image version (default the latest)")
    p.add_argument("image", metavar="NAME[:VERSION]")
    _common(p)
    p.set_defaults(func=cmd_image_delete)


def _register_service(sub, name: str) -> None:
    g = _group(sub, name, "deploy, list, key and delete services")
    p = g.add_parser("deploy", help="deploy an image on a target (default: this machine)")
    p.add_argument("name")
    p.add_argument("--image", required=True, metavar="IMAGE[:VERSION]")
    p.add_argument("--target", default="local", help="compute target (default 'local', created if missing)")
    p.add_argument("--no-auth", action="store_true", help="serve without keys")
    _common(p)
    p.set_defaults(func=cmd_service_deploy)
    p = g.add_parser("list", help="list services")
    _common(p)
    p.set_defaults(func=cmd_service_list)
    p = g.add_parser("keys", help="print (or regenerate) a service's keys")
    p.add_argument("name")
    p.add_argument("--regen", choices=["primary", "secondary"], default=None)
    _common(p)
    p.set_defaults(func=cmd_service_keys)
    p = g.add_parser("delete", help="stop and remove a service")
    p.add_argument("name")
    _common(p)
    p.set_defaults(func=cmd_service_delete)


def _register_score(sub, name: str) -> None:
    p = sub.add_parser(name, help="score a JPEG image on a service and print the top classes")
    p.add_argument("service")
    p.add_argument("image", type=Path)
    p.add_argument("--top", type=int, default=5)
    _common(p)
    p.set_defaults(func=cmd_score)


WORKFLOW_COMMANDS = {
    "workspace": _register_workspace,
    "model": _register_model,
    "convert": _register_convert,
    "image": _register_image,
    "service": _register_service,
    "score": _register_score,
}
