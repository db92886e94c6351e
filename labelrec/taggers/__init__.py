"""The taggers that vote beside the neural tagger, each behind one interface (``Tagger``: fit,
score, save, load), combined by ``labelrec.fusion``.

* ``tfidf``, ``neighbours.TfidfNeighbours``: tags of the nearest training products (TF-IDF);
* ``embedding``, ``neighbours.EmbeddingNeighbours``: the same in the neural tagger's embedding
  space;
* ``span``, ``span.SpanTagger``: spans of the title that are tags, also tags never seen;
* ``generator``, ``generator.TagGenerator``: tags written by a LoRA-tuned decoder LLM.

The neural tagger itself (``labelrec.model``) is the model a directory is built around; its
scores and pooled embeddings are the fusion's first input.
"""

from labelrec.taggers.base import Evidence, Tagger, TrainingSet

__all__ = ["Evidence", "Tagger", "TrainingSet"]
