"""elmo-pipeline: pretrain ELMo biLMs with Lightning and transfer them to downstream tasks."""

__version__ = "0.1.0"
