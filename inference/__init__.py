"""edgelearn's inference runtime: ONNX -> IR -> kernels, behind a Predictor API."""
from __future__ import annotations

from inference.config import Config
from inference.errors import EdgelearnError
from inference.ir import Graph, Model, Node, TensorType, Value
from inference.onnx_export import model_to_proto, save_model
from inference.onnx_import import load_model
from inference.predictor import Predictor, Tensor
from inference.session import Session

__all__ = ["Config", "EdgelearnError", "Graph", "Model", "Node", "Predictor", "Session", "Tensor",
           "TensorType", "Value", "load_model", "model_to_proto", "save_model"]
