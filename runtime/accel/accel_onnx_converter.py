"""``AccelOnnxConverter``: a registered TensorFlow SavedModel -> a registered ``.accel`` package.

    request = AccelOnnxConverter.convert_tf_model(ws, registered_model, input_tensors, output_tensors)
    request.wait_for_completion(show_output=True)        # runs the conversion (once)
    converted_model = request.result                     # Model, kind "accel"

The conversion loads the SavedModel into a fresh TF1 graph, freezes it at ``output_tensors``,
converts it with ``compiler.tf_import.frozen_graph_to_onnx`` (which splits JPEG decoding and
normalisation off as host preprocessing), compiles it with ``compiler.compile_model`` and writes
it with ``runtime.save_package``; the package is then registered as the next version of
``NAME`` (default: the source model's name + ".accel"). The package's string input and its
outputs carry exactly the tensor names given (``Placeholder:0``, ``.../Softmax:0``), which are the
names a client scores with.

``preset``: the EngineConfig preset, default "a10": of the presets it is the one the functional
simulator (which serves the package) runs fastest, about 0.2 s per image for the full ResNet-50
at 224 x 224, fast enough for a web service; "s10" models a faster engine but simulates about 1.2x
slower, and "tiny" cannot hold the full network (``tests/bench/bench_workflow.py``).
"""

from __future__ import annotations

import json
import shutil
import traceback
from dataclasses import dataclass, field

from accelml.hdl.errors import AccelmlError, ModelFormatError, WorkspaceError

DEFAULT_PRESET = "a10"

__all__ = ["AccelOnnxConverter", "ConversionRequest", "DEFAULT_PRESET", "convert_saved_model"]


def _names(tensors) -> list[str]:
    items = [tensors] if isinstance(tensors, str) else list(tensors)
    return [t if ":" in t else f"{t}:0" for t in items]


def _rename(model, old: str, new: str) -> None:
    """Rename tensor ``old`` to ``new`` everywhere in an ONNX graph."""
    g = model.graph
    for vi in list(g.input) + list(g.output) + list(g.value_info):
        if vi.name == old:
            vi.name = new
    for node in g.node:
        for seq in (node.input, node.output):
            for i, name in enumerate(seq):
                if name == old:
                    seq[i] = new


def freeze_saved_model(path, inputs: list[str], outputs: list[str]):
    """Load a SavedModel (tag "serve") in a fresh graph and freeze it at ``outputs``."""
    import tensorflow.compat.v1 as tf

    g = tf.Graph()
    with g.as_default(), tf.Session(graph=g) as sess:
        try:
            tf.saved_model.loader.load(sess, ["serve"], str(path))
        except Exception as e:  # TensorFlow raises many types for unreadable SavedModels
            raise ModelFormatError(f"TensorFlow cannot load the SavedModel: {str(e).splitlines()[0]}",
                                   source=str(path)) from None
        for t in inputs + outputs:
            try:
                g.get_tensor_by_name(t)
            except (KeyError, ValueError):
                raise ModelFormatError(f"the SavedModel has no tensor {t!r}", source=str(path)) from None
        heads = [o.rsplit(":", 1)[0] for o in outputs]
        return tf.graph_util.convert_variables_to_constants(sess, g.as_graph_def(), heads)


