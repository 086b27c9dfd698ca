"""accelml.core: the workspace and what it holds (the Azure ML SDK's ``azureml.core`` API, local).

    from accelml.core import Workspace
    from accelml.core.model import Model
    from accelml.core.image import Image
    from accelml.core.compute import AksCompute, ComputeTarget
    from accelml.core.webservice import Webservice, AksWebservice

State lives in the workspace directory (``accelml.runtime.workspace``); docs/workflow.md walks
through it.
"""

from .compute import AksCompute, ComputeTarget, LocalCompute
from .image import Image
from .model import Model
from .webservice import AksWebservice, LocalWebservice, Webservice
from .workspace import Workspace

__all__ = ["Workspace", "Model", "Image", "ComputeTarget", "AksCompute", "LocalCompute", "Webservice",
           "AksWebservice", "LocalWebservice"]
