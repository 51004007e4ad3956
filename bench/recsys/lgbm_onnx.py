"""Moved to trainer.lgbm_onnx (shared by the recsys bench and the search fusion); re-exported here."""

from trainer.lgbm_onnx import INPUT_NAME, ML_OPSET, OPSET, OUTPUT_NAME, booster_to_onnx

__all__ = ["INPUT_NAME", "ML_OPSET", "OPSET", "OUTPUT_NAME", "booster_to_onnx"]