def convert_saved_model(path, input_tensors, output_tensors, preset: str = DEFAULT_PRESET, name: str | None = None,
                        step=lambda text: None):
    """SavedModel directory -> CompiledModel whose input / outputs carry the given tensor names."""
    from accelml.compiler.driver import compile_model
    from accelml.compiler.tf_import import PREPROCESS_KEY, frozen_graph_to_onnx

    ins, outs = _names(input_tensors), _names(output_tensors)
    if len(ins) != 1:
        raise ModelFormatError(f"one input tensor expected, got {ins}", source=str(path))
    step("freezing the TensorFlow graph")
    graph_def = freeze_saved_model(path, ins, outs)
    step("converting to ONNX (host preprocessing split off)")
    model = frozen_graph_to_onnx(graph_def, ins, outs)
    for o in outs:
        _rename(model, o[:-2] if o.endswith(":0") else o, o)
    pre = next((p for p in model.metadata_props if p.key == PREPROCESS_KEY), None)
    if pre is not None:
        spec = json.loads(pre.value)
        spec["input"] = ins[0]
        pre.value = json.dumps(spec)
    else:
        _rename(model, ins[0][:-2] if ins[0].endswith(":0") else ins[0], ins[0])
    step(f"compiling for the {preset} engine")
    return compile_model(model, config=preset, name=name)


@dataclass
class ConversionRequest:
    """A conversion of one registered model; runs in ``wait_for_completion``."""

    workspace: object
    source_model: object
    input_tensors: object
    output_tensors: object
    preset: str = DEFAULT_PRESET
    name: str | None = None
    state: str = "NotStarted"  # NotStarted | Running | Succeeded | Failed
    error: str | None = None
    report: str | None = None
    _result: object = field(default=None, repr=False)
    _exc: BaseException | None = field(default=None, repr=False)

    def wait_for_completion(self, show_output: bool = False) -> None:
        """Run the conversion (once). A failure raises its typed error; with ``show_output`` the
        steps and the compile report are printed."""
        if self.state == "Succeeded":
            return
        if self.state == "Failed" and self._exc is not None:
            if show_output:
                print(self.error)
            raise self._exc
        from rich.console import Console

        console = Console(stderr=True, quiet=not show_output)
        self.state = "Running"
        try:
            with console.status("converting") as status:
                self._result = self._run(lambda text: (status.update(text), console.log(text)))
        except AccelmlError as e:
            self.state, self.error, self._exc = "Failed", f"{type(e).__name__}: {e}", e
            raise
        except Exception as e:
            self.state, self.error = "Failed", traceback.format_exc()
            self._exc = ModelFormatError(f"conversion failed: {type(e).__name__}: {e}",
                                         source=self.source_model.id)
            raise self._exc from None
        self.state = "Succeeded"
        if show_output:
            print(self.report)

    def _run(self, step):
        from accelml.core.model import Model
        from accelml.runtime import save_package

        src = self.source_model
        if src.kind != "tensorflow":
            raise WorkspaceError(f"model {src.id} is not a TensorFlow SavedModel (kind {src.kind!r}); "
                                 "convert_tf_model converts SavedModels")
        name = self.name or f"{src.name}.accel"
        cm = convert_saved_model(src.path, self.input_tensors, self.output_tensors, self.preset, name=src.name,
                                 step=step)
        self.report = cm.report()
        store = self.workspace.registry.store
        tmp = store.new_temporary()
        try:
            step("writing the package")
            pkg = save_package(cm, tmp / "model.accel")
            props = {"source_model": src.id, "input_tensors": json.dumps(_names(self.input_tensors)),
                     "output_tensors": json.dumps(_names(self.output_tensors)), "preset": self.preset,
                     "engine_config_hash": cm.cfg.hash}
            step(f"registering {name}")
            return Model._commit(self.workspace, name, "accel", dict(src.tags), props,
                                 f"{src.name} version {src.version} compiled for {self.preset}",
                                 lambda: store.put_tree(pkg))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    @property
    def result(self):
        """The converted, registered model (runs the conversion if it has not run)."""
        if self.state != "Succeeded":
            self.wait_for_completion(show_output=False)
        return self._result


class AccelOnnxConverter:
    """Converts registered TensorFlow models to registered accelerator packages."""

    @staticmethod
    def convert_tf_model(workspace, source_model, input_node, outputs_nodes, preset: str = DEFAULT_PRESET,
                         name: str | None = None, **_ignored) -> ConversionRequest:
        return ConversionRequest(workspace, source_model, input_node, outputs_nodes, preset=preset, name=name)
