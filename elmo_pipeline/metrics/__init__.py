"""Task metrics (torchmetrics): span-level F1 for tagging; accuracy comes from torchmetrics itself."""

from elmo_pipeline.metrics.span_f1 import SpanF1, tags_to_spans

__all__ = ["SpanF1", "tags_to_spans"]
