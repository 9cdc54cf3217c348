"""Task heads: plain modules behind one small interface, chosen in YAML (``--model.head``).

A head receives the embedded inputs (the baseline token vectors, with ELMo concatenated at the
input when it is used), their masks, optionally the labels and the ELMo vectors for its output
place, and returns logits (and the loss when labels are given). Every head is built as
``Head(input_dim, labels, output_elmo_dim, **its own options)``:

    CrfTagger                 NER: BiLSTM-CRF with BIOUL constraints (Lample et al. 2016; Peters et al. 2018)
    BiattentiveClassifier     SST-5: the biattentive classification network (McCann et al. 2017)
    ESIM                      SNLI: enhanced sequential inference model (Chen et al. 2017)
"""

from __future__ import annotations

from elmo_pipeline.modules.heads.base import Head, HeadOutput
from elmo_pipeline.modules.heads.bcn import BiattentiveClassifier
from elmo_pipeline.modules.heads.esim import ESIM
from elmo_pipeline.modules.heads.tagger import CrfTagger

__all__ = ["ESIM", "BiattentiveClassifier", "CrfTagger", "Head", "HeadOutput"]
