"""Custom kernels (Triton, optional) with torch references."""

from ._autotune import force as force_cpu_search
from .topk import topk_scores, topk_scores_reference

__all__ = ["force_cpu_search", "topk_scores", "topk_scores_reference"]
