"""Evaluation of frozen representations: feature extraction, weighted kNN and linear probe."""

from ssl_emp.eval.features import extract_features
from ssl_emp.eval.knn import bank_limited_k, knn_accuracy, knn_predict
from ssl_emp.eval.linear import linear_probe

__all__ = ["bank_limited_k", "extract_features", "knn_accuracy", "knn_predict", "linear_probe"]
