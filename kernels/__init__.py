"""Custom kernels (Triton, optional) with torch references."""

from .topk import topk_scores, topk_scores_reference

__all__ = ["topk_scores", "topk_scores_reference"]
